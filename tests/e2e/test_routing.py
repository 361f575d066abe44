"""Requests are routed by workspace to the region that holds the data, across real processes."""

from __future__ import annotations

import json

import pytest

from example_project.cluster import WORKSPACES, Cluster

from .helpers import (
    ASYNC_TIMEOUT,
    BOTH_TEAM,
    EU_ORG,
    EU_TEAM,
    JSON,
    SLACK_WINDOW_MS,
    US_ORG,
    US_TEAM,
    issue_button,
    issues,
    mention,
    new_payloads,
    payload_ids,
    posts_in,
    processed,
    wait_delivered,
    wait_until,
)

pytestmark = pytest.mark.e2e


def test_button_click_changes_the_issue_in_us_only(cluster: Cluster) -> None:
    """T0US00001 -> acme -> us: Resolve on issue #1 changes us's database and nothing in eu's."""
    assert cluster.issue_status("us", US_ORG, 1) == "open"
    eu_before = issues(cluster, "eu")
    before = payload_ids(cluster)

    sent = cluster.sender().click_button(team_id=US_TEAM, action_id="resolve_dialog", value=issue_button("acme", 1))

    assert (sent.status, sent.body) == (200, b"")
    [payload] = new_payloads(cluster, before)  # committed before the 200
    assert (payload.kind, payload.region) == ("block_actions:resolve_dialog", "us")
    wait_delivered(cluster, [payload.id])
    assert cluster.issue_status("us", US_ORG, 1) == "resolved"
    assert processed(cluster, "us", [payload.id]) == {payload.id: "handled"}
    assert processed(cluster, "eu", [payload.id]) == {}
    assert issues(cluster, "eu") == eu_before


def test_slash_command_is_answered_through_response_url_by_eu(cluster: Cluster) -> None:
    """/ticket from T0EU00001 -> globex -> eu: eu counts its open issues and replies via response_url."""
    open_in_eu = len(cluster.open_issues("eu", EU_ORG))
    before = payload_ids(cluster)

    sent = cluster.sender().slash_command(team_id=EU_TEAM, command="/ticket")

    assert (sent.status, sent.body) == (200, b"")
    assert [(p.kind, p.region) for p in new_payloads(cluster, before)] == [("command:/ticket", "eu")]
    reply = cluster.fake.wait_for_call(
        lambda call: call["params"].get("response_url") == sent.response_url, method="response_url", timeout=20
    )
    assert reply["ok"], reply
    assert reply["params"]["text"] == f"Organization {EU_ORG} has {open_in_eu} open issues (region eu)."


def test_app_mention_in_a_workspace_of_both_regions_reaches_both(cluster: Cluster) -> None:
    """T0BOTH001 is installed for acme (us) and globex (eu): the event fans out, each region answers once."""
    channel = WORKSPACES[BOTH_TEAM].channels[0]
    before = payload_ids(cluster)

    sent = mention(cluster.sender(), team_id=BOTH_TEAM, channel=channel)

    assert (sent.status, sent.body) == (200, b"")
    stored = new_payloads(cluster, before)
    assert [(p.kind, p.region) for p in stored] == [
        ("event_callback:app_mention", "eu"),
        ("event_callback:app_mention", "us"),
    ]
    wait_delivered(cluster, [p.id for p in stored])
    # Each region posts after it answered control (replies run after the receipt).
    wait_until(
        lambda: len([c for c in posts_in(cluster, channel) if c["ok"]]) >= 2 or None,
        timeout=ASYNC_TIMEOUT,
        what="both regions' posts",
    )
    texts = sorted(call["params"]["text"] for call in posts_in(cluster, channel) if call["ok"])
    assert texts == [
        f"Hello from region eu (organization {EU_ORG}).",
        f"Hello from region us (organization {US_ORG}).",
    ]


def test_options_load_is_answered_in_the_http_body_with_us_issues(cluster: Cluster) -> None:
    """block_suggestion from T0US00001: us's open issues come back synchronously, within Slack's 3 s."""
    expected = cluster.open_issues("us", US_ORG)
    assert expected, "the seed gives acme open issues"

    sent = cluster.sender().options_load(team_id=US_TEAM, action_id="pick_issue")

    assert sent.status == 200
    assert sent.elapsed_ms < SLACK_WINDOW_MS
    assert sent.headers["Content-Type"].startswith(JSON)
    options = sent.json()["options"]
    assert [json.loads(option["value"]) for option in options] == [
        {"organization": US_ORG, "issue": number} for number, _ in expected
    ]
    assert [option["text"]["text"] for option in options] == [f"#{number} {title}" for number, title in expected]


def test_options_load_filters_by_what_the_user_typed(cluster: Cluster) -> None:
    """The typed text reaches the region's handler: only matching issues come back."""
    expected = [f"#{number} {title}" for number, title in cluster.open_issues("us", US_ORG) if "accents" in title]
    assert expected, "the seed gives acme an open issue about accents"

    sent = cluster.sender().options_load(team_id=US_TEAM, action_id="pick_issue", value="accents")

    assert sent.status == 200
    assert [option["text"]["text"] for option in sent.json()["options"]] == expected
