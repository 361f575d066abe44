"""The OpenTelemetry back end of :mod:`silo_router.tracing.spans` (the ``[otel]`` extra).

It needs only ``opentelemetry-api``: spans go to whatever tracer provider the project
set up (the SDK with any exporter, or Sentry's OTLP integration). Links are real
OpenTelemetry links. A notification's trace has a trace id derived from its id: the
API cannot choose a root span's ids, so its root is the child of a remote parent
that holds those ids and is never exported itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .. import __version__
from . import links as _links
from . import names

_KINDS = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
    "internal": SpanKind.INTERNAL,
}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class OtelPart:
    """An OpenTelemetry span as one half of a library span."""

    __slots__ = ("span",)

    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def set(self, key: str, value: Any, *, tag: bool) -> None:
        if not isinstance(value, str | bool | int | float):
            value = str(value)
        self.span.set_attribute(key, value)

    def link(self, link: _links.Link) -> None:
        flags = _SAMPLED if link.sampled is not False else TraceFlags(TraceFlags.DEFAULT)
        linked = SpanContext(int(link.trace_id, 16), int(link.span_id, 16), is_remote=True, trace_flags=flags)
        self.span.add_link(linked, {"sentry.link.type": link.type, link.type: link.trace_id})

    def fail(self) -> None:
        self.span.set_status(Status(StatusCode.ERROR))

    def trace_id(self) -> str | None:
        context = self.span.get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None


class OtelBackend:
    """Spans through the OpenTelemetry API; on when ``SILO_ROUTER['OPENTELEMETRY']`` allows."""

    name = "otel"

    def __init__(self) -> None:
        self.tracer = trace.get_tracer("silo_router", __version__)

    def active(self) -> bool:
        from .registry import otel_enabled

        return otel_enabled()

    @contextlib.contextmanager
    def _span(self, op: str, description: str, kind: str | None, context: Any = None) -> Iterator[OtelPart]:
        with self.tracer.start_as_current_span(
            op,
            context=context,
            kind=_KINDS.get(kind or "internal", SpanKind.INTERNAL),
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            if description and description != op:
                span.set_attribute(names.attribute("description"), description)
            yield OtelPart(span)

    def child(self, op: str, description: str, kind: str | None) -> contextlib.AbstractContextManager[OtelPart]:
        return self._span(op, description, kind)

    def join(
        self, op: str, description: str, kind: str | None, carrier: Mapping[str, str], detached: bool
    ) -> contextlib.AbstractContextManager[OtelPart]:
        extracted = propagate.extract(dict(carrier))
        carried = trace.get_current_span(extracted).get_span_context()
        current = trace.get_current_span().get_span_context()
        if not carried.is_valid or (current.is_valid and current.trace_id == carried.trace_id):
            return self._span(op, description, kind)
        return self._span(op, description, kind, extracted)

    def root(
        self, op: str, description: str, kind: str | None, trace_id: str | None, span_id: str | None
    ) -> contextlib.AbstractContextManager[OtelPart]:
        if not trace_id:
            return self._span(op, description, kind, otel_context.Context())
        parent = SpanContext(int(trace_id, 16), int(span_id or trace_id[:16], 16), is_remote=True, trace_flags=_SAMPLED)
        return self._span(op, description, kind, trace.set_span_in_context(NonRecordingSpan(parent)))

    def inject(self, carrier: dict[str, str]) -> None:
        if trace.get_current_span().get_span_context().is_valid:
            propagate.inject(carrier)
