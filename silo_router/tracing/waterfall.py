"""A text waterfall of one trace, across processes, with Slack's deadline drawn on it.

:func:`build` lays out a :class:`~.capture.Trace` (transactions from control's web
processes, its Celery workers and the regions) as rows: one per span, in tree order
(children under their parent, following ``parent_span_id`` across processes), each
with its start offset from the trace's first span, its duration and a bar. A vertical
line marks Slack's deadline: the ``deadline_ms`` the control request span recorded
(else 3000 ms), counted from that span's start, control's arrival. A span that ends
past the line is marked ``!``, so a missed deadline shows at a glance. A span's links
to other traces (a late delivery's cause, a notification) get a row of their own.

Pure functions of captured data; :meth:`Waterfall.render` draws it as text::

    for trace in capture.traces("var/sentry").values():
        print(waterfall.build(trace).render())
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import names
from .capture import CapturedSpan, CapturedTransaction, Trace

#: Slack's answer window and a trigger_id's lifetime, when the request span records none.
DEFAULT_DEADLINE_MS = 3000.0
#: The span whose start is control's arrival, and which records the deadline.
REQUEST_OP = names.op(names.CONTROL, "request")
DEADLINE_ATTRIBUTE = names.attribute("deadline_ms")
#: Ops hidden unless asked for: a span per SQL query or Django signal would bury the flow.
QUIET_OPS = ("db", "event.django")
#: The bar's width in characters.
BAR_WIDTH = 48
#: Longer span descriptions (an SQL query, say) are cut to this many characters.
MAX_DESCRIPTION = 72

_NOTE_ATTRIBUTES = (names.attribute(names.OUTCOME), names.attribute("error"))


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a waterfall: a span, or a link of the span above it to another trace."""

    depth: int
    op: str
    description: str
    #: Milliseconds from the trace's first span.
    offset_ms: float
    duration_ms: float
    #: Whether the span ends after the deadline line.
    past_deadline: bool
    #: The span's outcome, error and non-ok status, in short.
    note: str = ""
    #: On a transaction's root row: the process that sent it (``control web``, ``region worker``...).
    process: str = ""
    span: CapturedSpan | None = None
    #: On a link row: the linked trace and span ids and the link's type.
    linked_trace_id: str | None = None
    linked_span_id: str | None = None
    link_type: str | None = None

    @property
    def end_ms(self) -> float:
        """Milliseconds from the trace's first span to this span's end."""
        return self.offset_ms + self.duration_ms

    @property
    def is_link(self) -> bool:
        """Whether this row is a link to another trace rather than a span."""
        return self.linked_trace_id is not None


@dataclasses.dataclass(frozen=True)
class Waterfall:
    """One trace laid out as rows, with Slack's deadline line."""

    trace_id: str
    rows: tuple[Row, ...]
    total_ms: float
    #: Slack's window (``deadline_ms`` of the request span, else 3000), ``None``: no line.
    deadline_ms: float | None
    #: Where the line is: milliseconds from the trace's first span.
    deadline_at_ms: float | None
    transactions: int
    processes: int
    #: Spans left out (``QUIET_OPS``) and the ops they had.
    hidden: int = 0
    hidden_ops: tuple[str, ...] = ()

    def spans(self, op: str) -> list[Row]:
        """The span rows whose op is ``op`` or starts with ``op + "."``."""
        return [row for row in self.rows if not row.is_link and (row.op == op or row.op.startswith(op + "."))]

    @property
    def past_deadline(self) -> list[Row]:
        """The span rows that end after the deadline line."""
        return [row for row in self.rows if row.past_deadline]

    @property
    def links(self) -> list[Row]:
        """The link rows."""
        return [row for row in self.rows if row.is_link]

    def render(self, *, width: int = BAR_WIDTH) -> str:
        """The waterfall as text: a header, the axis, one line per row."""
        width = max(width, 12)
        axis_ms = max(self.total_ms, (self.deadline_at_ms or 0.0) * 1.1, 1.0)

        def column(ms: float) -> int:
            return min(max(int(ms / axis_ms * (width - 1)), 0), width - 1)

        line = column(self.deadline_at_ms) if self.deadline_at_ms is not None else None
        axis = self._axis(width, line, axis_ms)
        lines = [self._title(), self._legend(), f"{'start ms':>9} {'dur ms':>8}  {axis}"]
        for row in self.rows:
            bar = [" "] * width
            if line is not None:
                bar[line] = "|"
            if not row.is_link:
                first, last = column(row.offset_ms), column(row.end_ms)
                if line is not None and row.past_deadline:
                    last = max(last, line)  # a span past the line always crosses or follows it
                elif line is not None and line > 0:
                    first, last = min(first, line - 1), min(last, line - 1)  # and one inside never touches it
                for cell in range(first, last + 1):
                    bar[cell] = "+" if cell == line else "#"
            label = "  " * row.depth + _label(row)
            if row.is_link:
                lines.append(f"{'':>9} {'':>8}  {''.join(bar)}    {label}")
                continue
            mark = "!" if row.past_deadline else " "
            lines.append(f"{row.offset_ms:9.1f} {row.duration_ms:8.1f}  {''.join(bar)} {mark}  {label}")
        if self.hidden:
            lines.append(f"({_count(self.hidden, 'span')} not shown: {', '.join(self.hidden_ops)})")
        return "\n".join(lines)

    def _title(self) -> str:
        spans = sum(not row.is_link for row in self.rows) + self.hidden
        processes = f" from {_count(self.processes, 'process', 'processes')}" if self.processes > 1 else ""
        return (
            f"trace {self.trace_id}: {_count(self.transactions, 'transaction')}{processes}, "
            f"{_count(spans, 'span')}, {self.total_ms / 1000:.2f} s"
        )

    def _legend(self) -> str:
        if self.deadline_at_ms is None or self.deadline_ms is None:
            return "no control request in this trace: no deadline line"
        return (
            f"| = Slack's deadline, {self.deadline_ms:.0f} ms after control's arrival; "
            f"! = ends past it ({_count(len(self.past_deadline), 'span')})"
        )

    def _axis(self, width: int, line: int | None, axis_ms: float) -> str:
        """``0`` on the left, the line with its offset, the axis's end on the right where there is room."""
        axis = [" "] * width
        _write(axis, 0, "0 ms")
        end = f"{axis_ms:.0f}"
        end_at = width - len(end)
        if line is None or self.deadline_at_ms is None:
            _write(axis, end_at, end)
            return "".join(axis)
        at = f"{self.deadline_at_ms:.0f}"
        if line + 1 + len(at) < end_at:
            _write(axis, end_at, end)
            _write(axis, line + 1, at)
        elif line - len(at) > 5:
            _write(axis, line - len(at), at)
        axis[line] = "|"
        return "".join(axis)


def _count(number: int, singular: str, plural: str = "") -> str:
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def _write(cells: list[str], at: int, text: str) -> None:
    for offset, char in enumerate(text):
        if 0 <= at + offset < len(cells):
            cells[at + offset] = char


def _label(row: Row) -> str:
    if row.is_link:
        if row.span is not None and row.linked_trace_id == row.span.trace_id:
            return f"-> linked to span {row.linked_span_id} of this trace ({row.link_type})"
        return f"-> linked to trace {row.linked_trace_id} ({row.link_type})"
    description = (
        row.description if len(row.description) <= MAX_DESCRIPTION else row.description[: MAX_DESCRIPTION - 3] + "..."
    )
    text = row.op if not description or description == row.op else f"{row.op}  {description}"
    if row.note:
        text += f"  [{row.note}]"
    if row.process:
        text += f"  <{row.process}>"
    return text


def build(
    trace: Trace,
    *,
    deadline_ms: float | None = None,
    hide: Iterable[str] = QUIET_OPS,
    scrub: Callable[[str], str] | None = None,
) -> Waterfall:
    """Lay ``trace`` out as a :class:`Waterfall`.

    ``deadline_ms`` overrides the window the request span recorded; ``hide`` lists op
    prefixes to leave out (their children move up to the nearest shown ancestor);
    ``scrub`` rewrites every description and note before it is shortened
    (:func:`silo_router.redaction.scrub_text`, for a capture made without the scrubbers).
    """
    clean = scrub or _as_is
    quiet = tuple(hide)
    every = _unique(trace.spans)
    shown = [span for span in every if not _matches(span.op, quiet)]
    hidden = [span for span in every if _matches(span.op, quiet)]
    start = trace.start
    line_at, window = _deadline(trace, start, deadline_ms)
    labels = process_labels(trace)
    rows: list[Row] = []
    for depth, span in _tree(shown, {span.span_id: span.parent_span_id for span in every}):
        offset = (span.start - start) * 1000
        rows.append(
            Row(
                depth=depth,
                op=span.op,
                description=clean(span.description),
                offset_ms=offset,
                duration_ms=span.duration_ms,
                past_deadline=line_at is not None and offset + span.duration_ms > line_at,
                note=clean(note(span)),
                process=labels.get(span.transaction_id, "") if span.is_root else "",
                span=span,
            )
        )
        for link in span.links:
            attributes = link.get("attributes")
            kind = attributes.get("sentry.link.type") if isinstance(attributes, Mapping) else None
            rows.append(
                Row(
                    depth=depth + 1,
                    op="link",
                    description="",
                    offset_ms=offset,
                    duration_ms=0.0,
                    past_deadline=False,
                    span=span,
                    linked_trace_id=str(link.get("trace_id") or "?"),
                    linked_span_id=str(link.get("span_id") or "?"),
                    link_type=str(kind or "link"),
                )
            )
    processes = {transaction.process for transaction in trace.transactions if transaction.process}
    return Waterfall(
        trace_id=trace.trace_id,
        rows=tuple(rows),
        total_ms=(trace.end - start) * 1000,
        deadline_ms=window,
        deadline_at_ms=line_at,
        transactions=len(trace.transactions),
        processes=len(processes) or 1,
        hidden=len(hidden),
        hidden_ops=tuple(sorted({span.op for span in hidden})),
    )


def render(
    trace: Trace,
    *,
    deadline_ms: float | None = None,
    hide: Iterable[str] = QUIET_OPS,
    scrub: Callable[[str], str] | None = None,
    width: int = BAR_WIDTH,
) -> str:
    """:func:`build` then :meth:`Waterfall.render`."""
    return build(trace, deadline_ms=deadline_ms, hide=hide, scrub=scrub).render(width=width)


def _as_is(text: str) -> str:
    return text


def _unique(spans: Iterable[CapturedSpan]) -> list[CapturedSpan]:
    """Spans by id, once each (an envelope captured twice lists its spans twice)."""
    seen: dict[str, CapturedSpan] = {}
    for span in spans:
        seen.setdefault(span.span_id, span)
    return list(seen.values())


def _matches(op: str, prefixes: tuple[str, ...]) -> bool:
    return any(op == prefix or op.startswith(prefix + ".") for prefix in prefixes)


def _deadline(trace: Trace, start: float, override: float | None) -> tuple[float | None, float | None]:
    """``(where the line is, the window)`` in ms: from the first control request span's start."""
    requests = trace.find(REQUEST_OP)
    if not requests:
        return (override, override) if override is not None else (None, None)
    request = requests[0]
    window = override if override is not None else _number(request.data.get(DEADLINE_ATTRIBUTE))
    window = DEFAULT_DEADLINE_MS if window is None else window
    return (request.start - start) * 1000 + window, window


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def _tree(spans: list[CapturedSpan], parents: Mapping[str, str | None]) -> list[tuple[int, CapturedSpan]]:
    """``(depth, span)`` in tree order: each span's children (by start) right under it."""
    shown = {span.span_id: span for span in spans}

    def shown_parent(span: CapturedSpan) -> str | None:
        parent, seen = span.parent_span_id, {span.span_id}
        while parent is not None and parent not in shown and parent not in seen:
            seen.add(parent)
            parent = parents.get(parent)  # a hidden span: look at its own parent
        return parent if parent in shown else None

    children: dict[str | None, list[CapturedSpan]] = {}
    for span in spans:
        children.setdefault(shown_parent(span), []).append(span)
    for group in children.values():
        group.sort(key=lambda span: (span.start, not span.is_root, span.span_id))
    ordered: list[tuple[int, CapturedSpan]] = []
    visited: set[str] = set()
    stack = [(0, span) for span in reversed(children.get(None, []))]
    while stack:
        depth, span = stack.pop()
        if span.span_id in visited:
            continue
        visited.add(span.span_id)
        ordered.append((depth, span))
        stack.extend((depth + 1, child) for child in reversed(children.get(span.span_id, [])))
    # A cycle of parents (never from sentry-sdk) would leave spans unvisited: show them at the top level.
    ordered.extend((0, span) for span in spans if span.span_id not in visited)
    return ordered


def note(span: CapturedSpan) -> str:
    """A span's outcome, error and non-ok status in short (``outcome=opened``, ``error=expired_trigger_id``)."""
    parts = []
    for key in _NOTE_ATTRIBUTES:
        value = span.data.get(key, span.tags.get(key))
        if value not in (None, ""):
            parts.append(f"{key.rsplit('.', 1)[-1]}={value}")
    for key, value in span.data.items():
        if key not in _NOTE_ATTRIBUTES and key.endswith(".error") and value not in (None, ""):
            parts.append(f"{key}={value}")
    if span.status and span.status != "ok":
        parts.append(f"status={span.status}")
    return ", ".join(parts)


def process_labels(trace: Trace) -> dict[str, str]:
    """Which process sent each transaction (by event id), as far as the spans tell: ``control web``, ``region us``...

    A transaction with none of the library's spans (Django's ``http.server`` around a
    region's envelope endpoint, say) takes the silo its process showed elsewhere.
    """
    own = {transaction.event_id: _silo_and_region(transaction) for transaction in trace.transactions}
    by_process: dict[str, tuple[str, str]] = {}
    for transaction in trace.transactions:
        silo, region = own[transaction.event_id]
        if transaction.process and silo:
            known = by_process.get(transaction.process, ("", ""))
            by_process[transaction.process] = (known[0] or silo, known[1] or region)
    labels = {}
    for transaction in trace.transactions:
        silo, region = own[transaction.event_id]
        process_silo, process_region = by_process.get(transaction.process, ("", ""))
        silo = silo or process_silo
        region = region or (process_region if silo == process_silo else "")
        root = transaction.root.op
        kind = "web" if root == "http.server" else "worker" if root.startswith("queue.") else ""
        label = " ".join(part for part in (silo, region, kind) if part)
        if transaction.process:
            label = f"{label}, pid {transaction.process}" if label else f"pid {transaction.process}"
        labels[transaction.event_id] = label
    return labels


def _silo_and_region(transaction: CapturedTransaction) -> tuple[str, str]:
    """The silo of the transaction's first library span, and for a region the region its spans name."""
    silo = ""
    for span in transaction.all_spans:
        parts = span.op.split(".")
        if names.is_integration_op(span.op) and len(parts) >= 3 and parts[1] in names.SILOS:
            silo = parts[1]
            break
    if silo != names.REGION:
        return silo, ""
    return silo, next((str(value) for span in transaction.all_spans if (value := span.attribute("region"))), "")
