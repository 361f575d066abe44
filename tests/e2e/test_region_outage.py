"""Every region down: control still acknowledges Slack in time and keeps the work; it is all done once they return."""

from __future__ import annotations

import pytest

from example_project.cluster import WORKSPACES, Cluster

from .helpers import (
    BOTH_TEAM,
    EU_ORG,
    EU_TEAM,
    FORM,
    SLACK_WINDOW_MS,
    US_ORG,
    US_TEAM,
    issue_button,
    mention,
    new_payloads,
    payload_ids,
    payloads,
    posts_in,
    processed,
    replies_to,
    view_closed_body,
    views_opened_with,
    wait_delivered,
    wait_until,
)

pytestmark = pytest.mark.e2e

#: How long the regions may take to catch up once they are back (bounded, not a sleep).
RECOVERY_TIMEOUT = 60.0
#: Stored but not yet delivered. ``in_flight``: a worker's attempt is under way that instant.
UNDELIVERED = ("pending", "in_flight")


def test_every_region_down_then_back_every_payload_delivered_and_handled_once(cluster: Cluster) -> None:
    """us and eu stopped: six kinds acknowledged in time; regions restarted: each payload handled exactly once."""
    channel = WORKSPACES[BOTH_TEAM].channels[2]
    assert cluster.issue_status("us", US_ORG, 3) == "open"
    open_in_eu = len(cluster.open_issues("eu", EU_ORG))
    sender = cluster.sender()
    before = payload_ids(cluster)

    cluster.stop_service("us")
    cluster.stop_service("eu")
    try:
        click = sender.click_button(team_id=US_TEAM, action_id="resolve_dialog", value=issue_button("acme", 3))
        event = mention(sender, team_id=BOTH_TEAM, channel=channel)
        command = sender.slash_command(team_id=EU_TEAM, command="/ticket")
        shortcut = sender.shortcut(team_id=US_TEAM, callback_id="e2e_outage_shortcut")
        closed = sender.send_raw(view_closed_body(team_id=EU_TEAM, callback_id="e2e_outage_modal"), content_type=FORM)
        options = sender.options_load(team_id=US_TEAM, action_id="pick_issue")

        # Slack's async kinds: an empty 200 within its 3 s, the payload already durable.
        for sent in (click, event, command, shortcut, closed):
            assert (sent.status, sent.body) == (200, b""), sent.payload.get("type")
            assert sent.elapsed_ms < SLACK_WINDOW_MS
        # A sync kind cannot wait for a region: the defined fallback, in time.
        assert options.status == 200
        assert options.elapsed_ms < SLACK_WINDOW_MS
        assert options.json() == {"options": []}

        stored = new_payloads(cluster, before)
        assert [(p.region, p.kind) for p in stored] == [
            ("eu", "command:/ticket"),
            ("eu", "event_callback:app_mention"),
            ("eu", "view_closed:e2e_outage_modal"),
            ("us", "block_actions:resolve_dialog"),
            ("us", "block_suggestion:pick_issue"),
            ("us", "event_callback:app_mention"),
            ("us", "shortcut:e2e_outage_shortcut"),
        ]
        queued = [p for p in stored if p.kind != "block_suggestion:pick_issue"]
        assert all(p.state in UNDELIVERED for p in queued), queued
        assert cluster.issue_status("us", US_ORG, 3) == "open"
    finally:
        cluster.start_service("us")
        cluster.start_service("eu")

    # The example project has no handler for the shortcut and view_closed kinds: they are
    # kept and retried (a handler deployed later runs them), never recorded as processed.
    unhandled = [p for p in queued if p.kind.startswith(("shortcut", "view_closed"))]
    handled = [p for p in queued if p not in unhandled]
    wait_delivered(cluster, [p.id for p in handled], timeout=RECOVERY_TIMEOUT)

    # Each effect happened exactly once.
    assert cluster.issue_status("us", US_ORG, 3) == "resolved"
    assert len(views_opened_with(cluster, click.trigger_id)) == 1  # the handler's (late) modal, tried once
    # Replies go out after the receipt: wait for them before counting.
    wait_until(
        lambda: (
            (
                replies_to(cluster, command.response_url)
                and len(posts_in(cluster, channel)) >= 2
                and views_opened_with(cluster, click.trigger_id)
            )
            or None
        ),
        timeout=RECOVERY_TIMEOUT,
        what="the regions' replies",
    )
    [reply] = replies_to(cluster, command.response_url)
    assert reply["params"]["text"] == f"Organization {EU_ORG} has {open_in_eu} open issues (region eu)."
    assert sorted(call["params"]["text"] for call in posts_in(cluster, channel)) == [
        f"Hello from region eu (organization {EU_ORG}).",
        f"Hello from region us (organization {US_ORG}).",
    ]
    for payload in handled:
        assert processed(cluster, payload.region, [payload.id]) == {payload.id: "handled"}
    # Their first attempt after the recovery may come after the others' (a held row waits
    # for its circuit's probe and its own retry time): wait for it (its error is then the
    # region's "no handler", no longer the outage's), then check it was kept.
    wait_until(
        lambda: (
            all(row.last_error.startswith("no handler for ") for row in payloads(cluster, [p.id for p in unhandled]))
            or None
        ),
        timeout=RECOVERY_TIMEOUT,
        what="an attempt of each unhandled payload",
    )
    for payload in unhandled:
        assert processed(cluster, payload.region, [payload.id]) == {}
        [row] = payloads(cluster, [payload.id])
        assert row.state in UNDELIVERED and row.last_error.startswith("no handler for "), row
    # The options load's answer was useless after Slack's deadline: kept as failed, never redelivered.
    [options_payload] = payloads(cluster, [p.id for p in stored if p.kind == "block_suggestion:pick_issue"])
    assert options_payload.state == "failed"
    assert processed(cluster, "us", [options_payload.id]) == {}
