"""Slack's Events API retries over real HTTP: every copy answered 200, one payload per region, handled once."""

from __future__ import annotations

import secrets

import pytest

from example_project.cluster import WORKSPACES, Cluster

from .helpers import (
    ASYNC_TIMEOUT,
    BOTH_TEAM,
    EU_ORG,
    SLACK_WINDOW_MS,
    US_ORG,
    mention,
    new_payloads,
    payload_ids,
    posts_in,
    processed_for_event,
    wait_delivered,
    wait_until,
)

pytestmark = pytest.mark.e2e


def test_the_same_event_id_sent_four_times_is_handled_once_per_region(cluster: Cluster) -> None:
    """The first delivery, then retries 1..3 with ``X-Slack-Retry-Reason: http_timeout``.

    Only the event_id is shared (each copy has its own timestamp and event_context), so
    deduplication must key on the event_id, as Slack's retry contract requires.
    """
    channel = WORKSPACES[BOTH_TEAM].channels[1]
    event_id = "Ev" + secrets.token_hex(5).upper()
    sender = cluster.sender()
    before = payload_ids(cluster)

    answers = [mention(sender, team_id=BOTH_TEAM, channel=channel, event_id=event_id)]
    answers += [
        mention(sender, team_id=BOTH_TEAM, channel=channel, event_id=event_id, retry_num=n, retry_reason="http_timeout")
        for n in (1, 2, 3)
    ]

    assert [(sent.status, sent.body) for sent in answers] == [(200, b"")] * 4
    assert all(sent.elapsed_ms < SLACK_WINDOW_MS for sent in answers)
    stored = new_payloads(cluster, before)
    assert [(p.kind, p.region) for p in stored] == [
        ("event_callback:app_mention", "eu"),
        ("event_callback:app_mention", "us"),
    ]
    by_region = {p.region: p.id for p in stored}
    wait_delivered(cluster, by_region.values())
    for region, payload_id in by_region.items():
        # The region's own idempotency records for this event: one, for this payload.
        assert processed_for_event(cluster, region, event_id) == [(payload_id, "handled")]
    # Replies go out after the receipt: wait for both regions' posts.
    wait_until(lambda: len(posts_in(cluster, channel)) >= 2 or None, timeout=ASYNC_TIMEOUT, what="both replies")
    texts = sorted(call["params"]["text"] for call in posts_in(cluster, channel))
    assert texts == [
        f"Hello from region eu (organization {EU_ORG}).",
        f"Hello from region us (organization {US_ORG}).",
    ]
