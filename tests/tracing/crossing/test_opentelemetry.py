"""The hop in OpenTelemetry: ``traceparent`` crosses, and the region's spans are the attempt's descendants."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind

from silo_router.region.handlers import slack
from silo_router.tracing import registry
from silo_router.tracing.otel_backend import OtelBackend

from .support import ATTEMPT, HANDLER, RECEIVE, Crossing, click_envelope

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The library's OpenTelemetry spans, from an SDK tracer provider of this test's own."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    (backend,) = [each for each in registry.BACKENDS if isinstance(each, OtelBackend)]
    monkeypatch.setattr(backend, "tracer", provider.get_tracer("silo_router"))
    monkeypatch.setattr(backend, "provider_set", True)  # as if the project had set a provider
    yield exporter
    provider.shutdown()


@pytest.mark.parametrize("crossing", ["local", "http", "celery-eager"], indirect=True)
def test_the_regions_spans_descend_from_the_attempt_in_opentelemetry(
    crossing: Crossing, exported: InMemorySpanExporter
) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        pass

    sent = crossing.send(click_envelope(key="slack:click:otel"), attempt=2)
    assert _outcome(sent.answer) == "handled"
    spans = {span.name: span for span in exported.get_finished_spans()}
    attempt, receive, handler = spans[ATTEMPT], spans[RECEIVE], spans[HANDLER]
    request = spans["silo_router.control.request"]
    assert len({span.context.trace_id for span in (request, attempt, receive, handler)}) == 1
    assert receive.parent is not None and receive.parent.span_id == attempt.context.span_id
    assert handler.parent is not None and handler.parent.span_id == receive.context.span_id
    assert (receive.kind, handler.kind) == (SpanKind.CONSUMER, SpanKind.CONSUMER)
    assert _attributes(receive, "messaging.operation.type", "silo_router.attempt", "silo_router.dedupe") == (
        "receive",
        2,
        "first",
    )
    assert _attributes(handler, "messaging.operation.type", "silo_router.outcome") == ("process", "ok")
    (link,) = handler.links
    assert _link_target(link) == (request.context.trace_id, request.context.span_id)


def _attributes(span: ReadableSpan, *names: str) -> tuple[Any, ...]:
    return tuple((span.attributes or {}).get(name) for name in names)


def _link_target(link: Link) -> tuple[int, int]:
    return link.context.trace_id, link.context.span_id


def _outcome(answer: Any) -> Any:
    return answer.get("outcome") if isinstance(answer, dict) else getattr(answer, "outcome", answer)
