"""The fake Slack serves many workspaces: OAuth installs, per-workspace tokens, ownership checks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth import AuthorizeUrlGenerator
from slack_sdk.webhook import WebhookClient

from example_project.fake_slack import FakeSlack

SECRET = "fake-slack-workspaces-signing-secret"
LEGACY_TOKEN = "xoxb-single-workspace-token"
CLIENT_ID = "4444444444.5555555555"
CLIENT_SECRET = "workspaces-client-secret"
REDIRECT_URI = "http://127.0.0.1:9/slack/oauth_redirect/"
SCOPES = ["commands", "chat:write"]


def modal(title: str = "Loading...", *, external_id: str | None = None) -> dict[str, Any]:
    """A minimal valid modal view."""
    view: dict[str, Any] = {
        "type": "modal",
        "title": {"type": "plain_text", "text": title},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Working on it"}}],
    }
    if external_id is not None:
        view["external_id"] = external_id
    return view


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    """A running fake with two workspaces (T2 owns channel C2) and a legacy token."""
    with FakeSlack(
        signing_secret=SECRET, bot_token=LEGACY_TOKEN, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    ) as server:
        server.add_workspace("T1", name="One", channels=["C1"])
        server.add_workspace("T2", name="Two", channels=["C2"])
        yield server


def consent(fake: FakeSlack, team: str | None, *, state: str = "s-1", extra: str = "", **kwargs: Any) -> str:
    """Play the browser at the fake's consent screen; return the Location it redirects to."""
    generator = AuthorizeUrlGenerator(
        client_id=kwargs.pop("client_id", CLIENT_ID),
        redirect_uri=kwargs.pop("redirect_uri", REDIRECT_URI),
        scopes=kwargs.pop("scopes", SCOPES),
        user_scopes=kwargs.pop("user_scopes", None),
        authorization_url=fake.authorize_url,
    )
    response = requests.get(generator.generate(state, team=team) + extra, allow_redirects=False, timeout=5)
    assert response.status_code == 302, response.text
    return str(response.headers["Location"])


def query_of(url: str) -> dict[str, str]:
    """The query parameters of a URL."""
    return {key: values[-1] for key, values in parse_qs(urlsplit(url).query).items()}


def oauth_client(fake: FakeSlack) -> WebClient:
    """A token-less WebClient for oauth.v2.access."""
    return WebClient(base_url=fake.api_url)


def install_by_browser(fake: FakeSlack, team: str, **kwargs: Any) -> dict[str, Any]:
    """Consent, then exchange the code like an app's redirect view does."""
    code = query_of(consent(fake, team, **kwargs))["code"]
    response = oauth_client(fake).oauth_v2_access(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=code, redirect_uri=REDIRECT_URI
    )
    return dict(response.data)  # type: ignore[arg-type]


def client_for(fake: FakeSlack, token: str) -> WebClient:
    """A WebClient with ``token`` pointed at the fake."""
    return WebClient(token=token, base_url=fake.api_url)


def slack_error(excinfo: pytest.ExceptionInfo[SlackApiError]) -> str:
    """The Slack error name of a refused call."""
    return str(excinfo.value.response["error"])


# -- OAuth -----------------------------------------------------------------------------


def test_two_workspaces_install_through_oauth_and_get_their_own_tokens(fake: FakeSlack) -> None:
    """Each consent + oauth.v2.access yields a bot token bound to its workspace, in Slack's shape."""
    location = consent(fake, "T1", state="state-one")
    assert location.startswith(REDIRECT_URI + "?")
    assert query_of(location)["state"] == "state-one"
    one = install_by_browser(fake, "T1")
    two = install_by_browser(fake, "T2")
    assert one["access_token"] != two["access_token"]
    assert one["access_token"].startswith("xoxb-") and len(one["access_token"].split("-")) == 4
    assert (one["token_type"], one["scope"], one["app_id"]) == ("bot", "commands,chat:write", fake.app_id)
    assert one["team"] == {"name": "One", "id": "T1"} and one["enterprise"] is None
    assert one["is_enterprise_install"] is False
    assert one["bot_user_id"] == fake.workspace("T1").bot_user_id != fake.workspace("T2").bot_user_id
    assert one["authed_user"] == {"id": fake.workspace("T1").installer_user_id}
    assert "refresh_token" not in one and "expires_in" not in one
    for team, answer in (("T1", one), ("T2", two)):
        identity = client_for(fake, answer["access_token"]).auth_test()
        workspace = fake.workspace(team)
        assert (identity["team_id"], identity["user_id"], identity["bot_id"]) == (
            team,
            workspace.bot_user_id,
            workspace.bot_id,
        )
        assert identity["is_enterprise_install"] is False
        assert fake.token_of(team) == answer["access_token"]


def test_code_is_single_use_and_unknown_codes_are_invalid(fake: FakeSlack) -> None:
    """A code works once (code_already_used after); a made-up code is invalid_code."""
    code = query_of(consent(fake, "T1"))["code"]
    client = oauth_client(fake)
    client.oauth_v2_access(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=code, redirect_uri=REDIRECT_URI)
    with pytest.raises(SlackApiError) as again:
        client.oauth_v2_access(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=code, redirect_uri=REDIRECT_URI)
    with pytest.raises(SlackApiError) as unknown:
        client.oauth_v2_access(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code="1.2.3", redirect_uri=REDIRECT_URI
        )
    assert (slack_error(again), slack_error(unknown)) == ("code_already_used", "invalid_code")
    assert len(fake.tokens("T1")) == 1


def test_redirect_uri_and_client_credentials_must_match(fake: FakeSlack) -> None:
    """bad_redirect_uri, bad_client_secret, invalid_client_id leave the code usable; form params work too."""
    code = query_of(consent(fake, "T1"))["code"]
    client = oauth_client(fake)
    with pytest.raises(SlackApiError) as redirect:
        client.oauth_v2_access(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=code, redirect_uri="http://x/")
    with pytest.raises(SlackApiError) as secret:
        client.oauth_v2_access(client_id=CLIENT_ID, client_secret="wrong", code=code, redirect_uri=REDIRECT_URI)
    with pytest.raises(SlackApiError) as client_id:
        client.oauth_v2_access(client_id="9.9", client_secret=CLIENT_SECRET, code=code, redirect_uri=REDIRECT_URI)
    assert [slack_error(e) for e in (redirect, secret, client_id)] == [
        "bad_redirect_uri",
        "bad_client_secret",
        "invalid_client_id",
    ]
    form = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "code": code, "redirect_uri": REDIRECT_URI}
    answer = client.api_call("oauth.v2.access", data=form)
    assert answer["team"]["id"] == "T1"


def test_oauth_calls_are_recorded_without_secrets(fake: FakeSlack) -> None:
    """oauth.v2.access is recorded with the workspace, never the code or the client secret."""
    answer = install_by_browser(fake, "T2")
    [call] = fake.calls("oauth.v2.access")
    assert call.ok and call.team_id == "T2"
    assert call.params["code"] == "(redacted)" and call.params["redirect_uri"] == REDIRECT_URI
    recorded = repr(fake.calls())
    assert CLIENT_SECRET not in recorded and answer["access_token"] not in recorded


def test_consent_refusals_and_the_default_redirect_uri() -> None:
    """Cancel redirects with access_denied; bad authorize requests get an HTML 400 page."""
    with FakeSlack(signing_secret=SECRET, client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as fake:
        denied = query_of(consent(fake, "T7", state="st", extra="&fake_consent=deny"))
        assert denied == {"error": "access_denied", "state": "st"}
        unknown_client = requests.get(f"{fake.authorize_url}?client_id=nope&scope=commands", timeout=5)
        no_client = requests.get(f"{fake.authorize_url}?scope=commands", timeout=5)
        no_redirect = requests.get(f"{fake.authorize_url}?client_id={CLIENT_ID}&scope=commands", timeout=5)
        no_scope = requests.get(f"{fake.authorize_url}?client_id={CLIENT_ID}&redirect_uri={REDIRECT_URI}", timeout=5)
        for page, error in (
            (unknown_client, "invalid_client_id"),
            (no_client, "invalid_client_id"),
            (no_redirect, "bad_redirect_uri"),
            (no_scope, "invalid_scope"),
        ):
            assert page.status_code == 400 and page.headers["Content-Type"].startswith("text/html")
            assert error in page.text
        fake.redirect_uri = "http://127.0.0.1:9/default/"
        location = consent(fake, "T7", redirect_uri=None)
        assert location.startswith("http://127.0.0.1:9/default/?code=")
        answer = oauth_client(fake).oauth_v2_access(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, code=query_of(location)["code"]
        )
        assert answer["team"]["id"] == "T7" and fake.workspace("T7").team_id == "T7"


def test_enterprise_install_reaches_every_workspace_of_its_enterprise(fake: FakeSlack) -> None:
    """fake_enterprise=1: org-wide token, team null, valid on another workspace of the same enterprise."""
    fake.add_workspace("T5", enterprise_id="E1")
    fake.add_workspace("T6", enterprise_id="E1", channels=["C6"])
    answer = install_by_browser(fake, "T5", extra="&fake_enterprise=1")
    assert answer["is_enterprise_install"] is True and answer["team"] is None
    assert answer["enterprise"] == {"name": "Fake Org", "id": "E1"}
    client = client_for(fake, answer["access_token"])
    identity = client.auth_test()
    assert (identity["enterprise_id"], identity["is_enterprise_install"]) == ("E1", True)
    assert client.views_open(trigger_id=fake.issue_trigger(team_id="T6"), view=modal())["ok"] is True
    assert client.chat_postMessage(channel="C6", text="org-wide")["ok"] is True
    with pytest.raises(SlackApiError) as outside:
        client.chat_postMessage(channel="C2", text="not my org")
    assert slack_error(outside) == "channel_not_found"


def test_user_scopes_give_a_user_token(fake: FakeSlack) -> None:
    """user_scope yields authed_user.access_token (xoxp-), whose auth.test names the installer."""
    answer = install_by_browser(fake, "T1", user_scopes=["search:read"])
    user = answer["authed_user"]
    assert user["access_token"].startswith("xoxp-") and user["token_type"] == "user"
    assert user["scope"] == "search:read"
    identity = client_for(fake, user["access_token"]).auth_test()
    assert identity["user_id"] == user["id"] == fake.workspace("T1").installer_user_id
    assert "bot_id" not in identity


def test_reinstall_issues_a_new_token_and_the_old_one_keeps_working(fake: FakeSlack) -> None:
    """A second install of a workspace issues a new bot token; the first stays valid."""
    first = fake.install("T1")["access_token"]
    second = fake.install("T1")["access_token"]
    assert first != second and fake.tokens("T1") == [first, second] and fake.token_of("T1") == second
    assert client_for(fake, first).auth_test()["team_id"] == "T1"


# -- ownership -----------------------------------------------------------------------------


def test_a_workspace_token_cannot_use_another_workspaces_trigger(fake: FakeSlack) -> None:
    """T1's token on T2's trigger is invalid_trigger_id; the trigger stays usable for T2."""
    one, two = (
        client_for(fake, fake.install("T1")["access_token"]),
        client_for(fake, fake.install("T2")["access_token"]),
    )
    trigger_id = fake.issue_trigger(team_id="T2")
    with pytest.raises(SlackApiError) as refused:
        one.views_open(trigger_id=trigger_id, view=modal())
    assert slack_error(refused) == "invalid_trigger_id"
    view = two.views_open(trigger_id=trigger_id, view=modal())["view"]
    assert (view["team_id"], view["bot_id"]) == ("T2", fake.workspace("T2").bot_id)
    assert [(call.error, call.team_id) for call in fake.calls("views.open")] == [
        ("invalid_trigger_id", "T1"),
        (None, "T2"),
    ]


def test_a_workspace_token_cannot_touch_another_workspaces_view(fake: FakeSlack) -> None:
    """views.update / views.push on T2's view with T1's token are not_found; T1 may reuse the external_id."""
    one, two = (
        client_for(fake, fake.install("T1")["access_token"]),
        client_for(fake, fake.install("T2")["access_token"]),
    )
    view = two.views_open(trigger_id=fake.issue_trigger(team_id="T2"), view=modal(external_id="ext-9"))["view"]
    with pytest.raises(SlackApiError) as by_id:
        one.views_update(view_id=view["id"], view=modal("Stolen"))
    with pytest.raises(SlackApiError) as by_external_id:
        one.views_update(external_id="ext-9", view=modal("Stolen"))
    with pytest.raises(SlackApiError) as push:
        one.views_push(trigger_id=fake.issue_trigger(view_id=view["id"]), view=modal("Pushed"))
    assert [slack_error(e) for e in (by_id, by_external_id, push)] == ["not_found"] * 3
    assert fake.views[view["id"]]["title"]["text"] == "Loading..."
    mine = one.views_open(trigger_id=fake.issue_trigger(team_id="T1"), view=modal(external_id="ext-9"))["view"]
    assert one.views_update(external_id="ext-9", view=modal("Mine"))["view"]["id"] == mine["id"]
    assert two.views_update(external_id="ext-9", view=modal("Theirs"))["view"]["id"] == view["id"]
    assert fake.view_by_external_id("ext-9", team_id="T1")["title"]["text"] == "Mine"


def test_a_workspace_token_cannot_post_in_another_workspaces_channel(fake: FakeSlack) -> None:
    """chat.* on T2's channel with T1's token is channel_not_found; unregistered channels are open to all."""
    one, two = (
        client_for(fake, fake.install("T1")["access_token"]),
        client_for(fake, fake.install("T2")["access_token"]),
    )
    for call in (
        lambda: one.chat_postMessage(channel="C2", text="hi"),
        lambda: one.chat_postEphemeral(channel="C2", user="U1", text="hi"),
        lambda: one.chat_update(channel="C2", ts="1.000001", text="hi"),
    ):
        with pytest.raises(SlackApiError) as refused:
            call()
        assert slack_error(refused) == "channel_not_found"
    posted = two.chat_postMessage(channel="C2", text="hello")
    assert (posted["message"]["team"], posted["message"]["bot_id"]) == ("T2", fake.workspace("T2").bot_id)
    shared = two.chat_postMessage(channel="C-UNREGISTERED", text="anywhere")
    with pytest.raises(SlackApiError) as not_mine:
        one.chat_update(channel="C-UNREGISTERED", ts=shared["ts"], text="edited by T1")
    assert slack_error(not_mine) == "message_not_found"
    assert one.chat_postMessage(channel="C-UNREGISTERED", text="me too")["ok"] is True
    assert [(m["team_id"], m["text"]) for m in fake.messages] == [
        ("T2", "hello"),
        ("T2", "anywhere"),
        ("T1", "me too"),
    ]


def test_the_single_workspace_token_passes_every_ownership_check(fake: FakeSlack) -> None:
    """The legacy bot_token opens other workspaces' triggers, posts in their channels, updates their views."""
    legacy = client_for(fake, LEGACY_TOKEN)
    two = client_for(fake, fake.install("T2")["access_token"])
    view = two.views_open(trigger_id=fake.issue_trigger(team_id="T2"), view=modal())["view"]
    assert legacy.views_update(view_id=view["id"], view=modal("Legacy"))["ok"] is True
    opened = legacy.views_open(trigger_id=fake.issue_trigger(team_id="T1"), view=modal())["view"]
    assert opened["team_id"] == "T1"
    posted = two.chat_postMessage(channel="C2", text="theirs")
    assert legacy.chat_update(channel="C2", ts=posted["ts"], text="edited")["ok"] is True
    assert legacy.auth_test()["team_id"] == fake.team_id
    assert {call.team_id for call in fake.calls() if call.method != "oauth.v2.access"} >= {None, "T2"}
    assert all(call.team_id is None for call in fake.calls() if call.method == "auth.test")


def test_response_urls_record_their_workspace(fake: FakeSlack) -> None:
    """A response_url issued for a workspace records it on the message and the call."""
    url = fake.issue_response_url(channel_id="C2", team_id="T2")
    assert WebhookClient(url).send(text="ok").body == "ok"
    assert fake.messages[0]["team_id"] == "T2" and fake.calls("response_url")[0].team_id == "T2"


def test_tokens_that_are_made_up_are_invalid_auth(fake: FakeSlack) -> None:
    """A well-formed token the fake never issued is invalid_auth and records no workspace."""
    with pytest.raises(SlackApiError) as refused:
        client_for(fake, "xoxb-1-2-made-up").auth_test()
    assert slack_error(refused) == "invalid_auth" and fake.calls("auth.test")[0].team_id is None
