"""One flow, one trace: control request, delivery and region handler share a trace id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from django.test import Client
from sentry_sdk.envelope import Envelope as SentryEnvelope
from sentry_sdk.transport import Transport

from silo_router import tracing
from silo_router.region.handlers import slack

from .slack_signing import event_callback, post_slack

pytestmark = pytest.mark.django_db


class CapturingTransport(Transport):
    """Keeps what sentry-sdk would send, instead of sending it."""

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.transactions: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: SentryEnvelope) -> None:
        for item in envelope.items:
            if item.type == "transaction":
                self.transactions.append(json.loads(item.get_bytes()))


@pytest.fixture
def captured() -> Iterator[CapturingTransport]:
    transport = CapturingTransport()
    sentry_sdk.init(dsn="https://key@sentry.invalid/1", transport=transport, traces_sampler=tracing.traces_sampler)
    yield transport
    sentry_sdk.get_client().close()
    sentry_sdk.init()


def test_the_whole_flow_is_one_trace(client: Client, installations: Any, captured: CapturingTransport) -> None:
    @slack.event("app_mention")
    def mention(request: Any) -> None:
        with tracing.span("work", "the handler's own work"):
            pass

    body = json.dumps(event_callback(event_id="EvTrace")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    sentry_sdk.flush()
    ops = {t["contexts"]["trace"]["op"]: t for t in captured.transactions}
    assert {"silo_router.control", "silo_router.deliver", "silo_router.region"} <= set(ops)
    trace_ids = {t["contexts"]["trace"]["trace_id"] for t in ops.values()}
    assert len(trace_ids) == 1
    control_spans = {s["op"] for s in ops["silo_router.control"]["spans"]}
    assert {"silo_router.verify", "silo_router.classify", "silo_router.resolve", "silo_router.store"} <= control_spans
    assert "silo_router.handler" in {s["op"] for s in ops["silo_router.region"]["spans"]}
    assert ops["silo_router.control"]["tags"]["silo_router.kind"] == "event_callback:app_mention"


def test_sampler_keeps_integration_flows_and_samples_the_rest() -> None:
    assert tracing.traces_sampler({"transaction_context": {"op": "silo_router.control"}}) == 1.0
    assert tracing.traces_sampler({"transaction_context": {"op": "http.server"}}) == 0.01
    assert tracing.traces_sampler({"parent_sampled": False, "transaction_context": {"op": "silo_router.region"}}) == 0.0
