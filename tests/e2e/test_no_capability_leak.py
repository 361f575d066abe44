"""Through gunicorn and Celery, with sentry-sdk initialised as the README recommends: no
response_url, trigger_id, token, signing secret or signature in any Sentry envelope or log line.

The example cluster runs with ``SILO_DEMO_SENTRY_CAPTURE_DIR`` (every process writes what
sentry-sdk would send to files), ``SILO_DEMO_LOG_LEVEL=DEBUG`` (slack_sdk's request lines
included) and every trace sampled. The demo's flows run: a Resolve click with the Loading
modal, ``/ticket`` in both regions (eu over the Celery transport), an @-mention, an options
load and ``/ticket crash`` (a handler that raises).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from example_project.cluster import Cluster
from example_project.fake_slack.client import LEGACY_VERIFICATION_TOKEN

from .conftest import FAST_RETRIES, UPSTREAM_LATENCY
from .helpers import (
    ASYNC_TIMEOUT,
    CONTROL_RESPONSES_ENABLED,
    EU_TEAM,
    US_TEAM,
    issue_button,
    mention,
    new_payloads,
    payload_ids,
    replies_to,
    set_option_in_admin,
    wait_for_control_responses,
    wait_until,
)

pytestmark = pytest.mark.e2e

#: Shapes that are secrets wherever they appear: Slack signatures and bot tokens.
SECRET_SHAPES = (re.compile(rb"v0=[0-9a-f]{64}"), re.compile(rb"xoxb-[0-9a-f]{24}"))


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sentry-envelopes")


@pytest.fixture(scope="module")
def sentry_cluster(tmp_path_factory: pytest.TempPathFactory, capture_dir: Path) -> Iterator[Cluster]:
    env = {
        **FAST_RETRIES,
        "SILO_ROUTER_DELIVERY_MAX_ATTEMPTS": "2",
        "SILO_DEMO_SENTRY_CAPTURE_DIR": str(capture_dir),
        "SILO_DEMO_LOG_LEVEL": "DEBUG",
        "SILO_ROUTER_TRACES_SAMPLE_RATE": "1.0",
    }
    cluster = Cluster(
        tmp_path_factory.mktemp("sentry-cluster") / "var",
        upstream_latency=UPSTREAM_LATENCY,
        extra_env=env,
        region_transports={"eu": "celery"},  # envelopes to eu travel as Celery task arguments
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def captured_items(capture_dir: Path) -> set[bytes]:
    kinds: set[bytes] = set()
    for path in capture_dir.glob("*.envelope"):
        kinds.update(re.findall(rb'\{"type":\s*"(\w+)"', path.read_bytes()))
    return kinds


def test_no_capability_reaches_sentry_or_a_log_line(sentry_cluster: Cluster, capture_dir: Path) -> None:
    cluster = sentry_cluster
    set_option_in_admin(cluster, CONTROL_RESPONSES_ENABLED, True)
    wait_for_control_responses(cluster, enabled=True)
    sender = cluster.sender()
    before = payload_ids(cluster)

    sent = [
        sender.click_button(team_id=US_TEAM, action_id="resolve_dialog", value=issue_button("acme", 3)),
        sender.slash_command(team_id=US_TEAM, command="/ticket"),
        sender.slash_command(team_id=US_TEAM, command="/ticket", text="crash"),
        mention(sender, team_id=US_TEAM, channel="C0CHAN001"),
        sender.slash_command(team_id=EU_TEAM, command="/ticket"),
        sender.options_load(team_id=US_TEAM, action_id="pick_issue", value="a"),
    ]
    assert [s.status for s in sent] == [200] * 6
    assert "options" in sent[-1].json()
    for ticket in (sent[1], sent[4]):
        wait_until(lambda t=ticket: replies_to(cluster, t.response_url), timeout=ASYNC_TIMEOUT, what="a /ticket reply")

    def settled() -> bool:
        rows = new_payloads(cluster, before)
        return len(rows) >= 5 and all(row.state in ("delivered", "failed") for row in rows)

    wait_until(settled, timeout=ASYNC_TIMEOUT, what="every payload delivered or failed")
    ticket_states = sorted(row.state for row in new_payloads(cluster, before) if row.kind == "command:/ticket")
    assert ticket_states == ["delivered", "delivered", "failed"]  # /ticket crash fails after its 2 attempts
    wait_until(
        lambda: {b"event", b"transaction"} <= captured_items(capture_dir),
        timeout=ASYNC_TIMEOUT,
        what="an error event and a transaction captured",
    )
    cluster.stop()  # every process flushes sentry-sdk and its logs on the way out

    capabilities = [value for s in sent for value in (s.response_url, s.trigger_id) if value]
    capabilities += [url.rsplit("/", 1)[1] for url in capabilities if "/response/" in url]
    secrets = [
        *capabilities,
        cluster.bot_token,
        cluster.signing_secret,
        cluster.hop_key("us")[1],
        cluster.hop_key("eu")[1],
    ]
    secrets.append(LEGACY_VERIFICATION_TOKEN)
    written = {path: path.read_bytes() for path in [*capture_dir.glob("*.envelope"), *cluster.var_dir.glob("*.log")]}
    assert any(path.suffix == ".log" and b"slack_sdk" in data for path, data in written.items()), "no DEBUG lines"
    leaks = [(path.name, secret) for path, data in written.items() for secret in secrets if secret.encode() in data]
    assert leaks == []
    shaped = [(path.name, m.group()) for path, data in written.items() for p in SECRET_SHAPES for m in p.finditer(data)]
    assert shaped == []
