"""Many workspaces, each with its own token: T0US00001 (acme, us) and T0EU00001 (globex, eu).

Both were installed through the OAuth flow when the cluster started. Control opens each
click's Loading modal with the token of the workspace the click came from, and a region
replaces it through control's Web API proxy, which adds that same workspace's token. The
fake Slack refuses a token of another workspace, so the old single-token behaviour (one
bot token for every workspace) would fail these tests: the last one shows the refusal.

This module has a cluster of its own, so that every Slack call the fake recorded comes
from the requests made here and can be checked against its workspace.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from example_project.cluster import WORKSPACES, Cluster, FakeSlackAPI

from .conftest import started
from .helpers import (
    ASYNC_TIMEOUT,
    BOTH_TEAM,
    CONTROL_RESPONSES_ENABLED,
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
    replies_to,
    set_option_in_admin,
    views_opened_with,
    wait_delivered,
    wait_for_control_responses,
    wait_until,
)

pytestmark = pytest.mark.e2e

US_CHANNEL, EU_CHANNEL, BOTH_CHANNEL = (WORKSPACES[team].channels[0] for team in (US_TEAM, EU_TEAM, BOTH_TEAM))
#: workspace -> (organization slug, organization id, region)
HOMES = {US_TEAM: ("acme", US_ORG, "us"), EU_TEAM: ("globex", EU_ORG, "eu")}


@pytest.fixture(scope="module")
def workspaces_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster of this module's own, with control responses on."""
    running = started(tmp_path_factory.mktemp("workspaces-cluster") / "var")
    try:
        set_option_in_admin(running, CONTROL_RESPONSES_ENABLED, True)
        wait_for_control_responses(running, enabled=True)
        yield running
    finally:
        running.stop()


#: The workspace the uninstall test installs, then uninstalls.
GONE_TEAM, GONE_CHANNEL = "T0GONE001", "C0GONE001"
#: channel id -> the workspace it belongs to
CHANNEL_TEAMS = {
    GONE_CHANNEL: GONE_TEAM,
    **{channel: team for team, workspace in WORKSPACES.items() for channel in workspace.channels},
}
#: What the refusal test sends straight to Slack (left out of the last test's check).
WRONG_TEXT, RIGHT_TEXT, DIRECT_TITLE = "from the wrong workspace", "from its own workspace", "Direct"
#: Errors of a token used outside its workspace.
OWNERSHIP_ERRORS = ("invalid_trigger_id", "channel_not_found", "not_found", "invalid_auth", "not_authed")


@pytest.mark.parametrize("team_id", [US_TEAM, EU_TEAM])
def test_each_workspace_gets_its_loading_modal_and_result_with_its_own_token(
    workspaces_cluster: Cluster, team_id: str
) -> None:
    """Resolve in T0US00001 and in T0EU00001: Loading modal by control, result by the region, each with its token."""
    cluster = workspaces_cluster
    slug, organization_id, region = HOMES[team_id]
    other_region = "eu" if region == "us" else "us"
    other_before = cluster.issue_status(other_region, EU_ORG if region == "us" else US_ORG, 1)
    assert cluster.issue_status(region, organization_id, 1) == "open"
    before = payload_ids(cluster)

    sent = cluster.sender().click_button(
        team_id=team_id,
        action_id="resolve_dialog",
        value=issue_button(slug, 1),
        channel_id=WORKSPACES[team_id].channels[0],
    )

    assert sent.status == 200
    assert sent.elapsed_ms < SLACK_WINDOW_MS
    [opened] = views_opened_with(cluster, sent.trigger_id)  # on record as the 200 arrives
    assert (opened["ok"], opened["error"], opened["team_id"]) == (True, None, team_id)
    loading = FakeSlackAPI.view_of(opened)
    assert loading["title"]["text"] == "Loading"
    view = cluster.fake.view_by_external_id(loading["external_id"])
    assert view is not None
    updated = cluster.fake.wait_for_call(
        lambda call: call["params"].get("view_id") == view["id"], method="views.update", timeout=ASYNC_TIMEOUT
    )
    assert (updated["ok"], updated["error"], updated["team_id"]) == (True, None, team_id)
    assert (cluster.fake.view(view["id"]) or {})["title"]["text"] == "Issue #1 resolved"
    [payload] = new_payloads(cluster, before)
    assert payload.region == region
    wait_delivered(cluster, [payload.id])
    assert cluster.issue_status(region, organization_id, 1) == "resolved"
    assert cluster.issue_status(other_region, EU_ORG if region == "us" else US_ORG, 1) == other_before


def test_whoami_asks_slack_through_control_as_each_workspace(workspaces_cluster: Cluster) -> None:
    """``/whoami`` calls auth.test through control's proxy: each workspace's own bot answers."""
    cluster = workspaces_cluster
    sender = cluster.sender()
    answers: dict[str, str] = {}
    asked_before = len(cluster.fake.calls("auth.test"))  # the installs asked too
    for team_id in (US_TEAM, EU_TEAM):
        sent = sender.slash_command(team_id=team_id, command="/whoami", channel_id=WORKSPACES[team_id].channels[1])
        assert sent.status == 200
        [reply] = wait_until(
            lambda s=sent: replies_to(cluster, s.response_url), timeout=ASYNC_TIMEOUT, what="a /whoami reply"
        )
        answers[team_id] = str(reply["params"]["text"])
    auth_tests = cluster.fake.calls("auth.test")[asked_before:]
    assert sorted((call["team_id"], call["ok"]) for call in auth_tests) == [(EU_TEAM, True), (US_TEAM, True)]
    assert answers[US_TEAM].startswith(f"Workspace {US_TEAM} knows this app as U")
    assert answers[US_TEAM].endswith("(answered by region us).")
    assert answers[EU_TEAM].startswith(f"Workspace {EU_TEAM} knows this app as U")
    assert answers[EU_TEAM].endswith("(answered by region eu).")
    bot_users = {team: answer.split(" as ", 1)[1].split(" ", 1)[0] for team, answer in answers.items()}
    assert bot_users[US_TEAM] != bot_users[EU_TEAM]  # one bot user per workspace


def test_a_workspace_of_both_regions_is_answered_by_each_with_its_token(workspaces_cluster: Cluster) -> None:
    """T0BOTH001 (acme and globex): both regions say hello in its channel, both with T0BOTH001's token."""
    cluster = workspaces_cluster
    before = payload_ids(cluster)

    sent = mention(cluster.sender(), team_id=BOTH_TEAM, channel=BOTH_CHANNEL)

    assert sent.status == 200
    wait_delivered(cluster, [p.id for p in new_payloads(cluster, before)])
    posts = wait_until(
        lambda: (
            [call for call in posts_in(cluster, BOTH_CHANNEL) if call["ok"]]
            if len(posts_in(cluster, BOTH_CHANNEL)) >= 2
            else None
        ),
        timeout=ASYNC_TIMEOUT,
        what="both regions' posts",
    )
    assert sorted((call["team_id"], call["params"]["text"]) for call in posts) == [
        (BOTH_TEAM, f"Hello from region eu (organization {EU_ORG})."),
        (BOTH_TEAM, f"Hello from region us (organization {US_ORG})."),
    ]


def test_a_token_of_another_workspace_is_refused_by_slack(workspaces_cluster: Cluster) -> None:
    """What the fake Slack does to the old single-token behaviour: T0US00001's token cannot act in T0EU00001.

    A trigger and a channel of T0EU00001, used with T0US00001's live bot token straight
    from slack_sdk, are refused (``invalid_trigger_id``, ``channel_not_found``); the same
    calls with T0EU00001's own token pass, so it is the workspace that is refused.
    """
    cluster = workspaces_cluster
    us_token, eu_token = (cluster.fake.tokens(team)[-1] for team in (US_TEAM, EU_TEAM))
    assert us_token != eu_token
    api_url = cluster.slack_url + "/api/"
    as_us, as_eu = (WebClient(token=token, base_url=api_url, timeout=5) for token in (us_token, eu_token))
    modal = {"type": "modal", "title": {"type": "plain_text", "text": DIRECT_TITLE}, "blocks": []}

    eu_trigger = cluster.fake.issue_trigger(team_id=EU_TEAM)
    with pytest.raises(SlackApiError) as refused:
        as_us.views_open(trigger_id=eu_trigger, view=modal)
    assert refused.value.response["error"] == "invalid_trigger_id"
    with pytest.raises(SlackApiError) as refused:
        as_us.chat_postMessage(channel=EU_CHANNEL, text=WRONG_TEXT)
    assert refused.value.response["error"] == "channel_not_found"

    assert as_eu.views_open(trigger_id=eu_trigger, view=modal)["ok"]
    assert as_eu.chat_postMessage(channel=EU_CHANNEL, text=RIGHT_TEXT)["ok"]
    assert as_us.auth_test()["team_id"] == US_TEAM


def test_an_uninstall_stops_routing_that_workspace_only(workspaces_cluster: Cluster) -> None:
    """A workspace uninstalls the app: control deactivates it; its next click is kept unroutable, no modal.

    Slack revokes the workspace's tokens and sends ``app_uninstalled``. The installation
    stays in control's database, inactive and without tokens; the proxy refuses calls
    for it; T0US00001 is not affected.
    """
    cluster = workspaces_cluster
    team_id, channel = GONE_TEAM, GONE_CHANNEL
    cluster.fake.add_workspace(team_id, name="Soon gone", channels=[channel])
    cluster.install(team_id, "globex")
    assert len(cluster.fake.tokens(team_id)) == 1
    before = payload_ids(cluster)
    mention(cluster.sender(), team_id=team_id, channel=channel)
    wait_delivered(cluster, [p.id for p in new_payloads(cluster, before)])
    wait_until(lambda: posts_in(cluster, channel), timeout=ASYNC_TIMEOUT, what="a hello before the uninstall")

    sent = cluster.uninstall(team_id)

    assert sent.status == 200
    installed = wait_until(
        lambda: (found := cluster.installation(team_id)) and not found.active and found,
        timeout=ASYNC_TIMEOUT,
        what="the installation deactivated",
    )
    assert (installed.deactivation_reason, installed.encrypted_bot_token) == ("app_uninstalled", "")
    assert cluster.fake.tokens(team_id) == []  # Slack revoked them
    before = payload_ids(cluster)
    click = cluster.sender().click_button(
        team_id=team_id, action_id="resolve_dialog", value=issue_button("globex", 2), channel_id=channel
    )
    assert click.status == 200
    [stored] = new_payloads(cluster, before)
    assert stored.state == "unroutable"
    assert "app_uninstalled" in stored.last_error
    assert views_opened_with(cluster, click.trigger_id) == []
    assert cluster.issue_status("eu", EU_ORG, 2) == "open"

    still = cluster.sender().click_button(
        team_id=US_TEAM, action_id="resolve_dialog", value=issue_button("acme", 2), channel_id=US_CHANNEL
    )
    [opened] = views_opened_with(cluster, still.trigger_id)
    assert (opened["ok"], opened["team_id"]) == (True, US_TEAM)


def test_every_slack_call_was_made_with_the_token_of_its_requests_workspace(workspaces_cluster: Cluster) -> None:
    """Every Web API call the fake recorded used a workspace's token, the one its channel or view belongs to.

    Runs last: the calls are those of the tests above, the installs and the option probes
    (the refusal test's direct calls, made on purpose with a wrong token, are left out).
    No call used a token the fake does not know or one of another workspace.
    """
    fake = workspaces_cluster.fake
    calls = [call for call in fake.calls() if call["method"] not in UNTOKENED and not is_direct(call)]
    assert {call["method"] for call in calls} >= {"views.open", "views.update", "chat.postMessage", "auth.test"}
    owned = [(call, workspace_of(fake, call)) for call in calls]
    wrong = [
        (call["method"], call["error"], call["team_id"], owner)
        for call, owner in owned
        if call["team_id"] not in (*WORKSPACES, GONE_TEAM)
        or call["error"] in OWNERSHIP_ERRORS
        or owner not in (None, call["team_id"])
    ]
    assert wrong == []
    owners = {owner for call, owner in owned if call["method"] != "auth.test"}
    assert None not in owners, "a call named neither a channel nor a view of a workspace"
    assert owners == {US_TEAM, EU_TEAM, BOTH_TEAM, GONE_TEAM}


#: Calls that carry no bot token: the OAuth code exchange and response_url posts.
UNTOKENED = ("oauth.v2.access", "response_url")


def workspace_of(fake: FakeSlackAPI, call: dict[str, Any]) -> str | None:
    """The workspace of a call's channel or view (``None``: it names neither; auth.test names nothing)."""
    params = call["params"]
    if params.get("channel") in CHANNEL_TEAMS:
        return CHANNEL_TEAMS[params["channel"]]
    view_id = params.get("view_id")
    external_id = FakeSlackAPI.view_of(call).get("external_id")
    view = fake.view(str(view_id)) if view_id else fake.view_by_external_id(str(external_id)) if external_id else None
    return str(view["team_id"]) if view and view.get("team_id") else None


def is_direct(call: dict[str, Any]) -> bool:
    """The refusal test's own calls, made with slack_sdk and a chosen token."""
    text = str(call["params"].get("text") or "")
    return text in (WRONG_TEXT, RIGHT_TEXT) or FakeSlackAPI.view_of(call).get("title", {}).get("text") == DIRECT_TITLE
