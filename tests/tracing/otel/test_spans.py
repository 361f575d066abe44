"""The library's spans through the OpenTelemetry SDK: names, kinds, joins, chosen trace ids, links, errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.propagators.textmap import TextMapPropagator, default_getter, default_setter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Sampler
from opentelemetry.trace import SpanKind, StatusCode

from silo_router import tracing
from silo_router.redaction import REDACTED
from silo_router.tracing import links, names, registry

from .conftest import Exported, Switchboard, exported_text, hex_id, install

CARRIED_TRACE = "0af7651916cd43dd8448eb211c80319c"
CARRIED_SPAN = "b7ad6b7169203331"
CARRIER = {"traceparent": f"00-{CARRIED_TRACE}-{CARRIED_SPAN}-01", "tracestate": "vendor=opaque"}
CAUSE = links.Link("3" * 32, "4" * 16, True)


def test_stages_are_named_by_silo_and_stage_and_nest(otel: Exported) -> None:
    with tracing.flow("control", "request", "slack request", span_kind="server", provider="slack"):
        with tracing.stage("control", "verify", "slack"):
            pass
    request, verify = otel.one("silo_router.control.request"), otel.one("silo_router.control.verify")
    assert request.kind is SpanKind.SERVER and verify.kind is SpanKind.INTERNAL
    assert request.parent is None
    assert otel.parent_of(verify) is request
    assert request.attributes["silo_router.provider"] == "slack"
    assert request.attributes["silo_router.description"] == "slack request"
    assert verify.context.trace_id == request.context.trace_id


@pytest.mark.parametrize(("span_kind", "expected"), [("client", SpanKind.CLIENT), ("producer", SpanKind.PRODUCER)])
def test_span_kinds_are_opentelemetrys(otel: Exported, span_kind: str, expected: SpanKind) -> None:
    with tracing.stage("region", "reply", span_kind=span_kind):
        pass
    assert otel.one("silo_router.region.reply").kind is expected


def test_attribute_values_keep_their_types(otel: Exported) -> None:
    with tracing.stage("control", "attempt") as span:
        span.set(attempt=3, deadline_missed=True, ack_ms=12.5, region="us", regions=["us", "eu"])
        span.set(counts={"redelivered": 2}, mixed=[1, "a"], skipped=None)
        span.set_attributes(names.messaging(names.SEND, destination="us", message_id="env-1"))
    attributes = otel.one("silo_router.control.attempt").attributes
    assert attributes["silo_router.attempt"] == 3
    assert attributes["silo_router.deadline_missed"] is True
    assert attributes["silo_router.ack_ms"] == 12.5
    assert attributes["silo_router.region"] == "us"
    assert attributes["silo_router.regions"] == ("us", "eu")
    assert attributes["silo_router.counts"] == '{"redelivered": 2}'
    assert attributes["silo_router.mixed"] == '[1, "a"]'
    assert "silo_router.skipped" not in attributes
    assert attributes["messaging.operation.type"] == "send"
    assert attributes["messaging.system"] == "silo_router"
    assert attributes["messaging.destination.name"] == "us"
    assert attributes["messaging.message.id"] == "env-1"


def test_joining_a_carrier_is_a_child_of_the_carried_span(otel: Exported) -> None:
    with tracing.flow("region", "receive", carrier=CARRIER, span_kind="consumer"):
        with tracing.stage("region", "handler"):
            headers = tracing.propagation_headers()
    receive, handler = otel.one("silo_router.region.receive"), otel.one("silo_router.region.handler")
    assert hex_id(receive.context.trace_id, 32) == CARRIED_TRACE
    assert receive.parent is not None and receive.parent.is_remote
    assert hex_id(receive.parent.span_id, 16) == CARRIED_SPAN
    assert receive.kind is SpanKind.CONSUMER
    assert otel.parent_of(handler) is receive
    written = links.from_headers(headers)["otel"]
    assert (written.trace_id, written.span_id, written.sampled) == (
        CARRIED_TRACE,
        hex_id(handler.context.span_id, 16),
        True,
    )
    assert headers["tracestate"] == "vendor=opaque"


def test_joining_the_trace_already_current_is_a_child_of_the_current_span(otel: Exported) -> None:
    """An instrumentation (or the attempt, in-process) already continued the trace: nest under it."""
    with tracing.flow("control", "attempt", carrier=CARRIER):
        with tracing.flow("region", "receive", carrier=CARRIER):
            pass
    attempt, receive = otel.one("silo_router.control.attempt"), otel.one("silo_router.region.receive")
    assert hex_id(attempt.parent.span_id, 16) == CARRIED_SPAN
    assert otel.parent_of(receive) is attempt


def test_a_detached_flow_is_a_child_of_the_span_that_wrote_its_carrier(otel: Exported) -> None:
    """Work that may outlive the current span (after a response, on another thread) hangs off its cause."""
    with tracing.flow("region", "handler", carrier=CARRIER):
        handler_headers = tracing.propagation_headers()
        with tracing.stage("region", "work"):
            with tracing.flow("region", "after_receipt", carrier=handler_headers, detached=True):
                pass
    handler, after = otel.one("silo_router.region.handler"), otel.one("silo_router.region.after_receipt")
    assert otel.parent_of(after) is handler


def test_a_carrier_naming_another_trace_is_joined_even_inside_a_span(otel: Exported) -> None:
    with tracing.flow("control", "sweep"):
        with tracing.flow("control", "attempt", carrier=CARRIER):
            pass
    sweep, attempt = otel.one("silo_router.control.sweep"), otel.one("silo_router.control.attempt")
    assert hex_id(attempt.context.trace_id, 32) == CARRIED_TRACE != hex_id(sweep.context.trace_id, 32)


def test_the_carried_baggage_is_current_inside_the_flow_and_only_there(otel: Exported) -> None:
    with tracing.flow("region", "receive", carrier={**CARRIER, "baggage": "tenant=acme"}):
        inside = baggage.get_baggage("tenant")
        headers = tracing.propagation_headers()
    assert inside == "acme"
    assert "tenant=acme" in headers["baggage"].split(",")
    assert baggage.get_baggage("tenant") is None


@pytest.mark.parametrize(
    "carrier", [{"traceparent": "00-zz-yy-01"}, {"traceparent": f"00-{'0' * 32}-{'0' * 16}-01"}, {}]
)
def test_a_carrier_with_nothing_to_join_starts_where_it_is(otel: Exported, carrier: dict[str, str]) -> None:
    with tracing.flow("control", "request"):
        with tracing.flow("region", "receive", carrier=carrier):
            pass
    assert otel.parent_of(otel.one("silo_router.region.receive")) is otel.one("silo_router.control.request")


def test_a_new_trace_is_a_root_linked_to_its_cause(otel: Exported) -> None:
    with tracing.flow("control", "request"):
        cause = links.from_headers(tracing.propagation_headers())
        with tracing.flow("control", "attempt", new_trace=True, links=[cause]):
            pass
    request, attempt = otel.one("silo_router.control.request"), otel.one("silo_router.control.attempt")
    assert attempt.parent is None
    assert attempt.context.trace_id != request.context.trace_id
    (link,) = attempt.links
    assert (link.context.trace_id, link.context.span_id) == (request.context.trace_id, request.context.span_id)
    assert link.context.trace_flags.sampled
    assert dict(link.attributes) == {"sentry.link.type": names.LINK_CAUSED_BY}
    assert attempt.attributes[names.LINK_CAUSED_BY] == hex_id(request.context.trace_id, 32)


def test_a_chosen_trace_id_is_every_exported_spans_and_sampled(otel: Exported) -> None:
    """A notification's trace: the root's parent is the remote span holding the derived ids, never exported."""
    notification_id = "5b2f0c1e9d8a4b7c8e6f1a2b3c4d5e6f"
    trace_id, span_id = links.notification_ids(notification_id)
    with tracing.flow("control", "request"):
        with tracing.flow("region", "notification", "incident", trace_id=trace_id, span_id=span_id) as span:
            with tracing.stage("region", "reply", span_kind="client"):
                pass
    notification, reply = otel.one("silo_router.region.notification"), otel.one("silo_router.region.reply")
    assert span.trace_id == trace_id
    assert hex_id(notification.context.trace_id, 32) == trace_id == hex_id(reply.context.trace_id, 32)
    assert notification.parent is not None and notification.parent.is_remote
    assert hex_id(notification.parent.span_id, 16) == span_id
    assert otel.by_id(notification.parent.span_id) is None
    assert notification.context.trace_flags.sampled
    assert otel.parent_of(reply) is notification
    assert otel.one("silo_router.control.request").context.trace_id != notification.context.trace_id


def test_a_chosen_trace_id_alone_derives_its_span_id_as_a_notifications(otel: Exported) -> None:
    notification_id = "5b2f0c1e-9d8a-4b7c-8e6f-1a2b3c4d5e6f"
    with tracing.flow("region", "notification", trace_id=notification_id):
        pass
    notification = otel.one("silo_router.region.notification")
    assert (hex_id(notification.context.trace_id, 32), hex_id(notification.parent.span_id, 16)) == (
        links.notification_ids(notification_id)
    )


def test_a_click_links_to_its_notifications_trace(otel: Exported) -> None:
    notification_id = "5b2f0c1e9d8a4b7c8e6f1a2b3c4d5e6f"
    with tracing.flow("control", "request", links=[links.to_notification(notification_id)]) as span:
        span.link(links.Link("1" * 32, "2" * 16, None))
    request = otel.one("silo_router.control.request")
    by_type = {link.attributes["sentry.link.type"]: link for link in request.links}
    trace_id, span_id = links.notification_ids(notification_id)
    notification = by_type[names.LINK_NOTIFICATION]
    assert (hex_id(notification.context.trace_id, 32), hex_id(notification.context.span_id, 16)) == (trace_id, span_id)
    assert notification.context.trace_flags.sampled
    assert not by_type[names.LINK_CAUSED_BY].context.trace_flags.sampled  # not known: not claimed
    assert request.attributes[names.LINK_NOTIFICATION] == trace_id
    assert request.attributes[names.LINK_CAUSED_BY] == "1" * 32


@pytest.mark.parametrize(
    "flow_ids", [{"trace_id": "not-a-trace-id"}, {"trace_id": "0" * 32}, {"trace_id": "1" * 32, "span_id": "xyz"}]
)
def test_a_bad_chosen_trace_id_or_link_starts_a_trace_of_its_own(otel: Exported, flow_ids: dict[str, str]) -> None:
    with tracing.flow("region", "notification", links=[links.Link("bad", "ids")], **flow_ids):
        pass
    notification = otel.one("silo_router.region.notification")
    assert notification.parent is None and notification.context.is_valid
    assert notification.links == ()


def test_an_exception_is_an_event_and_an_error_status_without_capabilities(otel: Exported) -> None:
    response_url = "https://hooks.slack.com/actions/T0US00001/1234/SeCrEtCaPaBiLiTy"
    with pytest.raises(RuntimeError), tracing.stage("region", "reply"):
        raise RuntimeError(f"could not post to {response_url} with xoxb-1234-secret-token")
    reply = otel.one("silo_router.region.reply")
    assert reply.status.status_code is StatusCode.ERROR
    assert reply.status.description == "RuntimeError"
    (event,) = reply.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "RuntimeError"
    assert REDACTED in event.attributes["exception.message"]
    assert "test_an_exception_is_an_event" in event.attributes["exception.stacktrace"]
    assert not [text for text in exported_text(reply) if "SeCrEtCaPaBiLiTy" in text or "xoxb-" in text]


def test_a_failed_span_has_an_error_status_and_its_outcome(otel: Exported) -> None:
    with tracing.stage("control", "attempt") as span:
        span.fail("region_timeout")
    attempt = otel.one("silo_router.control.attempt")
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.attributes["silo_router.outcome"] == "region_timeout"


def test_a_capability_set_as_an_attribute_is_redacted(otel: Exported, settings: Any) -> None:
    trigger_id = "1234567890.123456789.0123456789abcdef0123456789abcdef"
    with tracing.stage("control", "control_response", f"views.open for {trigger_id}") as span:
        span.set(response_url="https://example.com/anything", trigger_id="opaque", note=f"trigger {trigger_id}")
        span.set(key=settings.SILO_ROUTER["SIGNING_KEYS"]["k1"], words=["xoxb-1-2-3", "fine"])
    attributes = otel.one("silo_router.control.control_response").attributes
    assert attributes["silo_router.response_url"] == REDACTED
    assert attributes["silo_router.trigger_id"] == REDACTED
    assert attributes["silo_router.words"] == (REDACTED, "fine")
    texts = exported_text(otel.one("silo_router.control.control_response"))
    assert not [
        t for t in texts if trigger_id in t or "example.com" in t or settings.SILO_ROUTER["SIGNING_KEYS"]["k1"] in t
    ]


class RecordingSampler(Sampler):
    """Samples everything, and keeps the links each decision was shown."""

    def __init__(self) -> None:
        self.links: list[list[str]] = []

    def should_sample(self, parent_context: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> Any:
        shown = kwargs.get("links", args[2] if len(args) > 2 else None) or ()
        self.links.append([hex_id(link.context.trace_id, 32) for link in shown])
        return ALWAYS_ON.should_sample(parent_context, trace_id, name, *args, **kwargs)

    def get_description(self) -> str:
        return "RecordingSampler"


def test_links_given_at_the_start_are_seen_by_the_sampler(switchboard: Switchboard) -> None:
    """The back end takes links when a span starts, where samplers see them."""
    sampler = RecordingSampler()
    otel = install(switchboard, sampler)
    try:
        with _otel_backend().root("silo_router.control.attempt", "late", "producer", None, None, links=[CAUSE]):
            pass
    finally:
        switchboard.current = None
    (link,) = otel.one("silo_router.control.attempt").links
    assert hex_id(link.context.trace_id, 32) == CAUSE.trace_id
    assert sampler.links == [[CAUSE.trace_id]]


def test_propagation_headers_name_the_current_span_and_merge_with_sentrys_baggage(otel: Exported) -> None:
    backend = _otel_backend()
    token = otel_context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        with tracing.stage("control", "request"):
            carrier = {"sentry-trace": "1" * 32 + "-" + "2" * 16 + "-1", "baggage": "sentry-trace_id=" + "1" * 32}
            backend.inject(carrier)
    finally:
        otel_context.detach(token)
    request = otel.one("silo_router.control.request")
    written = links.from_headers(carrier)["otel"]
    assert (written.trace_id, written.span_id, written.sampled) == (
        hex_id(request.context.trace_id, 32),
        hex_id(request.context.span_id, 16),
        True,
    )
    assert carrier["baggage"] == "sentry-trace_id=" + "1" * 32 + ",tenant=acme"
    assert carrier["sentry-trace"].startswith("1" * 32)
    assert trace.get_current_span(propagate.extract(carrier)).get_span_context().span_id == request.context.span_id


def _otel_backend() -> Any:
    return next(backend for backend in registry.BACKENDS if backend.name == "otel")


class SentryHeadersFromOpenTelemetry(TextMapPropagator):
    """Like the propagator Sentry's OTLP integration sets: Sentry's headers, written from OpenTelemetry's span."""

    def inject(self, carrier: Any, context: Any = None, setter: Any = default_setter) -> None:
        span_context = trace.get_current_span(context).get_span_context()
        trace_id, span_id = hex_id(span_context.trace_id, 32), hex_id(span_context.span_id, 16)
        setter.set(carrier, "sentry-trace", f"{trace_id}-{span_id}-1")
        setter.set(carrier, "baggage", f"sentry-trace_id={trace_id}")

    def extract(self, carrier: Any, context: Any = None, getter: Any = default_getter) -> Any:
        found = links.from_headers({"sentry-trace": (getter.get(carrier, "sentry-trace") or [""])[0]}).get("sentry")
        if found is None:
            return context or otel_context.Context()
        parent = trace.SpanContext(int(found.trace_id, 16), int(found.span_id, 16), True, trace.TraceFlags(1))
        return trace.set_span_in_context(trace.NonRecordingSpan(parent), context)

    @property
    def fields(self) -> set[str]:
        return {"sentry-trace", "baggage"}


@pytest.fixture
def sentry_headers_from_opentelemetry() -> Iterator[None]:
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(SentryHeadersFromOpenTelemetry())
    try:
        yield
    finally:
        propagate.set_global_textmap(previous)


def test_a_propagator_writing_sentrys_headers_is_their_source(
    otel: Exported, sentry_headers_from_opentelemetry: None
) -> None:
    """Sentry through its OTLP integration: the trace Sentry sees is OpenTelemetry's, end to end."""
    sentry_own = {
        "sentry-trace": "1" * 32 + "-" + "2" * 16 + "-0",
        "baggage": "sentry-trace_id=" + "1" * 32 + ",tenant=acme",
    }
    with tracing.stage("control", "request"):
        carrier = dict(sentry_own)
        _otel_backend().inject(carrier)
    with tracing.flow("region", "receive", carrier=carrier):
        pass
    request, receive = otel.one("silo_router.control.request"), otel.one("silo_router.region.receive")
    trace_id = hex_id(request.context.trace_id, 32)
    assert carrier["sentry-trace"] == f"{trace_id}-{hex_id(request.context.span_id, 16)}-1"
    assert carrier["baggage"] == f"sentry-trace_id={trace_id},tenant=acme"
    assert otel.parent_of(receive) is request


def test_a_secret_configured_later_is_redacted_from_then_on(otel: Exported, settings: Any) -> None:
    """Scrubbed texts are remembered, and forgotten when the settings (the secrets) change."""
    secret = "rotated-bot-credential-0123456789"
    with tracing.stage("control", "authorize") as span:
        span.set(note=secret)
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": {**settings.SILO_ROUTER["SLACK"], "BOT_TOKEN": secret}}
    with tracing.stage("control", "authorize") as span:
        span.set(note=secret)
    assert [span.attributes["silo_router.note"] for span in otel.named("silo_router.control.authorize")] == [
        secret,
        REDACTED,
    ]


def test_an_open_span_made_current_again_is_the_parent_of_what_starts_inside(otel: Exported) -> None:
    """A batch opens every attempt's span first, then sends each envelope under its own."""
    with tracing.flow("control", "attempt", "first", new_trace=True) as first:
        with tracing.flow("control", "attempt", "second", new_trace=True):
            with first.as_current():
                headers = tracing.propagation_headers()
                with tracing.stage("control", "send", "under the first"):
                    pass
            with tracing.stage("control", "send", "under the second"):
                pass
    by_description = {
        span.attributes["silo_router.description"]: span for span in otel.named("silo_router.control.send")
    }
    attempts = {span.attributes["silo_router.description"]: span for span in otel.named("silo_router.control.attempt")}
    assert otel.parent_of(by_description["under the first"]) is attempts["first"]
    assert otel.parent_of(by_description["under the second"]) is attempts["second"]
    assert hex_id(attempts["first"].context.span_id, 16) in headers["traceparent"]
