"""Spans of a flow, written once and sent to every active back end (sentry-sdk, OpenTelemetry).

:func:`stage` is a step inside the current span; :func:`flow` is where one process's
part of a flow begins: it joins the trace its carrier names (as a child span when
Django's or Celery's integration has already continued it, else as a transaction of
its own), or starts a new trace, linked to its causes. With no back end active both
cost one check and yield :data:`NO_SPAN`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from . import links as _links
from . import names


class Part(Protocol):
    """One back end's half of a :class:`Span`."""

    def set(self, key: str, value: Any, *, tag: bool) -> None: ...
    def link(self, link: _links.Link) -> None: ...
    def fail(self) -> None: ...
    def trace_id(self) -> str | None: ...
    def span_id(self) -> str | None: ...
    def as_current(self) -> contextlib.AbstractContextManager[None]: ...


class Backend(Protocol):
    """A tracing back end: sentry-sdk, or OpenTelemetry through its API."""

    name: str

    def active(self) -> bool: ...
    def child(
        self, op: str, description: str, kind: str | None, *, links: Sequence[_links.Link] = ()
    ) -> contextlib.AbstractContextManager[Part]: ...
    def join(
        self,
        op: str,
        description: str,
        kind: str | None,
        carrier: Mapping[str, str],
        detached: bool,
        *,
        links: Sequence[_links.Link] = (),
    ) -> contextlib.AbstractContextManager[Part]: ...
    def root(
        self,
        op: str,
        description: str,
        kind: str | None,
        trace_id: str | None,
        span_id: str | None,
        *,
        links: Sequence[_links.Link] = (),
    ) -> contextlib.AbstractContextManager[Part]: ...
    def inject(self, carrier: dict[str, str]) -> None: ...
    def current_trace_id(self) -> str | None: ...


class Span:
    """One stage of a flow in every active back end; set attributes and links on it."""

    __slots__ = ("_parts",)

    def __init__(self, parts: Mapping[str, Part]) -> None:
        self._parts = parts

    def set(self, **attributes: Any) -> None:
        """Set attributes by short name (``kind=...`` is ``silo_router.kind``); ``None`` is skipped."""
        if not self._parts:
            return
        parts, tags = self._parts.values(), names.TAGS
        for name, value in attributes.items():
            if value is None:
                continue
            key, tag = _attribute_name(name), name in tags
            for part in parts:
                part.set(key, value, tag=tag)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set attributes by full name (``messaging.message.id``, say); never tags."""
        for key, value in attributes.items():
            if value is None:
                continue
            for part in self._parts.values():
                part.set(key, value, tag=False)

    def link(self, *links: _links.Link | Mapping[str, _links.Link]) -> None:
        """Link this span to other spans: a :class:`Link` for every back end, or one per back end
        (what :func:`silo_router.tracing.links.from_headers` returns)."""
        for link in links:
            for backend, part in self._parts.items():
                chosen = link.get(backend) if isinstance(link, Mapping) else link
                if chosen is not None:
                    part.link(chosen)

    def fail(self, outcome: str) -> None:
        """Mark the span failed with ``outcome`` (a short reason, never a secret)."""
        self.set(outcome=outcome)
        for part in self._parts.values():
            part.fail()

    @property
    def trace_id(self) -> str | None:
        """The trace id of this span (Sentry's when both back ends are on)."""
        for part in self._parts.values():
            return part.trace_id()
        return None

    @property
    def span_id(self) -> str | None:
        """The id of this span (Sentry's when both back ends are on)."""
        for part in self._parts.values():
            return part.span_id()
        return None

    @contextlib.contextmanager
    def as_current(self) -> Iterator[None]:
        """Make this (open) span the current one for the block, so that what starts or
        propagates there is its child: an envelope of a batch sent under its own attempt."""
        if not self._parts:
            yield
            return
        with contextlib.ExitStack() as stack:
            for part in self._parts.values():
                stack.enter_context(part.as_current())
            yield

    def __bool__(self) -> bool:
        return bool(self._parts)


@functools.lru_cache(maxsize=512)
def _attribute_name(name: str) -> str:
    return names.attribute(name)


#: The span every call gets when no back end is active.
NO_SPAN = Span({})
_NO_SPAN_CONTEXT = contextlib.nullcontext(NO_SPAN)


_registry: Any = None


def _backends() -> list[Backend]:
    global _registry
    if _registry is None:
        from . import registry  # imported late: the registry imports this module

        _registry = registry
    return [backend for backend in _registry.BACKENDS if backend.active()]


def stage(
    silo: str,
    stage: str,
    description: str = "",
    *,
    span_kind: str | None = None,
    links: Iterable[_links.Link | Mapping[str, _links.Link]] = (),
    **attributes: Any,
) -> contextlib.AbstractContextManager[Span]:
    """A span ``silo_router.<silo>.<stage>`` under the current one (a transaction when there is none)."""
    backends = _backends()
    if not backends:
        return _NO_SPAN_CONTEXT
    return _entered(backends, names.op(silo, stage), description, span_kind, None, links, attributes)


def flow(
    silo: str,
    stage: str,
    description: str = "",
    *,
    carrier: Mapping[str, str] | None = None,
    detached: bool = False,
    new_trace: bool = False,
    trace_id: str | None = None,
    span_id: str | None = None,
    span_kind: str | None = None,
    links: Iterable[_links.Link | Mapping[str, _links.Link]] = (),
    **attributes: Any,
) -> contextlib.AbstractContextManager[Span]:
    """Where a process's part of a flow begins.

    With ``carrier`` (propagation headers from an envelope, a task, a request) it joins
    that trace; ``detached`` makes it a transaction of its own even inside a live span,
    for work that may outlive that span (on another thread, after a response). With
    ``new_trace`` (or an explicit ``trace_id``) it starts a trace of its own, to be linked
    to its causes with ``links``; with neither it is a :func:`stage`. ``span_kind`` is
    OpenTelemetry's (``server``, ``client``, ``producer``, ``consumer``).
    """
    backends = _backends()
    if not backends:
        return _NO_SPAN_CONTEXT
    if new_trace or trace_id:
        mode: Any = ("root", trace_id, span_id)
    elif carrier:
        mode = ("join", carrier, detached)
    else:
        mode = None
    return _entered(backends, names.op(silo, stage), description, span_kind, mode, links, attributes)


@contextlib.contextmanager
def _entered(
    backends: list[Backend],
    op: str,
    description: str,
    kind: str | None,
    mode: Any,
    links: Iterable[_links.Link | Mapping[str, _links.Link]],
    attributes: Mapping[str, Any],
) -> Iterator[Span]:
    links = list(links) if links else []
    description = description or op
    if len(backends) == 1:  # the common case: one back end, no ExitStack
        backend = backends[0]
        with _started(backend, op, description, kind, mode, _links_for(backend.name, links)) as part:
            span = Span({backend.name: part})
            if attributes:
                span.set(**attributes)
            try:
                yield span
            except BaseException:
                part.fail()
                raise
        return
    with contextlib.ExitStack() as stack:
        parts: dict[str, Part] = {}
        for backend in backends:
            chosen = _links_for(backend.name, links)  # at the start, where samplers see them
            parts[backend.name] = stack.enter_context(_started(backend, op, description, kind, mode, chosen))
        span = Span(parts)
        if attributes:
            span.set(**attributes)
        try:
            yield span
        except BaseException:
            for part in parts.values():
                part.fail()
            raise


def _started(
    backend: Backend, op: str, description: str, kind: str | None, mode: Any, links: list[_links.Link]
) -> contextlib.AbstractContextManager[Part]:
    """``backend``'s span for ``mode``: a child (``None``), a joined trace or a new root."""
    if mode is None:
        return backend.child(op, description, kind, links=links)
    if mode[0] == "join":
        return backend.join(op, description, kind, mode[1], mode[2], links=links)
    return backend.root(op, description, kind, mode[1], mode[2], links=links)


def _links_for(backend: str, links: list[_links.Link | Mapping[str, _links.Link]]) -> list[_links.Link]:
    """The links meant for ``backend``: every plain :class:`Link`, and its own of each mapping."""
    chosen: list[_links.Link] = []
    if not links:
        return chosen
    for link in links:
        picked = link.get(backend) if isinstance(link, Mapping) else link
        if picked is not None:
            chosen.append(picked)
    return chosen


def propagation_headers() -> dict[str, str]:
    """The propagation headers of the current span in every active back end.

    ``sentry-trace`` and ``baggage`` from sentry-sdk, ``traceparent`` (and
    ``tracestate``) from OpenTelemetry: what an envelope, a task or a request carries.
    """
    headers: dict[str, str] = {}
    for backend in _backends():
        backend.inject(headers)
    return headers


def current_trace_id() -> str | None:
    """The trace id of the current span (the first active back end's), or ``None``."""
    for backend in _backends():
        return backend.current_trace_id()
    return None


def active() -> bool:
    """Whether any tracing back end is on (so callers can skip building costly attributes)."""
    return bool(_backends())
