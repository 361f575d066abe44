"""The fake Slack's token lifecycle: rotation with refresh tokens, expiry, revocation, uninstall."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackTokenRotationError
from slack_sdk.oauth.installation_store import Installation
from slack_sdk.oauth.token_rotation import TokenRotator
from slack_sdk.webhook import WebhookClient

from example_project.fake_slack import FakeSlack, SlackError
from example_project.fake_slack.accounts import Accounts

SECRET = "fake-slack-tokens-signing-secret"
CLIENT_ID = "6666666666.7777777777"
CLIENT_SECRET = "tokens-client-secret"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    """A running fake with token rotation and the default 12-hour token lifetime."""
    with FakeSlack(
        signing_secret=SECRET, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, token_rotation=True
    ) as server:
        server.add_workspace("T1", channels=["C1"])
        server.add_workspace("T2")
        yield server


def installation_of(fake: FakeSlack, answer: dict[str, Any]) -> Installation:
    """The slack_sdk Installation an OAuth flow would store for an oauth.v2.access answer."""
    user = answer["authed_user"]
    return Installation(
        app_id=answer["app_id"],
        enterprise_id=None,
        team_id=answer["team"]["id"],
        bot_token=answer["access_token"],
        bot_refresh_token=answer["refresh_token"],
        bot_token_expires_in=answer["expires_in"],
        bot_id=fake.workspace(answer["team"]["id"]).bot_id,
        bot_user_id=answer["bot_user_id"],
        bot_scopes=answer["scope"],
        user_id=user["id"],
        user_token=user.get("access_token"),
        user_refresh_token=user.get("refresh_token"),
        user_token_expires_in=user.get("expires_in"),
        user_scopes=user.get("scope"),
    )


def rotator(fake: FakeSlack) -> TokenRotator:
    """slack_sdk's TokenRotator talking to the fake."""
    return TokenRotator(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, client=WebClient(base_url=fake.api_url))


def refresh(fake: FakeSlack, refresh_token: str) -> Any:
    """oauth.v2.access with grant_type=refresh_token, as TokenRotator sends it."""
    return WebClient(base_url=fake.api_url).oauth_v2_access(
        client_id=CLIENT_ID, client_secret=CLIENT_SECRET, grant_type="refresh_token", refresh_token=refresh_token
    )


def slack_error(excinfo: pytest.ExceptionInfo[SlackApiError]) -> str:
    """The Slack error name of a refused call."""
    return str(excinfo.value.response["error"])


def test_rotation_issues_expiring_tokens_with_a_refresh_token(fake: FakeSlack) -> None:
    """With rotation an install answers xoxe.xoxb-1- / xoxe-1- tokens and expires_in, for bot and user."""
    answer = fake.install("T1", user_scopes=["search:read"])
    assert answer["access_token"].startswith("xoxe.xoxb-1-")
    assert answer["refresh_token"].startswith("xoxe-1-") and answer["expires_in"] == 43200
    user = answer["authed_user"]
    assert user["access_token"].startswith("xoxe.xoxp-1-") and user["refresh_token"].startswith("xoxe-1-")
    assert WebClient(token=answer["access_token"], base_url=fake.api_url).auth_test()["team_id"] == "T1"


def test_token_rotator_refreshes_bot_and_user_tokens_and_old_refresh_tokens_die(fake: FakeSlack) -> None:
    """slack_sdk's TokenRotator gets a new pair for each; the old refresh token is invalid_refresh_token."""
    installation = installation_of(fake, fake.install("T1", user_scopes=["search:read"]))
    rotated = rotator(fake).perform_token_rotation(installation=installation, minutes_before_expiration=60 * 24)
    assert rotated is not None
    assert rotated.bot_token != installation.bot_token and rotated.user_token != installation.user_token
    assert rotated.bot_refresh_token != installation.bot_refresh_token
    assert rotated.bot_token_expires_at is not None and rotated.bot_token_expires_at > time.time() + 43000
    assert fake.refreshes("T1") == 2 and fake.refreshes("T2") == 0
    new_client = WebClient(token=rotated.bot_token, base_url=fake.api_url)
    assert new_client.chat_postMessage(channel="C1", text="rotated")["message"]["team"] == "T1"
    old_client = WebClient(token=installation.bot_token, base_url=fake.api_url)
    assert old_client.auth_test()["team_id"] == "T1"
    assert installation.bot_refresh_token is not None
    with pytest.raises(SlackApiError) as reused:
        refresh(fake, installation.bot_refresh_token)
    assert slack_error(reused) == "invalid_refresh_token"
    with pytest.raises(SlackTokenRotationError):
        rotator(fake).perform_bot_token_rotation(bot=installation.to_bot(), minutes_before_expiration=60 * 24)
    assert fake.refreshes("T1") == 2


def test_refresh_calls_are_recorded_with_grant_type_and_no_secrets(fake: FakeSlack) -> None:
    """The recorded call shows grant_type and the workspace, never the refresh token or client secret."""
    answer = fake.install("T2")
    refreshed = refresh(fake, answer["refresh_token"])
    [call] = fake.calls("oauth.v2.access")
    assert (call.ok, call.team_id, call.params["grant_type"]) == (True, "T2", "refresh_token")
    assert call.params["refresh_token"] == "(redacted)"
    recorded = repr(fake.calls())
    for secret in (CLIENT_SECRET, answer["refresh_token"], refreshed["refresh_token"], refreshed["access_token"]):
        assert secret not in recorded
    assert (refreshed["token_type"], refreshed["team"]["id"], refreshed["bot_user_id"]) == (
        "bot",
        "T2",
        fake.workspace("T2").bot_user_id,
    )


def test_an_expired_token_answers_token_expired() -> None:
    """Past token_ttl an access token is token_expired; a refresh brings a working one."""
    with FakeSlack(
        signing_secret=SECRET, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, token_rotation=True, token_ttl=0.3
    ) as fake:
        answer = fake.install("T1")
        client = WebClient(token=answer["access_token"], base_url=fake.api_url)
        assert client.auth_test()["ok"] is True
        time.sleep(0.4)
        with pytest.raises(SlackApiError) as expired:
            client.chat_postMessage(channel="C1", text="late")
        assert slack_error(expired) == "token_expired"
        assert fake.tokens("T1") == []
        fresh = refresh(fake, answer["refresh_token"])
        assert WebClient(token=fresh["access_token"], base_url=fake.api_url).auth_test()["team_id"] == "T1"


def test_expire_tokens_ends_a_tokens_life_at_once(fake: FakeSlack) -> None:
    """expire_tokens makes a workspace's access tokens expire now (no sleeping in tests)."""
    token = fake.install("T1")["access_token"]
    assert fake.expire_tokens("T1") == 1
    with pytest.raises(SlackApiError) as expired:
        WebClient(token=token, base_url=fake.api_url).auth_test()
    assert slack_error(expired) == "token_expired"


def test_other_grant_types_are_refused(fake: FakeSlack) -> None:
    """A grant_type other than authorization_code / refresh_token is invalid_grant_type."""
    with pytest.raises(SlackApiError) as refused:
        WebClient(base_url=fake.api_url).oauth_v2_access(
            client_id=CLIENT_ID, client_secret=CLIENT_SECRET, grant_type="password"
        )
    assert slack_error(refused) == "invalid_grant_type"


def test_auth_revoke_kills_the_calling_token_and_its_refresh_token(fake: FakeSlack) -> None:
    """auth.revoke answers revoked: true; the token is token_revoked and cannot be refreshed."""
    answer = fake.install("T1")
    client = WebClient(token=answer["access_token"], base_url=fake.api_url)
    assert client.auth_revoke(test=True)["revoked"] is False
    assert client.auth_test()["ok"] is True
    assert client.auth_revoke()["revoked"] is True
    with pytest.raises(SlackApiError) as revoked:
        client.auth_test()
    with pytest.raises(SlackApiError) as no_refresh:
        refresh(fake, answer["refresh_token"])
    assert (slack_error(revoked), slack_error(no_refresh)) == ("token_revoked", "invalid_refresh_token")


def test_revoke_workspace_kills_every_token_of_that_workspace_only(fake: FakeSlack) -> None:
    """An uninstall: all of T1's tokens (old, new, user) die; T2's keep working."""
    first = fake.install("T1", user_scopes=["search:read"])
    second = fake.install("T1")
    other = fake.install("T2")
    assert fake.revoke_workspace("T1") == 3
    for token in (first["access_token"], first["authed_user"]["access_token"], second["access_token"]):
        with pytest.raises(SlackApiError) as revoked:
            WebClient(token=token, base_url=fake.api_url).auth_test()
        assert slack_error(revoked) == "token_revoked"
    with pytest.raises(SlackApiError) as no_refresh:
        refresh(fake, second["refresh_token"])
    assert slack_error(no_refresh) == "invalid_refresh_token"
    assert fake.tokens("T1") == [] and fake.tokens("T2") == [other["access_token"]]
    with pytest.raises(LookupError):
        fake.token_of("T1")
    reinstalled = fake.install("T1")
    assert WebClient(token=reinstalled["access_token"], base_url=fake.api_url).auth_test()["team_id"] == "T1"


def test_the_single_workspace_token_can_be_revoked_too() -> None:
    """auth.revoke with the legacy bot_token makes it token_revoked."""
    with FakeSlack(signing_secret=SECRET, bot_token="xoxb-legacy") as fake:
        client = WebClient(token="xoxb-legacy", base_url=fake.api_url)
        assert client.auth_revoke()["revoked"] is True
        with pytest.raises(SlackApiError) as revoked:
            client.chat_postMessage(channel="C1", text="gone")
        assert slack_error(revoked) == "token_revoked"


def test_incoming_webhooks_are_served_by_the_fake_until_uninstall(fake: FakeSlack) -> None:
    """The incoming-webhook scope gives a URL on the fake that posts in the workspace's channel."""
    hook = fake.install("T1", scopes=["incoming-webhook", "chat:write"])["incoming_webhook"]
    assert hook["url"].startswith(f"{fake.base_url}/services/T1/") and hook["channel_id"] == "C1"
    assert WebhookClient(hook["url"]).send(text="from the hook").body == "ok"
    assert [(m["kind"], m["team_id"], m["channel"]) for m in fake.messages] == [("incoming_webhook", "T1", "C1")]
    unknown = WebhookClient(f"{fake.base_url}/services/T1/B1/never-issued").send(text="x")
    fake.revoke_workspace("T1")
    revoked = WebhookClient(hook["url"]).send(text="after uninstall")
    assert (unknown.status_code, unknown.body) == (404, "no_service")
    assert (revoked.status_code, revoked.body) == (403, "invalid_token")


def test_a_code_expires_after_ten_minutes() -> None:
    """An authorization code older than 10 minutes is invalid_code (clock moved, not slept)."""
    now = [1000.0]
    accounts = Accounts(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        app_id="A1",
        token_rotation=False,
        token_ttl=60,
        clock=lambda: now[0],
    )
    fresh = accounts.issue_code("T1", scopes="commands", user_scopes="", redirect_uri=None, is_enterprise_install=False)
    stale = accounts.issue_code("T1", scopes="commands", user_scopes="", redirect_uri=None, is_enterprise_install=False)
    now[0] += 599
    assert accounts.exchange_code(fresh, redirect_uri=None, default_redirect_uri=None)["team"]["id"] == "T1"
    now[0] += 2
    with pytest.raises(SlackError) as expired:
        accounts.exchange_code(stale, redirect_uri=None, default_redirect_uri=None)
    assert expired.value.error == "invalid_code"
