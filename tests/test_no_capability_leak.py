"""No capability or secret reaches Sentry or a log line, through Django's real WSGI handler.

sentry-sdk is initialised as the README recommends (DjangoIntegration, CeleryIntegration,
``traces_sampler``, ``before_send``, ``before_send_transaction``) with the capture
transport of ``tests/sentry_capture.py``. Signed Slack requests go over loopback HTTP to a live
server (``WSGIHandler``, which sentry-sdk patches; Django's test client bypasses it)
and through the demo's kinds of flow: a click with the Loading modal, a slash command,
an event, an options load and a handler that raises. Envelopes are posted to the
region's endpoint too, with the trace headers an attempt sends: one whose handler
raises with capabilities at hand, one forged (its refusal has a receive span).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import pytest
import requests
from django.core.handlers.wsgi import WSGIHandler

from example_project.fake_slack import FakeSlack
from silo_router import signing
from silo_router.control.models import Option
from silo_router.control.options import CONTROL_RESPONSE_ACTIONS, CONTROL_RESPONSES_ENABLED, options
from silo_router.envelope import Envelope, SealedEnvelope, seal
from silo_router.region.handlers import slack

from .sentry_capture import Captured, CaptureSentry
from .slack_signing import block_actions, block_suggestion, event_callback, interactive_body

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def recorder(capture_sentry: CaptureSentry) -> Captured:
    """sentry-sdk initialised as README recommends: Django's and Celery's integrations, the scrubbing hooks."""
    return capture_sentry(scrubbed=True, integrations="readme")


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """The access log is not under test."""


@pytest.fixture
def wsgi_url() -> Iterator[str]:
    """Django's real ``WSGIHandler`` on a loopback port (what gunicorn runs, and sentry-sdk patches)."""
    server = make_server("127.0.0.1", 0, WSGIHandler(), handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def fake(settings: Any) -> Iterator[FakeSlack]:
    with FakeSlack(signing_secret=settings.SLACK_SIGNING_SECRET, bot_token="xoxb-tests") as server:
        settings.SILO_ROUTER = {
            **settings.SILO_ROUTER,
            "SLACK": {**settings.SILO_ROUTER["SLACK"], "API_URL": server.api_url},
            "REDACTED_URL_PREFIXES": [f"{server.base_url}/response/"],
            "DELIVERY_MAX_ATTEMPTS": 1,
            "TRACES_SAMPLE_RATE": 1.0,  # sample every request: what a trace shows is under test
        }
        yield server


class Sender:
    """Signs like Slack and posts over real HTTP; remembers every capability it handed out."""

    def __init__(self, url: str, secret: str, fake: FakeSlack) -> None:
        self.url, self.secret, self.fake = url, secret, fake
        self.capabilities: list[str] = []

    def response_url(self) -> str:
        url = self.fake.issue_response_url(channel_id="C0CHAN001", user_id="U0USER001")
        self.capabilities += [url, url.rsplit("/", 1)[1]]
        return url

    def trigger(self) -> str:
        trigger_id = self.fake.issue_trigger(user_id="U0USER001")
        self.capabilities.append(trigger_id)
        return trigger_id

    def post(self, body: bytes, content_type: str) -> requests.Response:
        timestamp = str(int(time.time()))
        mac = hmac.new(self.secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256).hexdigest()
        self.capabilities.append(f"v0={mac}")
        headers = {
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": f"v0={mac}",
            "Content-Type": content_type,
        }
        return requests.post(self.url, data=body, headers=headers, timeout=30)

    def interactive(self, payload: dict[str, Any]) -> requests.Response:
        return self.post(interactive_body(payload), "application/x-www-form-urlencoded")


#: How long to wait for the replies that run after the receipts, on other threads.
REPLY_WAIT = 30.0


def post_envelope(url: str, sealed: SealedEnvelope, sender: Sender) -> requests.Response:
    """POST an envelope to the region endpoint as the http transport does, with an attempt's trace headers."""
    sender.capabilities.append(sealed.signature.rsplit("v1=", 1)[1])
    headers = {
        "Content-Type": "application/json",
        signing.HEADER: sealed.signature,
        "sentry-trace": "5b8efff798038103d269b633813fc60c-eee19b7ec3c1b174-1",
        "x-silo-router-attempt": "2",
    }
    return requests.post(url, data=sealed.body, headers=headers, timeout=30)


def archive_envelope(sender: Sender) -> Envelope:
    """A click on archive_dialog (whose handler raises), with a live response_url and trigger_id."""
    payload = {
        **block_actions(action_id="archive_dialog", trigger_id=sender.trigger()),
        "response_url": sender.response_url(),
    }
    key = "slack:click:leak-envelope"
    return Envelope(
        id=Envelope.make_id(key, "us"),
        idempotency_key=key,
        provider="slack",
        kind="block_actions:archive_dialog",
        region="us",
        body=interactive_body(payload).decode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
        strategy="async",
        organization_ids=("101",),
    )


def register_demo_handlers() -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        request.update_view({"type": "modal", "title": {"type": "plain_text", "text": "Resolved"}, "blocks": []})
        request.respond("Resolved.")

    @slack.action("archive_dialog")
    def broken(request: Any) -> None:
        url = request.inbound.response_url  # a capability in a frame local
        raise RuntimeError(f"archiving failed; would have answered {url} for {request.inbound.trigger_id}")

    @slack.command("/ticket")
    def ticket(request: Any) -> None:
        request.respond("3 open issues")

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        request.respond("hello")

    @slack.options("pick_issue")
    def pick(request: Any) -> dict[str, Any]:
        return {"options": [{"text": {"type": "plain_text", "text": "#1"}, "value": "1"}]}


def test_no_capability_in_any_envelope_or_log_line(
    wsgi_url: str,
    fake: FakeSlack,
    installations: Any,
    recorder: Captured,
    settings: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    Option.objects.update_or_create(key=CONTROL_RESPONSES_ENABLED, defaults={"value": True})
    Option.objects.update_or_create(key=CONTROL_RESPONSE_ACTIONS, defaults={"value": ["resolve_dialog"]})
    options.invalidate()
    register_demo_handlers()
    sender = Sender(f"{wsgi_url}/extensions/slack/", settings.SLACK_SIGNING_SECRET, fake)
    caplog.set_level(logging.DEBUG)

    answers = [
        sender.interactive({**block_actions(trigger_id=sender.trigger()), "response_url": sender.response_url()}),
        sender.interactive(
            {
                **block_actions(action_id="archive_dialog", trigger_id=sender.trigger()),
                "response_url": sender.response_url(),
            }
        ),
        sender.post(
            urllib.parse.urlencode(
                {
                    "token": "legacyVerificationToken01",
                    "team_id": "T0US00001",
                    "user_id": "U0USER001",
                    "channel_id": "C0CHAN001",
                    "command": "/ticket",
                    "text": "",
                    "api_app_id": "A0APP0001",
                    "response_url": sender.response_url(),
                    "trigger_id": sender.trigger(),
                }
            ).encode(),
            "application/x-www-form-urlencoded",
        ),
        sender.post(json.dumps(event_callback(event_id="EvLeak")).encode(), "application/json"),
        sender.interactive(block_suggestion()),
    ]
    assert [a.status_code for a in answers] == [200] * 5
    assert answers[-1].json()["options"][0]["value"] == "1"
    envelopes_url = f"{wsgi_url}/silo-router/envelopes/"
    failing = post_envelope(envelopes_url, seal(archive_envelope(sender)), sender)
    assert failing.status_code == 200 and json.loads(failing.content)["error"] == "handler_failed"
    sealed = seal(archive_envelope(sender))
    forged = SealedEnvelope(body=sealed.body, signature=signing.sign(sealed.body, key_id="k1", key="f" * 40))
    refused = post_envelope(envelopes_url, forged, sender)
    assert (refused.status_code, refused.json()["error"]) == (403, "signature_mismatch")
    fake.wait_for("response_url", count=2, timeout=REPLY_WAIT)
    fake.wait_for("chat.postEphemeral", timeout=REPLY_WAIT)
    assert {"event", "transaction"} <= recorder.item_types(), "the flows produced no error event or no transaction"
    assert any(b"http.client" in raw and b"/response/[redacted]" in raw for raw in recorder.serialized())
    assert any(b'"op":"silo_router.region.reply"' in raw for raw in recorder.serialized()), (
        "replies have their own spans"
    )
    spans = recorder.spans()
    assert {"silo_router.region.receive", "silo_router.region.handler"} <= {span.op for span in spans}
    reasons = {span.get("reason") for span in spans}
    assert "signature_mismatch" in reasons, "the refused envelope has no receive span"
    secrets = [*sender.capabilities, "legacyVerificationToken01", "xoxb-tests", settings.SLACK_SIGNING_SECRET]
    secrets += list(settings.SILO_ROUTER["SIGNING_KEYS"].values())
    captured = recorder.everything()
    assert [s for s in secrets if s in captured] == []
    assert [s for s in secrets if s in json.dumps(captured)] == []  # nor JSON-escaped
    lines = [logging.Formatter().format(record) for record in caplog.records]
    assert any("slack_sdk" in record.name for record in caplog.records), "slack_sdk's DEBUG lines were not captured"
    assert [(s, line) for line in lines for s in secrets if s in line] == []
