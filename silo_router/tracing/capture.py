"""Seeing traces without a Sentry account: keep what sentry-sdk emits, and read it back.

:class:`CaptureTransport` is a sentry-sdk ``Transport`` that keeps every envelope
sentry-sdk would send: in memory and, given a directory, also one file per envelope
(``<pid>-<token>-<n>.envelope``, written whole and then renamed, so several processes
can share a directory and a reader never sees half a file)::

    sentry_sdk.init(
        dsn=capture.CAPTURE_DSN,
        transport=capture.CaptureTransport("var/sentry"),
        integrations=[DjangoIntegration(), CeleryIntegration()],
        traces_sampler=tracing.traces_sampler,
        before_send=tracing.before_send,
        before_send_transaction=tracing.before_send_transaction,
    )

The reader turns captured envelopes (a transport's, or a directory written by several
processes) into :class:`CapturedTransaction` and :class:`CapturedSpan` objects grouped by
trace id (:func:`traces`), which is what :mod:`.waterfall` draws and what tests assert
on. What is read is exactly what sentry-sdk emitted: the scrubbers ran before the
transport got it.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import os
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

#: A DSN that names no server: with a :class:`CaptureTransport` nothing is sent anywhere.
CAPTURE_DSN = "https://public@sentry.invalid/1"
#: The suffix of a captured envelope's file.
SUFFIX = ".envelope"


class CaptureError(ValueError):
    """A captured file is not a sentry-sdk envelope."""


@dataclasses.dataclass(frozen=True)
class CapturedEnvelope:
    """One envelope as captured: where it came from (a file name, or ``memory``) and which process wrote it."""

    envelope: Envelope
    source: str
    process: str


class CaptureTransport(Transport):
    """A sentry-sdk transport that keeps every envelope, in memory and optionally in ``directory``.

    A long-running process that writes to a directory passes ``memory=False``, so what
    it captured does not pile up in memory too.
    """

    def __init__(
        self, directory: str | Path | None = None, *, memory: bool = True, options: dict[str, Any] | None = None
    ) -> None:
        super().__init__(options)
        self.directory = Path(directory) if directory is not None else None
        self.memory = memory
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.captured: list[CapturedEnvelope] = []
        self._token = secrets.token_hex(4)
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    def capture_envelope(self, envelope: Envelope) -> None:
        with self._lock:
            number = next(self._numbers)
            name = f"{os.getpid()}-{self._token}-{number:06d}{SUFFIX}"
            if self.memory:
                self.captured.append(CapturedEnvelope(envelope, "memory", str(os.getpid())))
        if self.directory is not None:
            path = self.directory / name
            partial = self.directory / f".{name}.partial"
            partial.write_bytes(envelope.serialize())
            os.replace(partial, path)  # whole or not at all, for readers in other processes

    @property
    def envelopes(self) -> list[Envelope]:
        """Every envelope kept so far, in the order sentry-sdk sent them."""
        with self._lock:
            return [each.envelope for each in self.captured]

    def clear(self) -> None:
        """Forget what was kept in memory (files stay)."""
        with self._lock:
            self.captured.clear()


def read_directory(directory: str | Path) -> list[CapturedEnvelope]:
    """Every envelope in ``directory`` (files ending ``.envelope``), oldest file first."""
    found: list[tuple[float, str, CapturedEnvelope]] = []
    for path in Path(directory).glob(f"*{SUFFIX}"):
        try:
            raw, modified = path.read_bytes(), path.stat().st_mtime
        except FileNotFoundError:  # removed since it was listed
            continue
        try:
            envelope = Envelope.deserialize(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise CaptureError(f"{path.name} is not a sentry-sdk envelope: {type(exc).__name__}") from exc
        found.append((modified, path.name, CapturedEnvelope(envelope, path.name, path.name.split("-", 1)[0])))
    return [captured for _, _, captured in sorted(found, key=lambda entry: (entry[0], entry[1]))]


#: What the reader accepts: a capture directory, a transport, or envelopes (plain or captured).
Source = str | Path | CaptureTransport | Iterable[Envelope | CapturedEnvelope]


def captured(source: Source) -> list[CapturedEnvelope]:
    """The envelopes of ``source`` as :class:`CapturedEnvelope` objects."""
    if isinstance(source, str | Path):
        return read_directory(source)
    if isinstance(source, CaptureTransport):
        with source._lock:
            return list(source.captured)
    return [each if isinstance(each, CapturedEnvelope) else CapturedEnvelope(each, "memory", "") for each in source]


def items(source: Source, type: str) -> list[dict[str, Any]]:
    """The JSON payloads of every item of ``type`` (``transaction``, ``event``, ``trace_metric``, ``log``...)."""
    payloads = []
    for each in captured(source):
        for item in each.envelope.items:
            if item.type == type:
                payload = _json(item.get_bytes())
                if isinstance(payload, dict):
                    payloads.append(payload)
    return payloads


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class CapturedSpan:
    """One span as sentry-sdk emitted it (a transaction's root span, or one of its children)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    op: str
    description: str
    #: Unix times, in seconds.
    start: float
    end: float
    status: str | None
    data: Mapping[str, Any]
    tags: Mapping[str, Any]
    #: Sentry's span-link format: ``trace_id``, ``span_id``, ``sampled``, ``attributes``.
    links: tuple[Mapping[str, Any], ...]
    #: The event id of the transaction that holds it.
    transaction_id: str
    #: Whether it is that transaction's root span.
    is_root: bool

    @property
    def duration_ms(self) -> float:
        """How long the span took, in milliseconds."""
        return max(self.end - self.start, 0.0) * 1000

    def attribute(self, name: str) -> Any:
        """A ``silo_router.<name>`` attribute (data first, then tags), or any full name; ``None`` if absent."""
        key = name if "." in name else f"silo_router.{name}"
        if key in self.data:
            return self.data[key]
        return self.tags.get(key)


@dataclasses.dataclass(frozen=True)
class CapturedTransaction:
    """A transaction event: its root span and its child spans, and which process sent it."""

    event_id: str
    name: str
    trace_id: str
    root: CapturedSpan
    spans: tuple[CapturedSpan, ...]
    tags: Mapping[str, Any]
    #: The pid that wrote it (from the file name), ``""`` when unknown.
    process: str
    source: str

    @property
    def all_spans(self) -> tuple[CapturedSpan, ...]:
        """The root span, then the children."""
        return (self.root, *self.spans)


@dataclasses.dataclass(frozen=True)
class Trace:
    """Every captured transaction of one trace id, earliest first."""

    trace_id: str
    transactions: tuple[CapturedTransaction, ...]

    @property
    def spans(self) -> list[CapturedSpan]:
        """Every span of the trace, earliest first."""
        return sorted(
            (span for transaction in self.transactions for span in transaction.all_spans), key=lambda s: s.start
        )

    @property
    def start(self) -> float:
        """When the trace's first span started (Unix time)."""
        return min(transaction.root.start for transaction in self.transactions)

    @property
    def end(self) -> float:
        """When the trace's last span ended (Unix time)."""
        return max(span.end for span in self.spans)

    def find(self, op: str) -> list[CapturedSpan]:
        """The spans whose op is ``op`` or starts with ``op + "."``, earliest first."""
        return [span for span in self.spans if span.op == op or span.op.startswith(op + ".")]


def transactions(source: Source) -> list[CapturedTransaction]:
    """Every transaction in ``source``, in the order captured."""
    found = []
    for each in captured(source):
        for item in each.envelope.items:
            if item.type != "transaction":
                continue
            event = _json(item.get_bytes())
            if isinstance(event, dict):
                transaction = transaction_from_event(event, process=each.process, source=each.source)
                if transaction is not None:
                    found.append(transaction)
    return found


def traces(source: Source) -> dict[str, Trace]:
    """Transactions of ``source`` grouped by trace id, earliest trace first."""
    grouped: dict[str, dict[str, CapturedTransaction]] = {}
    for transaction in transactions(source):  # an envelope read twice counts once
        grouped.setdefault(transaction.trace_id, {}).setdefault(transaction.event_id, transaction)
    built = [
        Trace(trace_id, tuple(sorted(group.values(), key=lambda t: (t.root.start, t.event_id))))
        for trace_id, group in grouped.items()
    ]
    return {trace.trace_id: trace for trace in sorted(built, key=lambda trace: trace.start)}


def transaction_from_event(
    event: Mapping[str, Any], *, process: str = "", source: str = ""
) -> CapturedTransaction | None:
    """A transaction event, as sentry-sdk serialises it, as a :class:`CapturedTransaction` (``None``: no trace)."""
    contexts = event.get("contexts")
    context = contexts.get("trace") if isinstance(contexts, Mapping) else None
    if not isinstance(context, Mapping) or not context.get("trace_id") or not context.get("span_id"):
        return None
    event_id = str(event.get("event_id") or "")
    name = str(event.get("transaction") or "")
    tags = _mapping(event.get("tags"))
    start = _timestamp(event.get("start_timestamp"))
    end = _timestamp(event.get("timestamp"), default=start)
    root = _span(context, event_id, is_root=True, start=start, end=end, description=name, tags=tags)
    children = tuple(
        _span(span, event_id, is_root=False)
        for span in event.get("spans") or ()
        if isinstance(span, Mapping) and span.get("span_id")
    )
    return CapturedTransaction(event_id, name, root.trace_id, root, children, tags, process, source)


def _span(
    raw: Mapping[str, Any],
    transaction_id: str,
    *,
    is_root: bool,
    start: float | None = None,
    end: float | None = None,
    description: str = "",
    tags: Mapping[str, Any] | None = None,
) -> CapturedSpan:
    began = _timestamp(raw.get("start_timestamp")) if start is None else start
    ended = _timestamp(raw.get("timestamp"), default=began) if end is None else end
    links = raw.get("links")
    return CapturedSpan(
        trace_id=str(raw.get("trace_id") or ""),
        span_id=str(raw.get("span_id") or ""),
        parent_span_id=str(raw["parent_span_id"]) if raw.get("parent_span_id") else None,
        op=str(raw.get("op") or ""),
        description=str(raw.get("description") or description or ""),
        start=began,
        end=max(ended, began),
        status=str(raw["status"]) if raw.get("status") else None,
        data=_mapping(raw.get("data")),
        tags=_mapping(raw.get("tags")) if tags is None else tags,
        links=tuple(link for link in links if isinstance(link, Mapping)) if isinstance(links, list) else (),
        transaction_id=transaction_id,
        is_root=is_root,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def _timestamp(value: Any, *, default: float = 0.0) -> float:
    """Unix time of a sentry-sdk timestamp (ISO 8601 text, or seconds)."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            return default
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        return moment.timestamp()
    return default


def iter_links(trace: Trace) -> Iterator[tuple[CapturedSpan, Mapping[str, Any]]]:
    """Every ``(span, link)`` of the trace: the other traces its spans are linked to."""
    for span in trace.spans:
        for link in span.links:
            yield span, link
