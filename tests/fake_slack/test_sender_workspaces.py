"""SlackSender and workspaces: team-bound triggers, the bot's ids, lifecycle events, the install dance."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.oauth import AuthorizeUrlGenerator
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from example_project.fake_slack import FakeSlack, SlackSender

SECRET = "fake-slack-sender-signing-secret"
CLIENT_ID = "8888888888.9999999999"
CLIENT_SECRET = "sender-client-secret"
MODAL: dict[str, Any] = {"type": "modal", "title": {"type": "plain_text", "text": "Hi"}, "blocks": []}


@dataclass
class InstallingApp:
    """A tiny app with an install URL and an OAuth redirect, exchanging codes at the fake."""

    fake: FakeSlack
    base_url: str = ""
    link_page: bool = False
    installed: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def install_url(self) -> str:
        """Where a user starts installing."""
        return f"{self.base_url}/slack/install/"

    @property
    def redirect_uri(self) -> str:
        """The OAuth redirect."""
        return f"{self.base_url}/slack/oauth_redirect/"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    """A running fake with two workspaces."""
    with FakeSlack(signing_secret=SECRET, client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as server:
        server.add_workspace("T1", channels=["C1"])
        server.add_workspace("T2", enterprise_id="E2")
        yield server


@pytest.fixture
def app(fake: FakeSlack) -> Iterator[InstallingApp]:
    """The installing app on loopback: state in a cookie, code exchanged with slack_sdk."""
    state = InstallingApp(fake=fake)

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
            data = body.encode()
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - http.server naming
            parts = urlsplit(self.path)
            query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
            if parts.path == "/slack/install/":
                oauth_state = secrets.token_urlsafe(8)
                url = AuthorizeUrlGenerator(
                    client_id=CLIENT_ID,
                    redirect_uri=state.redirect_uri,
                    scopes=["commands", "chat:write"],
                    authorization_url=fake.authorize_url,
                ).generate(oauth_state)
                cookie = {"Set-Cookie": f"oauth-state={oauth_state}; Path=/"}
                if state.link_page:
                    self._reply(200, f'<html><a href="{url.replace("&", "&amp;")}">Add to Slack</a></html>', cookie)
                else:
                    self._reply(302, "", {"Location": url, **cookie})
            elif parts.path == "/slack/oauth_redirect/":
                if self.headers.get("Cookie") != f"oauth-state={query.get('state')}":
                    self._reply(400, "state mismatch")
                elif "error" in query:
                    self._reply(200, f"cancelled: {query['error']}")
                else:
                    answer = WebClient(base_url=fake.api_url).oauth_v2_access(
                        client_id=CLIENT_ID,
                        client_secret=CLIENT_SECRET,
                        code=query["code"],
                        redirect_uri=state.redirect_uri,
                    )
                    state.installed.append(dict(answer.data))  # type: ignore[arg-type]
                    team = answer["team"]["id"] if answer["team"] else answer["enterprise"]["id"]
                    self._reply(302, "", {"Location": f"/slack/installed/?team={team}"})
            elif parts.path == "/slack/installed/":
                self._reply(200, f"installed {query['team']}")
            else:
                self._reply(404)

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {key.lower(): value for key, value in self.headers.items()}
            if not SignatureVerifier(SECRET).is_valid_request(body, headers):
                self._reply(401, "bad signature")
            elif headers.get("content-type") == "application/json":
                state.events.append(json.loads(body))
                self._reply(200)
            else:
                self._reply(200)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            """Stay quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def sender(fake: FakeSlack, app: InstallingApp) -> SlackSender:
    """A sender driving the fake over HTTP and posting events to the app."""
    return SlackSender(fake=fake.base_url, signing_secret=SECRET, target_url=f"{app.base_url}/slack/events")


def test_authorize_installs_through_the_apps_redirects(
    fake: FakeSlack, app: InstallingApp, sender: SlackSender
) -> None:
    """authorize follows install URL -> consent (team=T1) -> the app's redirect -> its success page."""
    final = sender.authorize(app.install_url, team_id="T1")
    assert (final.status_code, final.text) == (200, "installed T1")
    [answer] = app.installed
    assert answer["team"]["id"] == "T1" and fake.token_of("T1") == answer["access_token"]


def test_authorize_can_cancel_and_install_org_wide(fake: FakeSlack, app: InstallingApp, sender: SlackSender) -> None:
    """deny=True brings access_denied back to the app; enterprise=True makes an org-wide install."""
    cancelled = sender.authorize(app.install_url, team_id="T1", deny=True)
    assert cancelled.text == "cancelled: access_denied" and app.installed == []
    org = sender.authorize(app.install_url, team_id="T2", enterprise=True)
    assert org.text == "installed E2" and app.installed[0]["is_enterprise_install"] is True


def test_authorize_follows_an_install_page_link(fake: FakeSlack, app: InstallingApp, sender: SlackSender) -> None:
    """An install page with an "Add to Slack" link works like a redirect."""
    app.link_page = True
    assert sender.authorize(app.install_url, team_id="T1").text == "installed T1"


def test_authorize_refuses_an_install_url_that_does_not_lead_to_the_fake(
    app: InstallingApp, sender: SlackSender
) -> None:
    """An install URL leading elsewhere is a ValueError naming it, not a request to the real Slack."""
    with pytest.raises(ValueError, match="without leading to the fake's consent screen"):
        sender.authorize(f"{app.base_url}/nowhere/", team_id="T1")


def test_triggers_and_response_urls_belong_to_the_payloads_workspace(fake: FakeSlack, sender: SlackSender) -> None:
    """A click in T1 carries a trigger only T1's token may exchange, and T1's bot in the message."""
    one = WebClient(token=fake.install("T1")["access_token"], base_url=fake.api_url)
    two = WebClient(token=fake.install("T2")["access_token"], base_url=fake.api_url)
    sent = sender.click_button(team_id="T1", action_id="go")
    with pytest.raises(SlackApiError) as refused:
        two.views_open(trigger_id=sent.trigger_id, view=MODAL)
    assert refused.value.response["error"] == "invalid_trigger_id"
    assert one.views_open(trigger_id=sent.trigger_id, view=MODAL)["ok"] is True
    assert sent.status == 200 and sent.payload["message"]["user"] == fake.workspace("T1").bot_user_id
    assert sent.response_url is not None and WebhookClient(sent.response_url).send(text="done").body == "ok"
    command = sender.slash_command(team_id="T2", command="/x")
    assert command.status == 200 and command.response_url is not None
    assert WebhookClient(command.response_url).send(text="done").body == "ok"
    assert [message["team_id"] for message in fake.messages] == ["T1", "T2"]


def test_events_name_the_workspaces_bot(fake: FakeSlack, app: InstallingApp, sender: SlackSender) -> None:
    """event_callback authorizations name the workspace's bot user; unknown workspaces get the default."""
    sender.event(team_id="T2", event_type="app_mention")
    sender.event(team_id="T404", event_type="app_mention")
    assert app.events[0]["authorizations"][0]["user_id"] == fake.workspace("T2").bot_user_id
    assert app.events[1]["authorizations"][0]["user_id"] == "U0FAKEBOT1"


def test_lifecycle_events_have_slacks_shapes(fake: FakeSlack, app: InstallingApp, sender: SlackSender) -> None:
    """app_uninstalled and tokens_revoked are signed event_callbacks shaped like Slack's."""
    bot_user = fake.workspace("T1").bot_user_id
    sender.app_uninstalled("T1")
    sender.tokens_revoked("T1", bot_user_ids=[bot_user], user_ids=["U0INSTALL"])
    sent = sender.tokens_revoked("T2", user_ids=["U7"], enterprise_id="E2")
    assert sent.status == 200
    uninstalled, revoked, user_only = app.events
    assert (uninstalled["type"], uninstalled["team_id"], uninstalled["event"]["type"]) == (
        "event_callback",
        "T1",
        "app_uninstalled",
    )
    assert revoked["event"]["type"] == "tokens_revoked"
    assert revoked["event"]["tokens"] == {"oauth": ["U0INSTALL"], "bot": [bot_user]}
    assert user_only["event"]["tokens"] == {"oauth": ["U7"]} and user_only["enterprise_id"] == "E2"
    with pytest.raises(ValueError):
        sender.tokens_revoked("T1")
