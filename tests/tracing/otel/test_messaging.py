"""An envelope's life in OpenTelemetry's messaging conventions, as the SDK exports it.

The envelope is the message and its region the destination: control's request creates
it (the ``store`` span), each attempt sends it, the region receives it and its handler
processes it, linked to the context that created it; a region's confirmation settles it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from opentelemetry.sdk.trace import ReadableSpan

from silo_router import signing
from silo_router.control import delivery
from silo_router.control.models import Payload
from silo_router.control.tasks import confirm_delivery
from silo_router.envelope import Envelope
from silo_router.region.handlers import slack
from silo_router.tracing import names

from ...slack_signing import event_callback, post_slack
from .conftest import Exported

pytestmark = pytest.mark.django_db(transaction=True)

EXPECTED = {
    "silo_router.control.store": names.CREATE,
    "silo_router.control.attempt": names.SEND,
    "silo_router.region.receive": names.RECEIVE,
    "silo_router.region.handler": names.PROCESS,
}


def deliver_a_mention(client: Client) -> str:
    """Post a signed ``app_mention`` for region us and let it be handled; return its envelope id."""

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        return None

    body = json.dumps(event_callback(event_id="EvMessaging")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    (payload,) = Payload.objects.all()
    return str(json.loads(payload.envelope)["id"])


def messaging(span: ReadableSpan) -> dict[str, Any]:
    return {key: value for key, value in (span.attributes or {}).items() if key.startswith("messaging.")}


def test_each_stage_of_an_envelope_has_its_messaging_operation(
    client: Client, installations: Any, otel: Exported
) -> None:
    envelope_id = deliver_a_mention(client)
    for name, operation in EXPECTED.items():
        described = [messaging(span) for span in otel.named(name) if messaging(span)]
        assert described == [
            {
                "messaging.system": "silo_router",
                "messaging.destination.name": "us",
                "messaging.message.id": envelope_id,
                "messaging.operation.type": operation,
            }
        ], name


def test_the_handler_links_to_the_context_that_created_the_envelope(
    client: Client, installations: Any, otel: Exported
) -> None:
    deliver_a_mention(client)
    request, handler = otel.one("silo_router.control.request"), otel.one("silo_router.region.handler")
    created = [link for link in handler.links if link.attributes.get("sentry.link.type") == names.LINK_CAUSED_BY]
    assert [(link.context.trace_id, link.context.span_id) for link in created] == [
        (request.context.trace_id, request.context.span_id)
    ]


def test_a_regions_confirmation_settles_the_envelope(otel: Exported) -> None:
    envelope = Envelope(
        id=Envelope.make_id("slack:event:EvSettle", "us"),
        idempotency_key="slack:event:EvSettle",
        provider="slack",
        kind="event_callback:app_mention",
        region="us",
        body=json.dumps(event_callback(event_id="EvSettle")),
        headers={"content-type": "application/json"},
        strategy="async",
        organization_ids=("101",),
    )
    (payload,) = delivery.store([envelope])
    assert delivery.claim(str(payload.pk)) is not None
    key_id, key = next(iter(settings.SILO_ROUTER["SIGNING_KEYS"].items()))
    signature = signing.sign(signing.confirmation_message(str(payload.pk), "handled", ""), key_id=key_id, key=key)
    assert confirm_delivery(str(payload.pk), "handled", "", signature) == Payload.State.DELIVERED
    settled = [span for span in otel.spans if messaging(span).get("messaging.operation.type") == names.SETTLE]
    assert [messaging(span) for span in settled] == [
        {
            "messaging.system": "silo_router",
            "messaging.destination.name": "us",
            "messaging.message.id": envelope.id,
            "messaging.operation.type": names.SETTLE,
        }
    ]
