"""One trace per flow across real processes, with sentry-sdk initialised as the README recommends.

The cluster runs every silo under gunicorn and Celery with ``DjangoIntegration``,
``CeleryIntegration``, the library's ``traces_sampler`` and scrubbers
(``example_project/sentry_setup.py``) and ``TRACES_SAMPLE_RATE`` 0.01, as in production.
Region us is reached over the http transport, region eu over the celery transport (its
own worker). Every process writes what sentry-sdk would send to
``SILO_DEMO_SENTRY_CAPTURE_DIR``, one file per envelope named after the process; the
tests read those files, the same bytes Sentry would get.

- A forwarded Slack click is one trace: the transactions of control's web process, its
  Celery worker and the region share one trace id, and every region span descends,
  through ``parent_span_id`` across processes, from the delivery attempt that carried
  it, which descends from control's request span.
- Integration flows are sampled at 100% while other requests to the same gunicorn
  processes are sampled at ``TRACES_SAMPLE_RATE``.
- No capability (``response_url``, ``trigger_id``, a token, a secret) is in any of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from example_project.cluster import WORKSPACES, Cluster
from example_project.fake_slack import Sent

from .conftest import FAST_RETRIES, UPSTREAM_LATENCY
from .helpers import (
    ASYNC_TIMEOUT,
    EU_TEAM,
    NO_SUCH_ISSUE,
    US_TEAM,
    CapturedSpan,
    ancestors,
    captured_spans,
    captured_transactions,
    issue_button,
    mention,
    payload_ids,
    payloads,
    replies_to,
    wait_delivered,
    wait_until,
)
from .test_no_capability_leak import SECRET_SHAPES, workspace_tokens

pytestmark = pytest.mark.e2e

SAMPLE_RATE = 0.01
REQUEST = "silo_router.control.request"
ATTEMPT = "silo_router.control.attempt"
RECEIVE = "silo_router.region.receive"
REPLY = "silo_router.region.reply"
#: Where each region's envelopes are received: us's gunicorn (http), eu's Celery worker (celery).
RECEIVER = {"us": "us", "eu": "eu-worker"}
TEAM = {"us": US_TEAM, "eu": EU_TEAM}
ORGANIZATION = {"us": "acme", "eu": "globex"}


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sentry-envelopes")


@pytest.fixture(scope="module")
def tracing_cluster(tmp_path_factory: pytest.TempPathFactory, capture_dir: Path) -> Iterator[Cluster]:
    """The example project with sentry-sdk capturing to files; us on http, eu on celery."""
    env = {
        **FAST_RETRIES,
        "SILO_DEMO_SENTRY_CAPTURE_DIR": str(capture_dir),
        "SILO_ROUTER_TRACES_SAMPLE_RATE": str(SAMPLE_RATE),
    }
    cluster = Cluster(
        tmp_path_factory.mktemp("tracing-cluster") / "var",
        upstream_latency=UPSTREAM_LATENCY,
        extra_env=env,
        region_transports={"eu": "celery"},
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def sent_requests() -> list[Sent]:
    """Every Slack request this module's tests sent (their capabilities are looked for last)."""
    return []


def stored_envelope(cluster: Cluster, payload_id: str) -> tuple[str, dict[str, str]]:
    """``(envelope id, propagation headers)`` of the envelope control stored for payload ``payload_id``."""
    [(raw,)] = cluster.control_rows("SELECT envelope FROM silo_router_control_payload WHERE id = ?", (payload_id,))
    envelope = json.loads(raw)
    return str(envelope["id"]), dict(envelope.get("trace") or {})


def trace_id_of(headers: dict[str, str]) -> str:
    """The trace id named by an envelope's propagation headers."""
    assert "sentry-trace" in headers, f"the envelope carries no sentry-trace: {headers}"
    return headers["sentry-trace"].split("-", 1)[0]


def carrying(spans: list[CapturedSpan], op: str, envelope_id: str) -> list[CapturedSpan]:
    """The spans ``op`` about envelope ``envelope_id``."""
    return [span for span in spans if span.op == op and span.data.get("silo_router.envelope_id") == envelope_id]


def wait_for_traces(capture_dir: Path, flows: dict[str, str], *, reply: bool) -> dict[str, list[CapturedSpan]]:
    """``{trace id: its spans}`` for ``flows`` (``{trace id: envelope id}``) once each is complete.

    Complete: control's request span, an attempt and the region's receive of that
    envelope, and (``reply``) a reply to Slack are captured in the trace.
    """
    wanted = {REQUEST, ATTEMPT, RECEIVE, *([REPLY] if reply else [])}

    def missing(spans: list[CapturedSpan], envelope_id: str) -> set[str]:
        absent = wanted - {span.op for span in spans}
        return absent | {op for op in (ATTEMPT, RECEIVE) if not carrying(spans, op, envelope_id)}

    def by_trace() -> dict[str, list[CapturedSpan]]:
        found: dict[str, list[CapturedSpan]] = {trace_id: [] for trace_id in flows}
        for span in captured_spans(capture_dir):
            if span.trace_id in found:
                found[span.trace_id].append(span)
        return found

    def complete() -> dict[str, list[CapturedSpan]] | None:
        found = by_trace()
        return found if all(not missing(found[trace_id], flows[trace_id]) for trace_id in flows) else None

    try:
        return wait_until(complete, timeout=ASYNC_TIMEOUT, what=f"the spans of {len(flows)} traces")
    except TimeoutError as exc:
        found = by_trace()
        gaps = {trace_id: sorted(missing(found[trace_id], flows[trace_id])) for trace_id in flows}
        raise AssertionError(f"{exc}; missing: { {t: g for t, g in gaps.items() if g} }") from None


def click(cluster: Cluster, region: str, sent_requests: list[Sent]) -> tuple[Sent, str]:
    """Click Archive on an issue that does not exist in ``region``'s workspace; ``(sent, payload id)``.

    The region's handler answers through the click's ``response_url`` ("does not exist").
    """
    before = payload_ids(cluster)
    sent = cluster.sender().click_button(
        team_id=TEAM[region], action_id="archive_dialog", value=issue_button(ORGANIZATION[region], NO_SUCH_ISSUE)
    )
    sent_requests.append(sent)
    assert (sent.status, sent.body) == (200, b"")
    [payload] = payloads(cluster, payload_ids(cluster) - before)
    assert (payload.region, payload.kind) == (region, "block_actions:archive_dialog")
    return sent, payload.id


@pytest.mark.parametrize(("region", "transport"), [("us", "http"), ("eu", "celery")])
def test_a_forwarded_click_is_one_trace_from_control_through_the_attempt_to_the_region(
    tracing_cluster: Cluster, capture_dir: Path, sent_requests: list[Sent], region: str, transport: str
) -> None:
    cluster = tracing_cluster
    assert cluster.region_transports[region] == transport
    sent, payload_id = click(cluster, region, sent_requests)
    wait_delivered(cluster, [payload_id])
    wait_until(lambda: replies_to(cluster, sent.response_url), timeout=ASYNC_TIMEOUT, what="the region's reply")
    envelope_id, headers = stored_envelope(cluster, payload_id)
    trace_id = trace_id_of(headers)

    spans = wait_for_traces(capture_dir, {trace_id: envelope_id}, reply=True)[trace_id]

    # Three processes, three transactions, one trace id.
    [request] = [span for span in spans if span.op == REQUEST]
    attempts = carrying(spans, ATTEMPT, envelope_id)
    assert len(attempts) == 1, [span.data for span in attempts]  # a region that is up takes it at the first attempt
    [attempt], [receive] = attempts, carrying(spans, RECEIVE, envelope_id)
    senders = [cluster.service_of(span.pid) for span in (request, attempt, receive)]
    assert senders == ["control", "worker", RECEIVER[region]]
    assert len({request.transaction_id, attempt.transaction_id, receive.transaction_id}) == 3

    # The region's run is the child of the attempt that carried it, and the attempt the child of the request.
    def lineage(span: CapturedSpan) -> list[tuple[str, str | None]]:
        return [(each.op, cluster.service_of(each.pid)) for each in ancestors(span, spans)]

    assert attempt in ancestors(receive, spans), f"the region's receive descends from {lineage(receive)}"
    assert request in ancestors(attempt, spans), f"the attempt descends from {lineage(attempt)}"
    assert attempt.data.get("silo_router.region") == receive.data.get("silo_router.region") == region

    # Every span the region sent in this trace (receive, handler, the after-receipt reply) descends from the attempt.
    region_spans = [span for span in spans if cluster.service_of(span.pid) == RECEIVER[region]]
    assert {REPLY, RECEIVE} <= {span.op for span in region_spans}
    orphans = [(span.op, span.description) for span in region_spans if attempt not in ancestors(span, spans)]
    assert orphans == []
    # And nothing in the trace is left hanging from a span nobody sent.
    span_ids = {span.span_id for span in spans}
    roots = [span for span in spans if span.parent_span_id is None or span.parent_span_id not in span_ids]
    assert [(span.op, cluster.service_of(span.pid)) for span in roots] == [("http.server", "control")]


def test_every_integration_flow_is_sampled(
    tracing_cluster: Cluster, capture_dir: Path, sent_requests: list[Sent]
) -> None:
    """At TRACES_SAMPLE_RATE 0.01, each of N clicks and N events for each region has its whole trace."""
    cluster = tracing_cluster
    clicks_per_region = events_per_region = 6
    flows: list[tuple[str, str]] = []  # (payload id, what)
    for region in ("us", "eu"):
        for n in range(clicks_per_region):
            _, payload_id = click(cluster, region, sent_requests)
            flows.append((payload_id, f"click {n} for {region}"))
        for n in range(events_per_region):
            before = payload_ids(cluster)
            channel = WORKSPACES[TEAM[region]].channels[0]
            sent = mention(cluster.sender(), team_id=TEAM[region], channel=channel)
            sent_requests.append(sent)
            assert sent.status == 200
            [payload] = payloads(cluster, payload_ids(cluster) - before)
            assert payload.kind == "event_callback:app_mention"
            flows.append((payload.id, f"event {n} for {region}"))
    wait_delivered(cluster, [payload_id for payload_id, _ in flows])

    traces: dict[str, str] = {}  # trace id -> envelope id
    for payload_id, what in flows:
        envelope_id, headers = stored_envelope(cluster, payload_id)
        assert "sentry-sampled=true" in headers.get("baggage", ""), (what, headers)  # decided once, carried on
        traces[trace_id_of(headers)] = envelope_id
    assert len(traces) == len(flows)  # one trace per flow, none shared

    wait_for_traces(capture_dir, traces, reply=False)  # each of them whole: request, attempt, region


def test_other_requests_are_sampled_at_the_traces_sample_rate(tracing_cluster: Cluster, capture_dir: Path) -> None:
    """Pages that are not the library's, served by the same gunicorn processes, keep TRACES_SAMPLE_RATE.

    1000 GETs of control's admin login page and 1000 of region us's health check, each
    marked by its query string. Each is a trace of its own with no parent, kept with
    probability 0.01, so the number captured is Binomial(2000, 0.01): mean 20, standard
    deviation 4.4. The test asks for 1 to 60 (0.05% to 3%): P(0) = 0.99**2000 = 1.9e-9
    and P(> 60) = 9e-14 (the binomial sum), so it fails only when the rate is not about
    1%: a sampler that kept every request (2000), a tenth of them (~200, 40 standard
    deviations out) or none fails it. Each silo's share is checked under 10% as well
    (P(>= 100 of 1000) = 8e-65).
    """
    cluster = tracing_cluster
    marker = "sampling-probe"
    per_silo = 1000
    targets = {"control": cluster.control_app_url + "/admin/login/", "us": cluster.region_url("us") + "/health/"}
    with requests.Session() as session:
        for silo, url in targets.items():
            for n in range(per_silo):
                answer = session.get(url, params={marker: f"{silo}-{n}"}, timeout=10)
                assert answer.status_code == 200, (silo, n, answer.status_code)

    # A transaction is written as its request ends; only the last request of each silo can
    # still be on its way here, which moves none of the bounds.
    captured = wait_until(lambda: probe_queries(capture_dir, marker), timeout=ASYNC_TIMEOUT, what="a sampled probe")
    sent = per_silo * len(targets)
    assert 1 <= len(captured) <= 60, f"{len(captured)} of {sent} ordinary requests captured"
    by_silo = {silo: sum(1 for query in captured if query.startswith(f"{marker}={silo}-")) for silo in targets}
    assert all(count < per_silo // 10 for count in by_silo.values()), by_silo


def probe_queries(capture_dir: Path, marker: str) -> list[str]:
    """The query strings of the captured transactions of requests marked with ``marker``."""
    found = []
    for _, event in captured_transactions(capture_dir):
        query = (event.get("request") or {}).get("query_string") or ""
        if isinstance(query, str) and query.startswith(marker + "="):
            found.append(query)
    return found


def test_no_capability_in_any_captured_envelope(
    tracing_cluster: Cluster, capture_dir: Path, sent_requests: list[Sent]
) -> None:
    """No response_url, trigger_id, token or secret of this module's flows in what sentry-sdk sent."""
    cluster = tracing_cluster
    for region in ("us", "eu"):  # flows of its own, so that this test holds when it runs alone
        sent, payload_id = click(cluster, region, sent_requests)
        wait_delivered(cluster, [payload_id])
        wait_until(lambda s=sent: replies_to(cluster, s.response_url), timeout=ASYNC_TIMEOUT, what="a reply")
    envelope_id, headers = stored_envelope(cluster, payload_id)
    wait_for_traces(capture_dir, {trace_id_of(headers): envelope_id}, reply=True)

    capabilities = [value for s in sent_requests for value in (s.response_url, s.trigger_id) if value]
    capabilities += [url.rsplit("/", 1)[1] for url in capabilities if "/response/" in url]
    secrets = [
        *capabilities,
        *workspace_tokens(cluster),
        cluster.signing_secret,
        cluster.client_secret,
        cluster.token_encryption_key,
        cluster.hop_key("us")[1],
        cluster.hop_key("eu")[1],
    ]
    written = {path.name: path.read_bytes() for path in capture_dir.glob("*.envelope")}
    assert len(written) > len(sent_requests)  # the flows' transactions are all there
    leaks = [(name, secret) for name, data in written.items() for secret in secrets if secret.encode() in data]
    assert leaks == []
    shaped = [(name, m.group()) for name, data in written.items() for p in SECRET_SHAPES for m in p.finditer(data)]
    assert shaped == []
