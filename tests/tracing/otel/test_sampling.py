"""The OpenTelemetry SDK sampler: integration flows at 1.0, the rest at the rate, the parent's decision kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from opentelemetry import trace
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind

from silo_router import tracing
from silo_router.region.handlers import slack
from silo_router.tracing import links, otel_sampling

from ...slack_signing import event_callback, post_slack
from .conftest import Exported, Switchboard, install

TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def rate(settings: Any) -> float:
    """Ordinary traces are never sampled (``TRACES_SAMPLE_RATE`` 0), so whatever is exported was kept."""
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "TRACES_SAMPLE_RATE": 0.0}
    return 0.0


@pytest.fixture
def sampled(switchboard: Switchboard, rate: float) -> Iterator[Exported]:
    """An SDK provider with the library's sampler."""
    exported = install(switchboard, otel_sampling.sampler())
    try:
        yield exported
    finally:
        switchboard.current = None
        exported.provider.shutdown()


def server_span(name: str, **attributes: str) -> None:
    """A span as a project's own instrumentation (WSGI, Django, Celery) starts it."""
    with trace.get_tracer("project").start_as_current_span(name, kind=SpanKind.SERVER, attributes=attributes):
        with trace.get_tracer("project").start_as_current_span("project work"):
            pass


@pytest.mark.parametrize(
    ("name", "attributes"),
    [
        ("POST", {"url.path": "/extensions/slack/"}),
        ("POST", {"http.target": "/extensions/slack/?retry=1"}),
        ("POST", {"url.full": "https://region.example.com/silo-router/envelopes/"}),
        ("POST", {"http.url": "http://region.internal/silo-router/envelopes/"}),
        ("run/silo_router.control.deliver", {}),
        ("apply_async/silo_router.region.receive", {}),
        ("silo_router.control.sweep", {}),
    ],
)
def test_a_flow_of_the_library_is_kept_with_its_children(
    sampled: Exported, name: str, attributes: dict[str, str]
) -> None:
    server_span(name, **attributes)
    assert sorted(span.name for span in sampled.spans) == sorted([name, "project work"])


@pytest.mark.parametrize(
    ("name", "attributes"),
    [
        ("GET", {"url.path": "/admin/login/"}),
        ("GET", {"http.target": "/plain/?extensions/slack/"}),
        ("run/project.tasks.report", {}),
        ("project.request", {}),
    ],
)
def test_everything_else_is_sampled_at_the_rate(sampled: Exported, name: str, attributes: dict[str, str]) -> None:
    server_span(name, **attributes)
    assert sampled.spans == ()


def test_the_rate_is_read_from_the_settings_at_each_decision(sampled: Exported, settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "TRACES_SAMPLE_RATE": 1.0}
    server_span("GET", **{"url.path": "/admin/login/"})
    assert [span.name for span in sampled.spans] == ["project work", "GET"]


def test_a_project_sampler_decides_the_rest(switchboard: Switchboard, rate: float) -> None:
    chosen = otel_sampling.sampler(fallback=ALWAYS_ON)
    exported = install(switchboard, chosen)
    try:
        server_span("GET", **{"url.path": "/admin/login/"})
    finally:
        switchboard.current = None
    assert [span.name for span in exported.spans] == ["project work", "GET"]
    assert "SiloRouterIntegrationFlows{fallback=AlwaysOnSampler}" in chosen.get_description()


@pytest.mark.parametrize(("flags", "kept"), [("01", True), ("00", False)])
def test_a_decision_made_upstream_is_kept(sampled: Exported, flags: str, kept: bool) -> None:
    """Control decided: the region follows, whatever its own sampler would say of a root."""
    carrier = {"traceparent": f"00-{TRACE}-b7ad6b7169203331-{flags}"}
    with tracing.flow("region", "receive", carrier=carrier, span_kind="consumer"):
        with trace.get_tracer("project").start_as_current_span("project work"):
            pass
    assert sorted(span.name for span in sampled.spans) == (
        ["project work", "silo_router.region.receive"] if kept else []
    )


def test_a_notifications_trace_is_always_sampled(sampled: Exported) -> None:
    trace_id, span_id = links.notification_ids("5b2f0c1e9d8a4b7c8e6f1a2b3c4d5e6f")
    with tracing.flow("region", "notification", trace_id=trace_id, span_id=span_id):
        pass
    (notification,) = sampled.spans
    assert format(notification.context.trace_id, "032x") == trace_id


@pytest.mark.django_db(transaction=True)
def test_a_whole_flow_is_kept_while_ordinary_traces_are_not(
    client: Client, installations: Any, sampled: Exported
) -> None:
    @slack.event("app_mention")
    def mention(request: Any) -> None:
        return None

    body = json.dumps(event_callback(event_id="EvSampled")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    names = {span.name for span in sampled.spans}
    assert {"silo_router.control.request", "silo_router.control.attempt", "silo_router.region.handler"} <= names
    assert len({span.context.trace_id for span in sampled.spans}) == 1


def test_the_decision_inputs_read_as_traces_sampler_reads_them() -> None:
    assert otel_sampling.sampling_context("run/silo_router.control.deliver", {"url.full": "https://x.test/a/?b"}) == {
        "transaction_context": {"op": "run/silo_router.control.deliver", "name": "run/silo_router.control.deliver"},
        "wsgi_environ": {"PATH_INFO": "/a/"},
        "celery_job": {"task": "silo_router.control.deliver"},
    }
    assert tracing.is_integration_flow(otel_sampling.sampling_context("silo_router.region.receive", None))
