"""Control with the embedded runner under gunicorn and sentry-sdk: no Celery worker, no beat, the same guarantees.

The example project's control silo runs with ``SILO_ROUTER["RUNNER"] = "embedded"``
(``Cluster(control_runner="embedded")``): its gunicorn process delivers what it stored,
retries and sweeps. The regions are the same real processes over http.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from example_project.cluster import Cluster

from .conftest import FAST_RETRIES, UPSTREAM_LATENCY
from .helpers import (
    ASYNC_TIMEOUT,
    EU_TEAM,
    NO_SUCH_ISSUE,
    US_ORG,
    US_TEAM,
    CapturedSpan,
    ancestors,
    captured_spans,
    issue_button,
    new_payloads,
    payload_ids,
    payloads,
    processed,
    replies_to,
    wait_delivered,
    wait_until,
)
from .test_tracing import ATTEMPT, RECEIVE, REQUEST, carrying, stored_envelope, trace_id_of

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embedded-sentry-envelopes")


@pytest.fixture(scope="module")
def embedded_cluster(tmp_path_factory: pytest.TempPathFactory, capture_dir: Path) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path_factory.mktemp("embedded-cluster") / "var",
        upstream_latency=UPSTREAM_LATENCY,
        # A short lease: an attempt in flight when control is killed is handed out again
        # after DELIVERY_TIMEOUT + LEASE_MARGIN (10 + 30 s by default).
        extra_env={
            **FAST_RETRIES,
            "SILO_ROUTER_DELIVERY_TIMEOUT": "3",
            "SILO_ROUTER_LEASE_MARGIN": "1",
            "SILO_DEMO_SENTRY_CAPTURE_DIR": str(capture_dir),
        },
        control_runner="embedded",
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def test_no_worker_or_beat_runs_and_check_says_the_embedded_runner_delivers(embedded_cluster: Cluster) -> None:
    assert not {"worker", "beat"} & set(embedded_cluster.services)
    checked = embedded_cluster.manage("control", "check")
    assert checked.returncode == 0, checked.stderr
    assert "silo_router.I001" in checked.stdout + checked.stderr
    assert "embedded runner" in checked.stdout + checked.stderr


def test_a_click_is_handled_in_its_region_in_one_trace_from_the_web_process(
    embedded_cluster: Cluster, capture_dir: Path
) -> None:
    cluster = embedded_cluster
    before = payload_ids(cluster)
    sent = cluster.sender().click_button(team_id=US_TEAM, action_id="resolve_dialog", value=issue_button("acme", 1))
    assert (sent.status, sent.body) == (200, b"")
    [payload] = new_payloads(cluster, before)
    wait_delivered(cluster, [payload.id])
    assert cluster.issue_status("us", US_ORG, 1) == "resolved"
    assert processed(cluster, "us", [payload.id]) == {payload.id: "handled"}

    envelope_id, headers = stored_envelope(cluster, payload.id)
    trace_id = trace_id_of(headers)

    def whole() -> list[CapturedSpan] | None:
        spans = [span for span in captured_spans(capture_dir) if span.trace_id == trace_id]
        found = {REQUEST, ATTEMPT, RECEIVE} <= {span.op for span in spans}
        return spans if found and carrying(spans, RECEIVE, envelope_id) else None

    spans = wait_until(whole, timeout=ASYNC_TIMEOUT, what="the click's trace")
    [request] = [span for span in spans if span.op == REQUEST]
    [attempt] = carrying(spans, ATTEMPT, envelope_id)
    [receive] = carrying(spans, RECEIVE, envelope_id)
    # The attempt is made by control's web process itself, and is still the request's child.
    assert [cluster.service_of(span.pid) for span in (request, attempt, receive)] == ["control", "control", "us"]
    assert request in ancestors(attempt, spans)
    assert attempt in ancestors(receive, spans)


def test_a_region_down_is_retried_and_delivered_once_it_is_back(embedded_cluster: Cluster) -> None:
    cluster = embedded_cluster
    before = payload_ids(cluster)
    cluster.stop_service("eu")
    try:
        sent = cluster.sender().slash_command(team_id=EU_TEAM, command="/ticket")
        assert sent.status == 200
        [payload] = new_payloads(cluster, before)
        wait_until(
            lambda: payloads(cluster, [payload.id])[0].last_error or None,
            timeout=ASYNC_TIMEOUT,
            what="a failed attempt while eu is down",
        )
        assert payloads(cluster, [payload.id])[0].state in ("pending", "in_flight")
    finally:
        cluster.start_service("eu")
    wait_delivered(cluster, [payload.id])
    wait_until(lambda: replies_to(cluster, sent.response_url), timeout=ASYNC_TIMEOUT, what="eu's reply")
    assert processed(cluster, "eu", [payload.id]) == {payload.id: "handled"}


def test_control_killed_with_payloads_waiting_delivers_them_after_its_restart(embedded_cluster: Cluster) -> None:
    """The queue in memory dies with the process; the rows do not, and the restarted process sweeps them."""
    cluster = embedded_cluster
    before = payload_ids(cluster)
    cluster.stop_service("us")
    try:
        sent = [
            cluster.sender().click_button(
                team_id=US_TEAM, action_id="archive_dialog", value=issue_button("acme", NO_SUCH_ISSUE)
            )
            for _ in range(3)
        ]
        assert [each.status for each in sent] == [200, 200, 200]
        stored = new_payloads(cluster, before)
        assert len(stored) == 3
        cluster.kill_service("control")  # SIGKILL: no shutdown handler, retries queued in memory are gone
    finally:
        cluster.start_service("us")
    assert all(row.state != "delivered" for row in payloads(cluster, [p.id for p in stored]))
    cluster.start_service("control")  # no request reaches it: it resumes on its own
    wait_delivered(cluster, [p.id for p in stored])
    for each in sent:
        wait_until(lambda each=each: replies_to(cluster, each.response_url), timeout=ASYNC_TIMEOUT, what="a reply")
