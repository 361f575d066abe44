"""The OpenTelemetry back end of :mod:`silo_router.tracing.spans` (the ``[otel]`` extra).

It needs only ``opentelemetry-api``: spans go to whatever tracer provider the project
set up (the SDK with any exporter, or Sentry's OTLP integration); until one is set the
back end is off, so the API alone costs one check per span. Span names are the library's
(``silo_router.<silo>.<stage>``), kinds are OpenTelemetry's, and context crosses
processes through the global propagator (W3C ``traceparent``/``tracestate`` and
``baggage`` by default).

- Joining a carrier makes the span a child of the carried span context, unless the
  current span is already in that trace (an instrumentation continued it) and the flow
  is not ``detached``.
- A trace with a chosen id (a notification's): the API cannot choose a root span's ids,
  so the root is the child of a remote, sampled, non-recording parent that holds the
  derived ids. That parent is never exported; every exported span has the trace id.
- Links are real OpenTelemetry links with a ``sentry.link.type`` attribute; each linked
  trace id is mirrored in a span attribute named after the link's type, as on Sentry.
- Exceptions become an ``exception`` event and an error status. OpenTelemetry has no
  ``before_send``, so this back end keeps capabilities out itself: exception texts and
  string attributes are scrubbed with :func:`silo_router.redaction.scrub_text`, and an
  attribute named after a capability (``response_url``, ``token``...) is redacted whole.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from django.core.signals import setting_changed
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.environment_variables import OTEL_PYTHON_TRACER_PROVIDER
from opentelemetry.trace import (
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from .. import __version__, redaction
from . import links as _links
from . import names

logger = logging.getLogger("silo_router.tracing")

_KINDS = {
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "producer": SpanKind.PRODUCER,
    "consumer": SpanKind.CONSUMER,
    "internal": SpanKind.INTERNAL,
}
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_DESCRIPTION = names.attribute("description")
#: The link attribute Sentry (and this library's docs) name a link's type with.
LINK_TYPE_ATTRIBUTE = "sentry.link.type"
SENTRY_TRACE = "sentry-trace"
BAGGAGE = "baggage"
SENTRY_BAGGAGE_PREFIX = "sentry-"
#: The providers that record nothing: with one of them the back end stays off.
_NO_PROVIDER = (ProxyTracerProvider, NoOpTracerProvider)

#: Texts up to this long are remembered once scrubbed.
_REMEMBERED_LENGTH = 256


def scrubbed(text: str) -> str:
    """:func:`silo_router.redaction.scrub_text`, remembered for short texts (kinds, regions, descriptions repeat)."""
    return _scrubbed(text) if len(text) <= _REMEMBERED_LENGTH else redaction.scrub_text(text)


@functools.lru_cache(maxsize=4096)
def _scrubbed(text: str) -> str:
    return redaction.scrub_text(text)


def _forget_scrubbed(**kwargs: Any) -> None:
    _scrubbed.cache_clear()  # the secrets and capability URL prefixes are settings


setting_changed.connect(_forget_scrubbed, dispatch_uid="silo_router.tracing.otel_backend")

AttributeValue = str | bool | int | float | tuple[str, ...] | tuple[bool, ...] | tuple[int, ...] | tuple[float, ...]


def attribute_value(key: str, value: Any) -> AttributeValue:
    """``value`` as an OpenTelemetry attribute value, with capabilities redacted.

    Strings, booleans, integers and floats stay what they are, a list or tuple of one of
    them becomes a tuple; anything else becomes text (JSON when it can).
    """
    if redaction.is_capability_key(key.rsplit(".", 1)[-1]):
        return redaction.REDACTED
    if isinstance(value, str):
        return scrubbed(value)
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, list | tuple) and _homogeneous(value):
        return tuple(scrubbed(each) if isinstance(each, str) else each for each in value)
    try:
        text = json.dumps(value, default=str, sort_keys=True)
    except (TypeError, ValueError):
        text = str(value)
    return redaction.scrub_text(text)


def _homogeneous(values: Sequence[Any]) -> bool:
    kinds = {type(each) for each in values}
    return len(kinds) <= 1 and kinds <= {str, bool, int, float}


def span_context(trace_id: str, span_id: str, *, sampled: bool | None) -> SpanContext | None:
    """A remote span context from hex ids, or ``None`` when they are not valid ids."""
    try:
        context = SpanContext(
            int(trace_id, 16),
            int(span_id, 16),
            is_remote=True,
            trace_flags=_SAMPLED if sampled else _NOT_SAMPLED,
        )
    except (TypeError, ValueError):
        return None
    valid = len(trace_id) == 32 and len(span_id) == 16 and context.is_valid
    return context if valid else None


def otel_link(link: _links.Link) -> trace.Link | None:
    """``link`` as an OpenTelemetry link (``None`` when its ids are not valid)."""
    context = span_context(link.trace_id, link.span_id, sampled=link.sampled)
    return None if context is None else trace.Link(context, {LINK_TYPE_ATTRIBUTE: link.type})


def record_exception(span: trace.Span, exc: BaseException) -> None:
    """An ``exception`` event (OpenTelemetry's conventions) and an error status, both scrubbed."""
    exc_type = type(exc)
    module = exc_type.__module__
    qualified = exc_type.__qualname__ if module == "builtins" else f"{module}.{exc_type.__qualname__}"
    span.add_event(
        "exception",
        {
            "exception.type": qualified,
            "exception.message": redaction.scrub_text(str(exc)),
            "exception.stacktrace": redaction.scrub_text("".join(traceback.format_exception(exc))),
        },
    )
    span.set_status(Status(StatusCode.ERROR, exc_type.__name__))


class OtelPart:
    """An OpenTelemetry span as one half of a library span."""

    __slots__ = ("linked", "span")

    def __init__(self, span: trace.Span) -> None:
        self.span = span
        self.linked: dict[str, set[str]] = {}

    def set(self, key: str, value: Any, *, tag: bool) -> None:
        self.span.set_attribute(key, attribute_value(key, value))

    def link(self, link: _links.Link) -> None:
        converted = otel_link(link)
        if converted is None:
            logger.debug("not linking to %r: not a valid span context", link)
            return
        self.span.add_link(converted.context, converted.attributes)
        self.mirror(link)

    def mirror(self, link: _links.Link) -> None:
        """Name the linked trace in a span attribute too (links cannot be searched)."""
        trace_ids = self.linked.setdefault(link.type, set())
        trace_ids.add(link.trace_id)
        self.span.set_attribute(link.type, ",".join(sorted(trace_ids)))

    def fail(self) -> None:
        self.span.set_status(Status(StatusCode.ERROR))

    def trace_id(self) -> str | None:
        context = self.span.get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None

    def span_id(self) -> str | None:
        context = self.span.get_span_context()
        return format(context.span_id, "016x") if context.is_valid else None

    def as_current(self) -> contextlib.AbstractContextManager[Any]:
        return trace.use_span(self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False)


def _provider_may_be_set() -> bool:
    """``False`` when the API's own global says no tracer provider is set yet; else ask the API.

    ``trace.get_tracer_provider()`` reads the environment on every call until a provider
    is set (about a microsecond); the API keeps the provider ``trace.set_tracer_provider``
    set in a module global, read here. An API that keeps it elsewhere is always asked.
    """
    return getattr(trace, "_TRACER_PROVIDER", _ASK_THE_API) is not None


_ASK_THE_API = object()


class OtelBackend:
    """Spans through the OpenTelemetry API; on when ``SILO_ROUTER['OPENTELEMETRY']`` allows
    and the project has set a tracer provider."""

    name = "otel"

    def __init__(self, enabled: Callable[[], bool]) -> None:
        self.enabled = enabled
        self.tracer = trace.get_tracer("silo_router", __version__)
        self.provider_set = False  # a global tracer provider is set once and for good
        #: The API loads a provider the environment names on first use, so that one is asked for.
        self.provider_from_environment = OTEL_PYTHON_TRACER_PROVIDER in os.environ

    def active(self) -> bool:
        if not self.enabled():
            return False
        if not self.provider_set and (self.provider_from_environment or _provider_may_be_set()):
            self.provider_set = not isinstance(trace.get_tracer_provider(), _NO_PROVIDER)
        return self.provider_set

    @contextlib.contextmanager
    def _span(
        self,
        op: str,
        description: str,
        kind: str | None,
        context: otel_context.Context | None,
        links: Sequence[_links.Link],
    ) -> Iterator[OtelPart]:
        converted = [(link, otel_link(link)) for link in links]
        with self.tracer.start_as_current_span(
            op,
            context=context,
            kind=_KINDS.get(kind or "internal", SpanKind.INTERNAL),
            attributes={_DESCRIPTION: scrubbed(description)} if description and description != op else None,
            links=[otel for _, otel in converted if otel is not None],
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            part = OtelPart(span)
            for link, otel in converted:
                if otel is not None:
                    part.mirror(link)
            try:
                yield part
            except Exception as exc:
                record_exception(span, exc)
                raise

    def child(
        self, op: str, description: str, kind: str | None, *, links: Sequence[_links.Link] = ()
    ) -> contextlib.AbstractContextManager[OtelPart]:
        return self._span(op, description, kind, None, links)

    @contextlib.contextmanager
    def join(
        self,
        op: str,
        description: str,
        kind: str | None,
        carrier: Mapping[str, str],
        detached: bool,
        *,
        links: Sequence[_links.Link] = (),
    ) -> Iterator[OtelPart]:
        extracted = propagate.extract(dict(carrier))
        carried = trace.get_current_span(extracted).get_span_context()
        current = trace.get_current_span().get_span_context()
        if not carried.is_valid or (
            not detached and current.is_valid and current.trace_id == carried.trace_id
        ):  # nothing to join, or already continued (an instrumentation of Django's, Celery's)
            with self._span(op, description, kind, None, links) as part:
                yield part
            return
        token = otel_context.attach(extracted)  # the carried baggage too, for what this flow propagates
        try:
            with self._span(op, description, kind, None, links) as part:
                yield part
        finally:
            otel_context.detach(token)

    def root(
        self,
        op: str,
        description: str,
        kind: str | None,
        trace_id: str | None,
        span_id: str | None,
        *,
        links: Sequence[_links.Link] = (),
    ) -> contextlib.AbstractContextManager[OtelPart]:
        parent = _chosen_parent(trace_id, span_id) if trace_id else None
        if parent is None:
            return self._span(op, description, kind, otel_context.Context(), links)
        return self._span(op, description, kind, trace.set_span_in_context(NonRecordingSpan(parent)), links)

    def current_trace_id(self) -> str | None:
        context = trace.get_current_span().get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None

    def inject(self, carrier: dict[str, str]) -> None:
        """Add the global propagator's headers to ``carrier`` (which another back end may have filled).

        Keys already there stay, and ``baggage`` members are merged, unless the propagator
        writes ``sentry-trace`` itself (Sentry's OTLP integration sets such a propagator):
        then OpenTelemetry is the source of Sentry's headers too, and its ``sentry-trace``
        and ``sentry-*`` baggage replace sentry-sdk's own.
        """
        if not trace.get_current_span().get_span_context().is_valid:
            return
        written: dict[str, str] = {}
        propagate.inject(written)
        owns_sentry = SENTRY_TRACE in written
        for key, value in written.items():
            if key != BAGGAGE and (owns_sentry or not carrier.get(key)):
                carrier[key] = value
        ours, theirs = written.get(BAGGAGE, ""), carrier.get(BAGGAGE, "")
        if owns_sentry:
            baggage = merged_baggage(ours, theirs, skip_prefix=SENTRY_BAGGAGE_PREFIX)
        else:
            baggage = merged_baggage(theirs, ours)
        if baggage:
            carrier[BAGGAGE] = baggage
        else:
            carrier.pop(BAGGAGE, None)


def _chosen_parent(trace_id: str, span_id: str | None) -> SpanContext | None:
    """The remote parent that gives a new root the trace id ``trace_id`` (sampled: it was chosen)."""
    digits = trace_id.replace("-", "").lower()
    if span_id is None:
        try:
            digits, span_id = _links.notification_ids(digits)
        except ValueError:
            logger.warning("not a trace id: %r; starting a trace of its own", trace_id)
            return None
    parent = span_context(digits, span_id.lower(), sampled=True)
    if parent is None:
        logger.warning("not a trace id and span id: %r, %r; starting a trace of its own", trace_id, span_id)
    return parent


def merged_baggage(first: str, second: str, *, skip_prefix: str | None = None) -> str:
    """Two ``baggage`` headers as one: the members of ``first``, then those of ``second`` with new keys.

    Members of ``second`` whose key starts with ``skip_prefix`` are left out.
    """
    members: list[str] = []
    keys: set[str] = set()
    for header, skipping in ((first, None), (second, skip_prefix)):
        for member in header.split(","):
            key = member.split("=", 1)[0].strip()
            if key and key not in keys and not (skipping and key.startswith(skipping)):
                members.append(member.strip())
                keys.add(key)
    return ",".join(members)
