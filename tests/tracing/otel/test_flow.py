"""A whole flow through the local transport, as the OpenTelemetry SDK exports it.

A signed Slack click goes through Django's test client to control, is stored, delivered
in-process (on the local transport's own thread) to the region, whose handler replies
through the fake Slack's ``response_url``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from opentelemetry.trace import SpanKind

from example_project.fake_slack import FakeSlack
from silo_router import tracing
from silo_router.control.models import Payload
from silo_router.region.handlers import slack
from silo_router.tracing import links, registry

from ...sentry_capture import Captured
from ...slack_signing import block_actions, event_callback, interactive_body, post_slack
from .conftest import Exported, exported_text, hex_id

pytestmark = pytest.mark.django_db(transaction=True)

TRIGGER_ID = "1234567890.123456789.0123456789abcdef0123456789abcdef"
CONTROL_STAGES = ("verify", "classify", "resolve", "store")
FLOW = (
    "silo_router.control.request",
    *(f"silo_router.control.{stage}" for stage in CONTROL_STAGES),
    "silo_router.control.attempt",
    "silo_router.region.receive",
    "silo_router.region.handler",
    "silo_router.region.reply",
)


@pytest.fixture
def resolve_replies() -> None:
    """The region's handler of the click: some work of its own, then a reply through ``response_url``."""

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        with tracing.stage("region", "work", "the handler's own work"):
            request.respond("Resolved.")


def click(client: Client, fake_slack: FakeSlack) -> str:
    """Post a signed click on the fake Slack's message; return its ``response_url``."""
    response_url = fake_slack.issue_response_url(channel_id="C0CHAN001")
    payload = block_actions(trigger_id=TRIGGER_ID)
    payload["response_url"] = response_url
    assert post_slack(client, interactive_body(payload)).status_code == 200
    assert [call.params["text"] for call in fake_slack.calls("response_url")] == ["Resolved."]
    return response_url


def stored_trace() -> dict[str, str]:
    """The propagation headers the stored envelope carries."""
    (payload,) = Payload.objects.all()
    return dict(json.loads(payload.envelope)["trace"])


def test_a_click_is_one_trace_from_the_control_request_to_the_reply(
    client: Client, installations: Any, fake_slack: FakeSlack, resolve_replies: None, otel: Exported
) -> None:
    click(client, fake_slack)
    assert set(FLOW) <= {span.name for span in otel.spans}
    assert len({span.context.trace_id for span in otel.spans}) == 1
    request = otel.one("silo_router.control.request")
    assert request.parent is None and request.kind is SpanKind.SERVER
    assert request.attributes["silo_router.kind"] == "block_actions:resolve_dialog"
    for stage in CONTROL_STAGES:
        assert otel.parent_of(otel.one(f"silo_router.control.{stage}")) is request, stage
    attempt, receive = otel.one("silo_router.control.attempt"), otel.one("silo_router.region.receive")
    handler, reply = otel.one("silo_router.region.handler"), otel.one("silo_router.region.reply")
    assert (attempt.kind, receive.kind, reply.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER, SpanKind.CLIENT)
    assert "silo_router.control.request" in otel.ancestors(attempt)
    assert "silo_router.control.request" in otel.ancestors(receive)
    assert "silo_router.region.receive" in otel.ancestors(handler)
    assert otel.parent_of(otel.one("silo_router.region.work")) is handler
    assert "silo_router.region.handler" in otel.ancestors(reply)
    assert reply.attributes["silo_router.method"] == "response_url"
    envelope_id = attempt.attributes["silo_router.envelope_id"]
    assert receive.attributes["silo_router.envelope_id"] == envelope_id
    assert links.from_headers(stored_trace())["otel"].trace_id == hex_id(request.context.trace_id, 32)


def test_the_region_run_is_a_child_of_the_attempt_that_carried_it(
    client: Client, installations: Any, fake_slack: FakeSlack, resolve_replies: None, otel: Exported
) -> None:
    """Not of the request that stored the envelope: a retry's region run hangs off that retry."""
    click(client, fake_slack)
    assert "silo_router.control.attempt" in otel.ancestors(otel.one("silo_router.region.receive"))


def test_no_capability_in_any_exported_span(
    client: Client, installations: Any, fake_slack: FakeSlack, resolve_replies: None, otel: Exported, settings: Any
) -> None:
    response_url = click(client, fake_slack)
    secrets = {
        "response_url": response_url,
        "response_url token": response_url.rsplit("/", 1)[-1],
        "trigger_id": TRIGGER_ID,
        "bot token": settings.SILO_ROUTER["SLACK"]["BOT_TOKEN"],
        "signing secret": settings.SLACK_SIGNING_SECRET,
        "hop key": settings.SILO_ROUTER["SIGNING_KEYS"]["k1"],
    }
    assert len(otel.spans) >= len(FLOW)
    leaks = [
        (span.name, name, text)
        for span in otel.spans
        for text in exported_text(span)
        for name, secret in secrets.items()
        if secret in text
    ]
    assert leaks == []


def test_opentelemetry_is_off_when_the_setting_says_so(
    client: Client, installations: Any, otel: Exported, settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "OPENTELEMETRY": False}
    propagated: list[dict[str, str]] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        with tracing.stage("region", "work"):
            propagated.append(tracing.propagation_headers())

    body = json.dumps(event_callback(event_id="EvOtelOff")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    assert otel.spans == ()
    assert len(propagated) == 1 and "traceparent" not in propagated[0]
    assert "traceparent" not in stored_trace()
    assert not [backend for backend in registry.BACKENDS if backend.name == "otel" and backend.active()]


def test_with_sentry_on_too_each_back_end_gets_the_whole_flow(
    client: Client,
    installations: Any,
    fake_slack: FakeSlack,
    resolve_replies: None,
    otel: Exported,
    sentry: Captured,
) -> None:
    click(client, fake_slack)
    sentry_spans = sentry.spans()
    assert set(FLOW) <= {span.op for span in sentry_spans}
    assert set(FLOW) <= {span.name for span in otel.spans}
    sentry_trace_ids = {span.trace_id for span in sentry_spans if span.op.startswith("silo_router.")}
    otel_trace_ids = {hex_id(span.context.trace_id, 32) for span in otel.spans}
    assert len(sentry_trace_ids) == 1 and len(otel_trace_ids) == 1
    carried = stored_trace()
    assert links.from_headers(carried)["sentry"].trace_id in sentry_trace_ids
    assert links.from_headers(carried)["otel"].trace_id in otel_trace_ids
    assert "sentry-trace_id=" in carried["baggage"]  # Sentry's dynamic sampling context survives OpenTelemetry's
