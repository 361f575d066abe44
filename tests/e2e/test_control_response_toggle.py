"""An operator turns control responses on in control's admin; the next click gets a Loading modal at once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from example_project.cluster import OPERATOR, Cluster, FakeSlackAPI

from .helpers import (
    ASYNC_TIMEOUT,
    CONTROL_RESPONSES_ENABLED,
    EU_ORG,
    OPTION_ADMIN,
    SLACK_WINDOW_MS,
    US_ORG,
    US_TEAM,
    issue_button,
    new_payloads,
    option_changes,
    payload_ids,
    processed,
    set_option_in_admin,
    views_opened_with,
    wait_delivered,
    wait_for_control_responses,
)

pytestmark = pytest.mark.e2e


@pytest.fixture
def control_responses_restored(cluster: Cluster) -> Iterator[None]:
    """Turn control responses off again (through the admin) after the test, for the tests that follow."""
    yield
    set_option_in_admin(cluster, CONTROL_RESPONSES_ENABLED, False)
    wait_for_control_responses(cluster, enabled=False)


def test_admin_toggle_then_loading_modal_within_3_s_replaced_by_the_region(
    cluster: Cluster, control_responses_restored: None
) -> None:
    """The whole story over HTTP: admin login (CSRF), save the option, click, Loading modal, views.update."""
    wait_for_control_responses(cluster, enabled=False)  # the seed leaves the flag off
    audit_before = option_changes(cluster, CONTROL_RESPONSES_ENABLED)

    saved = set_option_in_admin(cluster, CONTROL_RESPONSES_ENABLED, True)

    assert saved.status_code == 302
    assert saved.headers["Location"].rstrip("/").endswith(OPTION_ADMIN.rstrip("/"))
    assert option_changes(cluster, CONTROL_RESPONSES_ENABLED) == [*audit_before, ("false", "true", OPERATOR)]
    wait_for_control_responses(cluster, enabled=True)  # no restart: every process re-reads options

    assert cluster.issue_status("us", US_ORG, 2) == "open"
    eu_status = cluster.issue_status("eu", EU_ORG, 2)
    before = payload_ids(cluster)
    sent = cluster.sender().click_button(team_id=US_TEAM, action_id="resolve_dialog", value=issue_button("acme", 2))

    assert sent.status == 200
    assert sent.elapsed_ms < SLACK_WINDOW_MS
    # Control opened the modal before answering: the call is on record as the 200 arrives,
    # and the fake accepts a trigger_id only within 3 s of the click, once.
    [opened] = views_opened_with(cluster, sent.trigger_id)
    assert opened["ok"], opened["error"]
    loading = FakeSlackAPI.view_of(opened)
    assert loading["title"]["text"] == "Loading"
    shown = cluster.fake.view_by_external_id(loading["external_id"])
    assert shown is not None
    view_id = shown["id"]

    updated = cluster.fake.wait_for_call(
        lambda call: call["ok"] and call["params"].get("view_id") == view_id,
        method="views.update",
        timeout=ASYNC_TIMEOUT,
    )
    assert FakeSlackAPI.view_of(updated)["title"]["text"] == "Issue #2 resolved"
    assert (cluster.fake.view(view_id) or {})["title"]["text"] == "Issue #2 resolved"
    assert cluster.issue_status("us", US_ORG, 2) == "resolved"
    assert cluster.issue_status("eu", EU_ORG, 2) == eu_status
    [payload] = new_payloads(cluster, before)
    assert (payload.kind, payload.region) == ("block_actions:resolve_dialog", "us")
    wait_delivered(cluster, [payload.id])
    assert processed(cluster, "us", [payload.id]) == {payload.id: "handled"}
    assert views_opened_with(cluster, sent.trigger_id) == [opened]  # the region did not try the trigger again
