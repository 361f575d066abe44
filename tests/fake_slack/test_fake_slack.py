"""Tests for the fake Slack: the Web API/response_url server and the signed-request sender."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from example_project.fake_slack import FakeSlack, SlackSender

SECRET = "fake-slack-tests-signing-secret"
TOKEN = "xoxb-fake-slack-tests"
REPO_ROOT = Path(__file__).resolve().parents[2]


def modal(title: str = "Loading...", *, external_id: str | None = None, text: str = "Working on it") -> dict[str, Any]:
    """A minimal valid modal view."""
    view: dict[str, Any] = {
        "type": "modal",
        "title": {"type": "plain_text", "text": title},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }
    if external_id is not None:
        view["external_id"] = external_id
    return view


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    """A running FakeSlack with the default 3 s trigger TTL."""
    with FakeSlack(signing_secret=SECRET, bot_token=TOKEN) as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> WebClient:
    """A slack_sdk WebClient pointed at the fake."""
    return WebClient(token=TOKEN, base_url=fake.api_url)


# -- views.open and triggers -------------------------------------------------------------


def test_views_open_with_fresh_trigger_returns_view(fake: FakeSlack, client: WebClient) -> None:
    """A fresh trigger opens a modal; the answer and the record carry id, hash, external_id."""
    trigger_id = fake.issue_trigger()
    response = client.views_open(trigger_id=trigger_id, view=modal(external_id="ext-1"))
    view = response["view"]
    assert response["ok"] is True
    assert view["id"].startswith("V")
    assert view["hash"]
    assert view["external_id"] == "ext-1"
    assert view["state"] == {"values": {}}
    assert view["root_view_id"] == view["id"]
    assert fake.views[view["id"]]["title"]["text"] == "Loading..."
    assert fake.view_by_external_id("ext-1")["id"] == view["id"]
    [call] = fake.calls("views.open")
    assert call.ok and call.error is None and call.params["trigger_id"] == trigger_id
    assert call.wall == pytest.approx(time.time(), abs=5)


def test_views_open_accepts_form_encoded_view_string(fake: FakeSlack, client: WebClient) -> None:
    """A form-encoded call with the view as a JSON string works too."""
    response = client.api_call(
        "views.open", params={"trigger_id": fake.issue_trigger(), "view": json.dumps(modal("Form"))}
    )
    assert response["view"]["title"]["text"] == "Form"


def test_same_trigger_twice_is_exchanged(fake: FakeSlack, client: WebClient) -> None:
    """A trigger works once; the second views.open is exchanged_trigger_id."""
    trigger_id = fake.issue_trigger()
    client.views_open(trigger_id=trigger_id, view=modal())
    with pytest.raises(SlackApiError) as excinfo:
        client.views_open(trigger_id=trigger_id, view=modal())
    assert excinfo.value.response["error"] == "exchanged_trigger_id"
    assert len(fake.errors("exchanged_trigger_id")) == 1
    assert len(fake.views) == 1


def test_trigger_older_than_ttl_is_expired() -> None:
    """A trigger older than trigger_ttl is expired_trigger_id."""
    with FakeSlack(signing_secret=SECRET, bot_token=TOKEN, trigger_ttl=0.2) as short:
        short_client = WebClient(token=TOKEN, base_url=short.api_url)
        trigger_id = short.issue_trigger()
        time.sleep(0.3)
        with pytest.raises(SlackApiError) as excinfo:
            short_client.views_open(trigger_id=trigger_id, view=modal())
        assert excinfo.value.response["error"] == "expired_trigger_id"
        assert short.views == {}


def test_unknown_trigger_is_invalid(client: WebClient) -> None:
    """A trigger the fake never issued is invalid_trigger_id."""
    with pytest.raises(SlackApiError) as excinfo:
        client.views_open(trigger_id="12345.98765.abcd2358fdea", view=modal())
    assert excinfo.value.response["error"] == "invalid_trigger_id"


def test_rejected_view_does_not_consume_trigger(fake: FakeSlack, client: WebClient) -> None:
    """A call refused for its view leaves the trigger usable (inferred behaviour)."""
    trigger_id = fake.issue_trigger()
    with pytest.raises(SlackApiError) as excinfo:
        client.views_open(trigger_id=trigger_id, view={"type": "home", "blocks": []})
    assert excinfo.value.response["error"] == "invalid_arguments"
    assert client.views_open(trigger_id=trigger_id, view=modal())["ok"] is True


def test_duplicate_external_id_is_refused(fake: FakeSlack, client: WebClient) -> None:
    """external_id is unique across open views."""
    client.views_open(trigger_id=fake.issue_trigger(), view=modal(external_id="same"))
    with pytest.raises(SlackApiError) as excinfo:
        client.views_open(trigger_id=fake.issue_trigger(), view=modal(external_id="same"))
    assert excinfo.value.response["error"] == "duplicate_external_id"


# -- views.update and views.push -----------------------------------------------------------


def test_views_update_by_external_id(fake: FakeSlack, client: WebClient) -> None:
    """views.update by external_id replaces the view and changes its hash."""
    opened = client.views_open(trigger_id=fake.issue_trigger(), view=modal(external_id="ticket-7"))["view"]
    updated = client.views_update(external_id="ticket-7", view=modal("Resolved", text="Done"))["view"]
    assert updated["id"] == opened["id"]
    assert updated["external_id"] == "ticket-7"
    assert updated["hash"] != opened["hash"]
    assert fake.view_by_external_id("ticket-7")["blocks"][0]["text"]["text"] == "Done"


def test_views_update_by_view_id(fake: FakeSlack, client: WebClient) -> None:
    """views.update by view_id with the current hash succeeds."""
    opened = client.views_open(trigger_id=fake.issue_trigger(), view=modal())["view"]
    updated = client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal("Second"))["view"]
    assert fake.views[opened["id"]]["title"]["text"] == "Second"
    assert fake.views[opened["id"]]["hash"] == updated["hash"]


def test_views_update_with_stale_hash_conflicts(fake: FakeSlack, client: WebClient) -> None:
    """A stale hash is hash_conflict and leaves the view alone."""
    opened = client.views_open(trigger_id=fake.issue_trigger(), view=modal())["view"]
    client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal("First update"))
    with pytest.raises(SlackApiError) as excinfo:
        client.views_update(view_id=opened["id"], hash=opened["hash"], view=modal("Lost update"))
    assert excinfo.value.response["error"] == "hash_conflict"
    assert fake.views[opened["id"]]["title"]["text"] == "First update"


def test_views_update_needs_a_known_view(client: WebClient) -> None:
    """No id is invalid_arguments; an unknown id is not_found."""
    with pytest.raises(SlackApiError) as missing:
        client.api_call("views.update", json={"view": modal()})
    with pytest.raises(SlackApiError) as unknown:
        client.views_update(external_id="nobody", view=modal())
    assert missing.value.response["error"] == "invalid_arguments"
    assert unknown.value.response["error"] == "not_found"


def test_views_push_stack_is_limited_to_three(fake: FakeSlack, client: WebClient) -> None:
    """Pushes stack on the root up to 3 views; a trigger from a message cannot push."""
    root = client.views_open(trigger_id=fake.issue_trigger(), view=modal("Root"))["view"]
    second = client.views_push(trigger_id=fake.issue_trigger(view_id=root["id"]), view=modal("Two"))["view"]
    third = client.views_push(trigger_id=fake.issue_trigger(view_id=second["id"]), view=modal("Three"))["view"]
    assert (second["root_view_id"], second["previous_view_id"]) == (root["id"], root["id"])
    assert (third["root_view_id"], third["previous_view_id"]) == (root["id"], second["id"])
    with pytest.raises(SlackApiError) as limited:
        client.views_push(trigger_id=fake.issue_trigger(view_id=third["id"]), view=modal("Four"))
    with pytest.raises(SlackApiError) as no_modal:
        client.views_push(trigger_id=fake.issue_trigger(), view=modal("Orphan"))
    assert limited.value.response["error"] == "push_limit_reached"
    assert no_modal.value.response["error"] == "not_found"


# -- chat.*, auth ------------------------------------------------------------------------


def test_chat_methods_store_messages(fake: FakeSlack, client: WebClient) -> None:
    """chat.postMessage/update/postEphemeral answer like Slack and are stored."""
    posted = client.chat_postMessage(channel="C1", text="hello")
    updated = client.chat_update(channel="C1", ts=posted["ts"], text="hello again")
    ephemeral = client.chat_postEphemeral(channel="C1", user="U1", text="psst")
    with pytest.raises(SlackApiError) as no_text:
        client.api_call("chat.postMessage", json={"channel": "C1"})
    with pytest.raises(SlackApiError) as missing:
        client.chat_update(channel="C1", ts="1.000000", text="x")
    assert posted["message"]["text"] == "hello" and posted["channel"] == "C1"
    assert updated["ts"] == posted["ts"] and updated["text"] == "hello again"
    assert ephemeral["message_ts"]
    assert no_text.value.response["error"] == "no_text"
    assert missing.value.response["error"] == "message_not_found"
    assert [(m["kind"], m["text"]) for m in fake.messages] == [("message", "hello again"), ("ephemeral", "psst")]


def test_auth_test_and_bad_tokens(fake: FakeSlack, client: WebClient) -> None:
    """auth.test works with the bot token; wrong or missing tokens are refused."""
    assert client.auth_test()["bot_id"] == fake.bot_id
    with pytest.raises(SlackApiError) as bad:
        WebClient(token="xoxb-wrong", base_url=fake.api_url).auth_test()
    with pytest.raises(SlackApiError) as none:
        WebClient(base_url=fake.api_url).auth_test()
    assert bad.value.response["error"] == "invalid_auth"
    assert none.value.response["error"] == "not_authed"
    assert [call.error for call in fake.calls("auth.test")] == [None, "invalid_auth", "not_authed"]


# -- response_url --------------------------------------------------------------------------


def test_response_url_allows_five_uses_then_refuses(fake: FakeSlack) -> None:
    """A response_url takes five posts, then answers 404 used_url."""
    webhook = WebhookClient(fake.issue_response_url(channel_id="C1"))
    answers = [webhook.send(text=f"update {n}", replace_original=True) for n in range(6)]
    assert [(a.status_code, a.body) for a in answers[:5]] == [(200, "ok")] * 5
    assert (answers[5].status_code, answers[5].body) == (404, "used_url")
    assert [m["text"] for m in fake.messages] == [f"update {n}" for n in range(5)]
    assert fake.messages[0]["replace_original"] is True
    assert len(fake.errors("used_url")) == 1


def test_response_url_expires_and_unknown_urls_are_refused() -> None:
    """Old or never-issued response_urls are refused with 404."""
    with FakeSlack(signing_secret=SECRET, bot_token=TOKEN, response_url_ttl=0.2) as short:
        url = short.issue_response_url()
        time.sleep(0.3)
        expired = WebhookClient(url).send(text="late")
        unknown = WebhookClient(f"{short.base_url}/response/never-issued").send(text="hi")
        assert (expired.status_code, expired.body) == (404, "expired_url")
        assert (unknown.status_code, unknown.body) == (404, "no_service")
        assert short.messages == []


# -- rate limiting ---------------------------------------------------------------------------


def test_429_is_retried_by_rate_limit_handler(fake: FakeSlack) -> None:
    """RateLimitErrorRetryHandler waits Retry-After and the retry succeeds."""
    client = WebClient(
        token=TOKEN, base_url=fake.api_url, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)]
    )
    fake.fail_next("chat.postMessage", retry_after=1)
    response = client.chat_postMessage(channel="C1", text="eventually")
    first, second = fake.calls("chat.postMessage")
    assert response["ok"] is True
    assert (first.error, second.error) == ("ratelimited", None)
    assert second.at - first.at >= 1.0


def test_429_surfaces_as_slack_api_error_without_handler(fake: FakeSlack, client: WebClient) -> None:
    """Without a handler a 429 is a SlackApiError carrying Retry-After."""
    fake.fail_next("views.update", retry_after=7, count=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as excinfo:
            client.views_update(external_id="x", view=modal())
        assert excinfo.value.response.status_code == 429
        assert excinfo.value.response.headers["Retry-After"] == "7"
        assert excinfo.value.response["error"] == "ratelimited"
    with pytest.raises(SlackApiError) as after:
        client.views_update(external_id="x", view=modal())
    assert after.value.response["error"] == "not_found"


# -- HTTP inspection endpoints ---------------------------------------------------------------


def test_http_inspection_and_control_endpoints(fake: FakeSlack, client: WebClient) -> None:
    """The /_fake/ endpoints issue, inspect, inject faults and reset over HTTP."""
    base = f"{fake.base_url}/_fake"
    trigger_id = requests.post(f"{base}/trigger", json={}, timeout=5).json()["trigger_id"]
    view = client.views_open(trigger_id=trigger_id, view=modal(external_id="e-1"))["view"]
    calls = requests.get(f"{base}/calls", params={"method": "views.open"}, timeout=5).json()
    views = requests.get(f"{base}/views", timeout=5).json()
    by_external = requests.get(f"{base}/views", params={"external_id": "e-1"}, timeout=5).json()
    assert [(c["method"], c["ok"], c["params"]["trigger_id"]) for c in calls] == [("views.open", True, trigger_id)]
    assert list(views) == [view["id"]] and by_external["hash"] == view["hash"]

    url = requests.post(f"{base}/response_url", json={"channel_id": "C9"}, timeout=5).json()["response_url"]
    assert WebhookClient(url).send(text="via http").body == "ok"
    assert requests.get(f"{base}/messages", timeout=5).json()[0]["channel"] == "C9"

    fail = {"method": "auth.test", "status": 429, "retry_after": 3, "count": 1}
    assert requests.post(f"{base}/fail_next", json=fail, timeout=5).json() == {"ok": True}
    limited = requests.post(f"{fake.api_url}auth.test", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
    assert (limited.status_code, limited.headers["Retry-After"], limited.json()["error"]) == (429, "3", "ratelimited")

    assert requests.post(f"{base}/reset", timeout=5).json() == {"ok": True}
    assert requests.get(f"{base}/calls", timeout=5).json() == []
    assert fake.views == {} and fake.messages == []


def test_runs_as_a_process_until_sigterm() -> None:
    """python -m example_project.fake_slack serves, prints its URL, exits 0 on SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, "-m", "example_project.fake_slack", "--port", "0"]
        + ["--signing-secret", SECRET, "--bot-token", TOKEN],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("fake-slack listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[1]
        assert WebClient(token=TOKEN, base_url=f"{base_url}/api/").auth_test()["ok"] is True
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


# -- SlackSender ------------------------------------------------------------------------------


@dataclass
class Received:
    """One request the recording app received."""

    path: str
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, str]:
        """The form-encoded body as a dict."""
        return {key: values[-1] for key, values in parse_qs(self.body.decode(), keep_blank_values=True).items()}

    def payload(self) -> dict[str, Any]:
        """The JSON in an interaction's ``payload`` form field."""
        parsed: dict[str, Any] = json.loads(self.form()["payload"])
        return parsed


@dataclass
class RecordingApp:
    """A tiny stdlib HTTP app that records what it receives and answers 200."""

    url: str
    received: list[Received] = field(default_factory=list)
    answer: bytes = b""

    @property
    def last(self) -> Received:
        """The most recent request."""
        return self.received[-1]


@pytest.fixture
def app() -> Iterator[RecordingApp]:
    """A recording app on 127.0.0.1 with an ephemeral port."""
    recorder = RecordingApp(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            recorder.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Length", str(len(recorder.answer)))
            self.end_headers()
            self.wfile.write(recorder.answer)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            """Stay quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}/slack/events"
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def sender(fake: FakeSlack, app: RecordingApp) -> SlackSender:
    """A SlackSender that talks to the fake over HTTP, like one in another process would."""
    return SlackSender(fake=fake.base_url, signing_secret=SECRET, target_url=app.url)


def assert_signed(received: Received) -> None:
    """The request verifies with slack_sdk's SignatureVerifier."""
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid(
        body=received.body,
        timestamp=received.headers["x-slack-request-timestamp"],
        signature=received.headers["x-slack-signature"],
    )
    assert verifier.is_valid_request(received.body, received.headers)


def test_sign_matches_slack_documented_vector() -> None:
    """sign() reproduces the known-answer vector from Slack's documentation."""
    documented = SlackSender(
        fake="http://127.0.0.1:1", signing_secret="8f742231b10e8888abcd99yyyzzz85a5", target_url=""
    )
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
        b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
        b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    assert documented.sign(body, "1531420618") == "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_click_button_sends_signed_block_actions(
    fake: FakeSlack, client: WebClient, app: RecordingApp, sender: SlackSender
) -> None:
    """click_button posts a signed block_actions whose trigger and response_url work."""
    sent = sender.click_button(team_id="T1", action_id="resolve_dialog", value="42", enterprise_id="E1")
    received = app.last
    payload = received.payload()
    assert sent.status == 200 and sent.elapsed_ms > 0
    assert received.headers["content-type"] == "application/x-www-form-urlencoded"
    assert_signed(received)
    assert payload == sent.payload
    assert payload["type"] == "block_actions" and payload["api_app_id"] == "A0APP0001"
    assert (payload["team"]["id"], payload["enterprise"]["id"]) == ("T1", "E1")
    assert payload["actions"][0]["action_id"] == "resolve_dialog" and payload["actions"][0]["value"] == "42"
    assert payload["container"]["type"] == "message" and payload["container"]["channel_id"] == "C0CHAN001"
    assert (payload["trigger_id"], payload["response_url"]) == (sent.trigger_id, sent.response_url)
    assert client.views_open(trigger_id=sent.trigger_id, view=modal())["ok"] is True
    assert sent.response_url is not None and WebhookClient(sent.response_url).send(text="done").body == "ok"


def test_triggers_from_sender_expire_at_the_fake(app: RecordingApp) -> None:
    """Triggers issued for the sender over HTTP expire at the fake."""
    with FakeSlack(signing_secret=SECRET, bot_token=TOKEN, trigger_ttl=0.2) as short:
        sent = short.sender(app.url).click_button(team_id="T1", action_id="slow")
        time.sleep(0.3)
        with pytest.raises(SlackApiError) as excinfo:
            WebClient(token=TOKEN, base_url=short.api_url).views_open(trigger_id=sent.trigger_id, view=modal())
        assert excinfo.value.response["error"] == "expired_trigger_id"


def test_button_in_modal_gives_push_trigger_and_no_response_url(
    fake: FakeSlack, client: WebClient, app: RecordingApp, sender: SlackSender
) -> None:
    """A click inside a modal has a view container, a push trigger, no response_url."""
    root = client.views_open(trigger_id=fake.issue_trigger(), view=modal())["view"]
    sent = sender.click_button(team_id="T1", action_id="more", view_id=root["id"], private_metadata="org=5")
    payload = app.last.payload()
    assert sent.response_url is None and "response_url" not in payload
    assert payload["container"] == {"type": "view", "view_id": root["id"]}
    assert payload["view"]["private_metadata"] == "org=5"
    assert client.views_push(trigger_id=sent.trigger_id, view=modal("Pushed"))["view"]["root_view_id"] == root["id"]


def test_slash_command_is_form_encoded_and_signed(app: RecordingApp, sender: SlackSender) -> None:
    """slash_command sends Slack's form fields, signed."""
    sent = sender.slash_command(team_id="T2", command="/ticket", text="payload please", enterprise_id="E2")
    form = app.last.form()
    assert_signed(app.last)
    assert "payload" not in form
    assert (form["command"], form["text"], form["team_id"], form["enterprise_id"]) == (
        "/ticket",
        "payload please",
        "T2",
        "E2",
    )
    assert (form["trigger_id"], form["response_url"]) == (sent.trigger_id, sent.response_url)
    assert form["api_app_id"] == "A0APP0001"


def test_event_callback_with_retry_headers(app: RecordingApp, sender: SlackSender) -> None:
    """event sends a signed event_callback, retry headers only when asked."""
    first = sender.event(team_id="T3", event_type="app_mention", event={"text": "<@U0FAKEBOT1> hi"})
    retry = sender.event(
        team_id="T3",
        event_type="app_mention",
        event_id=first.payload["event_id"],
        retry_num=1,
        retry_reason="http_timeout",
    )
    other = sender.event(team_id="T3", event_type="app_mention")
    body = json.loads(app.received[0].body)
    assert_signed(app.received[1])
    assert app.received[0].headers["content-type"] == "application/json"
    assert (body["type"], body["event"]["type"]) == ("event_callback", "app_mention")
    assert body["event"]["text"] == "<@U0FAKEBOT1> hi"
    assert body["authorizations"][0]["team_id"] == "T3"
    assert "x-slack-retry-num" not in app.received[0].headers
    assert (app.received[1].headers["x-slack-retry-num"], app.received[1].headers["x-slack-retry-reason"]) == (
        "1",
        "http_timeout",
    )
    assert retry.payload["event_id"] == first.payload["event_id"] != other.payload["event_id"]


def test_view_submission_carries_the_fakes_view(
    fake: FakeSlack, client: WebClient, app: RecordingApp, sender: SlackSender
) -> None:
    """submit_view carries the fake's view (id, hash) and the submitted state."""
    opened = client.views_open(trigger_id=fake.issue_trigger(), view=modal(external_id="form-1"))["view"]
    sender.submit_view(
        team_id="T4", callback_id="ticket_form", values={"title": {"title_input": "Broken"}}, external_id="form-1"
    )
    payload = app.last.payload()
    assert_signed(app.last)
    assert payload["type"] == "view_submission"
    assert (payload["view"]["id"], payload["view"]["hash"]) == (opened["id"], opened["hash"])
    assert payload["view"]["callback_id"] == "ticket_form"
    state = payload["view"]["state"]["values"]
    assert state["title"]["title_input"] == {"type": "plain_text_input", "value": "Broken"}


def test_other_payload_kinds_are_real_shaped_and_signed(app: RecordingApp, sender: SlackSender) -> None:
    """block_suggestion, shortcut, url_verification and ssl_check are shaped and signed."""
    sender.options_load(team_id="T5", action_id="pick_project", value="sil", private_metadata="org=1")
    suggestion = app.last.payload()
    assert_signed(app.last)
    sender.shortcut(team_id="T5", callback_id="new_ticket")
    shortcut = app.last.payload()
    verification = sender.url_verification()
    assert_signed(app.last)
    sender.ssl_check()
    assert_signed(app.last)
    assert suggestion["type"] == "block_suggestion"
    assert (suggestion["action_id"], suggestion["value"]) == ("pick_project", "sil")
    assert suggestion["view"]["private_metadata"] == "org=1"
    assert (shortcut["type"], shortcut["callback_id"], "response_url" in shortcut) == ("shortcut", "new_ticket", False)
    assert verification.payload["type"] == "url_verification" and verification.payload["challenge"]
    ssl_form = app.last.form()
    assert set(ssl_form) == {"ssl_check", "token"} and ssl_form["ssl_check"] == "1"


def test_send_raw_can_send_bad_or_missing_signatures(app: RecordingApp, sender: SlackSender) -> None:
    """send_raw signs by default and can send bad, stale or missing signatures."""
    app.answer = b"recorded"
    good = sender.send_raw(b"a=1", content_type="application/x-www-form-urlencoded")
    assert_signed(app.last)
    sender.send_raw(b"a=1", content_type="application/x-www-form-urlencoded", signature="v0=" + "0" * 64)
    assert not SignatureVerifier(SECRET).is_valid_request(app.last.body, app.last.headers)
    sender.send_raw(b"{}", content_type="application/json", timestamp=str(int(time.time()) - 600))
    assert not SignatureVerifier(SECRET).is_valid_request(app.last.body, app.last.headers)
    sender.send_raw(b"{}", content_type="application/json", extra_headers={"X-Slack-Signature": None})
    assert "x-slack-signature" not in app.last.headers
    assert good.body == b"recorded" and good.status == 200
