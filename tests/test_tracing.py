"""One flow, one trace: control request, delivery and region handler share a trace id."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from silo_router import tracing
from silo_router.region.handlers import slack

from .sentry_capture import Captured, CaptureSentry
from .slack_signing import event_callback, post_slack

pytestmark = pytest.mark.django_db


@pytest.fixture
def captured(capture_sentry: CaptureSentry) -> Captured:
    """sentry-sdk with its default integrations and the library's sampler, without README's scrubbing hooks."""
    return capture_sentry(scrubbed=False)


def test_the_whole_flow_is_one_trace(client: Client, installations: Any, captured: Captured) -> None:
    @slack.event("app_mention")
    def mention(request: Any) -> None:
        with tracing.stage("region", "work", "the handler's own work"):
            pass

    body = json.dumps(event_callback(event_id="EvTrace")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    spans = captured.spans()
    ops = {span.op for span in spans}
    assert {
        "silo_router.control.request",
        "silo_router.control.read",
        "silo_router.control.verify",
        "silo_router.control.classify",
        "silo_router.control.authorize",
        "silo_router.control.resolve",
        "silo_router.control.store",
        "silo_router.control.wake",
        "silo_router.control.attempt",
        "silo_router.region.receive",
        "silo_router.region.handler",
        "silo_router.region.work",
    } <= ops
    assert len({span.trace_id for span in spans}) == 1
    control = captured.transaction("silo_router.control.request")
    assert control.tags["silo_router.kind"] == "event_callback:app_mention"


def test_sampler_keeps_integration_flows_and_samples_the_rest() -> None:
    assert tracing.traces_sampler({"transaction_context": {"op": "silo_router.control.request"}}) == 1.0
    assert tracing.traces_sampler({"transaction_context": {"op": "http.server"}}) == 0.01
    unsampled_parent = {"parent_sampled": False, "transaction_context": {"op": "silo_router.region.receive"}}
    assert tracing.traces_sampler(unsampled_parent) == 0.0
