"""Region eu on the ``celery`` transport: control publishes on ``silo_router.region.eu``, eu's worker handles it.

The cluster here has its own var dir and broker folder; eu's web server is stopped
before anything is sent, so every effect in eu can only come from its Celery worker.
"""

from __future__ import annotations

import pytest

from example_project.cluster import WORKSPACES, Cluster

from .helpers import (
    EU_ORG,
    EU_TEAM,
    SLACK_WINDOW_MS,
    US_ORG,
    US_TEAM,
    issue_button,
    mention,
    new_payloads,
    payload_ids,
    posts_in,
    processed,
    replies_to,
    wait_delivered,
    wait_until,
)

pytestmark = pytest.mark.e2e

EFFECT_TIMEOUT = 20.0


def test_command_and_event_for_eu_are_handled_by_eu_celery_worker(celery_cluster: Cluster) -> None:
    """/ticket and an app_mention from T0EU00001 reach eu through the queue; eu answers through Slack."""
    cluster = celery_cluster
    assert cluster.region_transports == {"us": "http", "eu": "celery"}
    assert cluster.services["eu-worker"].running
    cluster.stop_service("eu")  # eu's HTTP receiver is gone: only the queue leads to eu now
    channel = WORKSPACES[EU_TEAM].channels[1]
    open_in_eu = len(cluster.open_issues("eu", EU_ORG))
    sender = cluster.sender()
    before = payload_ids(cluster)

    command = sender.slash_command(team_id=EU_TEAM, command="/ticket")
    event = mention(sender, team_id=EU_TEAM, channel=channel)

    for sent in (command, event):
        assert (sent.status, sent.body) == (200, b"")
        assert sent.elapsed_ms < SLACK_WINDOW_MS
    stored = new_payloads(cluster, before)
    assert [(p.region, p.kind) for p in stored] == [("eu", "command:/ticket"), ("eu", "event_callback:app_mention")]
    wait_delivered(cluster, [p.id for p in stored])  # delivered = eu's worker confirmed it back to control

    reply = cluster.fake.wait_for_call(
        lambda call: call["params"].get("response_url") == command.response_url,
        method="response_url",
        timeout=EFFECT_TIMEOUT,
    )
    assert reply["ok"], reply
    assert reply["params"]["text"] == f"Organization {EU_ORG} has {open_in_eu} open issues (region eu)."
    posted = wait_until(lambda: posts_in(cluster, channel), timeout=EFFECT_TIMEOUT, what="chat.postMessage from eu")
    assert [call["params"]["text"] for call in posted] == [f"Hello from region eu (organization {EU_ORG})."]
    # Both effects ran after their handler's transaction committed, with its idempotency record.
    assert processed(cluster, "eu", [p.id for p in stored]) == {p.id: "handled" for p in stored}
    assert "silo_router.region.receive" in cluster.services["eu-worker"].log_path.read_text()
    assert replies_to(cluster, command.response_url) == [reply]  # once


def test_us_stays_on_http_beside_a_celery_region(celery_cluster: Cluster) -> None:
    """The transport is per region: a click for us still goes over HTTP to us's web server."""
    cluster = celery_cluster
    assert cluster.issue_status("us", US_ORG, 4) == "open"
    before = payload_ids(cluster)

    sent = cluster.sender().click_button(team_id=US_TEAM, action_id="archive_dialog", value=issue_button("acme", 4))

    assert (sent.status, sent.body) == (200, b"")
    [payload] = new_payloads(cluster, before)
    wait_delivered(cluster, [payload.id])  # over HTTP, delivered means handled
    assert processed(cluster, "us", [payload.id]) == {payload.id: "handled"}
    assert cluster.issue_status("us", US_ORG, 4) == "archived"
