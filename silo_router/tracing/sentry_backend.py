"""The sentry-sdk back end of :mod:`silo_router.tracing.spans`.

sentry-sdk 2.x has no span-link API, so links wait in span data under
:data:`names.LINKS_DATA_KEY` and a global event processor moves them where Sentry's
span-link format puts them: ``contexts.trace.links`` for a transaction's root span,
``spans[i].links`` for a child. Each link's trace id is mirrored in a data attribute
named after its type, which Sentry can search.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sentry_sdk
from sentry_sdk.scope import add_global_event_processor

from . import links as _links
from . import names


class SentryPart:
    """A sentry-sdk span or transaction as one half of a library span."""

    __slots__ = ("links", "span")

    def __init__(self, span: Any) -> None:
        self.span = span
        self.links: list[_links.Link] = []

    def set(self, key: str, value: Any, *, tag: bool) -> None:
        self.span.set_data(key, value)
        if tag and isinstance(value, str | int | bool):
            self.span.set_tag(key, value)

    def link(self, link: _links.Link) -> None:
        self.links.append(link)
        self.span.set_data(names.LINKS_DATA_KEY, [each.as_sentry() for each in self.links])
        mirrored = sorted({each.trace_id for each in self.links if each.type == link.type})
        self.span.set_data(link.type, ",".join(mirrored))

    def fail(self) -> None:
        self.span.set_status("internal_error")

    def trace_id(self) -> str | None:
        return str(self.span.trace_id)

    def span_id(self) -> str | None:
        return str(self.span.span_id)

    @contextlib.contextmanager
    def as_current(self) -> Iterator[None]:
        scope = sentry_sdk.get_current_scope()
        previous = scope.span
        scope.span = self.span
        try:
            yield
        finally:
            scope.span = previous


class SentryBackend:
    """Spans through sentry-sdk's API; active when a client is initialised."""

    name = "sentry"

    def active(self) -> bool:
        """Whether a scope of this context has an active client: ``get_client().is_active()``, cheaper.

        ``get_client()`` builds a ``NonRecordingClient`` whenever no scope has a client,
        which is every call in a process without sentry-sdk; asking the three scopes
        (current, isolation, global, the order ``get_client`` reads them in) builds nothing.
        """
        return (
            sentry_sdk.get_current_scope().client.is_active()
            or sentry_sdk.get_isolation_scope().client.is_active()
            or sentry_sdk.get_global_scope().client.is_active()
        )

    @contextlib.contextmanager
    def child(
        self, op: str, description: str, kind: str | None, *, links: Sequence[_links.Link] = ()
    ) -> Iterator[SentryPart]:
        if _live_span() is None:
            with sentry_sdk.start_transaction(op=op, name=description) as transaction:
                yield _linked(SentryPart(transaction), links)
            return
        with sentry_sdk.start_span(op=op, name=description) as span:
            yield _linked(SentryPart(span), links)

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
    ) -> Iterator[SentryPart]:
        current = None if detached else _live_span()
        carried = _links.from_headers(carrier).get("sentry")
        if carried is None or (current is not None and current.trace_id == carried.trace_id):
            with self.child(op, description, kind, links=links) as part:  # already continued (Django's, Celery's)
                yield part
            return
        with sentry_sdk.isolation_scope():
            transaction = sentry_sdk.continue_trace(dict(carrier), op=op, name=description, source="custom")
            with sentry_sdk.start_transaction(transaction) as started:
                yield _linked(SentryPart(started), links)

    @contextlib.contextmanager
    def root(
        self,
        op: str,
        description: str,
        kind: str | None,
        trace_id: str | None,
        span_id: str | None,
        *,
        links: Sequence[_links.Link] = (),
    ) -> Iterator[SentryPart]:
        with sentry_sdk.isolation_scope():
            fields: dict[str, Any] = {"op": op, "name": description, "source": "custom"}
            if trace_id:
                fields["trace_id"] = trace_id
            if span_id:
                fields["span_id"] = span_id
            with sentry_sdk.start_transaction(**fields) as transaction:
                yield _linked(SentryPart(transaction), links)

    def current_trace_id(self) -> str | None:
        span = sentry_sdk.get_current_span()
        return None if span is None else str(span.trace_id)

    def inject(self, carrier: dict[str, str]) -> None:
        if sentry_sdk.get_current_span() is None:
            return  # no span, no flow to continue: the scope's own trace id names nothing sent
        traceparent = sentry_sdk.get_traceparent()
        if traceparent:
            carrier["sentry-trace"] = traceparent
        baggage = sentry_sdk.get_baggage()
        if baggage:
            carrier["baggage"] = baggage


def _linked(part: SentryPart, links: Sequence[_links.Link]) -> SentryPart:
    for link in links:
        part.link(link)
    return part


def _live_span() -> Any:
    """The current span, if its transaction will still be sent (not finished, not an orphan)."""
    span = sentry_sdk.get_current_span()
    if span is None:
        return None
    transaction = span.containing_transaction
    if transaction is None or span.timestamp is not None or transaction.timestamp is not None:
        return None  # a span of no transaction (never sent) or of one already sent
    return span


def move_links(event: Any, hint: dict[str, Any]) -> Any:
    """Put the links waiting in span data where Sentry's span-link format wants them."""
    if event.get("type") != "transaction":
        return event
    trace = (event.get("contexts") or {}).get("trace")
    if isinstance(trace, dict):
        _move(trace)
    for span in event.get("spans") or ():
        if isinstance(span, dict):
            _move(span)
    return event


def _move(span: dict[str, Any]) -> None:
    data = span.get("data")
    if isinstance(data, dict) and names.LINKS_DATA_KEY in data:
        span["links"] = data.pop(names.LINKS_DATA_KEY)


add_global_event_processor(move_links)
