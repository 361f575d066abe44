"""The transport interface: how a sealed envelope reaches a region, and what travels with it.

Besides the sealed envelope, every transport carries a :class:`Hop`: the propagation
headers of the attempt that sends it (so the region's run is that attempt's child, in
the same trace) and the attempt's number. They travel as HTTP request headers or Celery
message headers, never inside the signed envelope: the same envelope goes out on every
attempt, and a region that does not read them still handles it.
"""

from __future__ import annotations

import abc
import contextlib
import contextvars
import dataclasses
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from silo_router import tracing
from silo_router.envelope import Outcome, Receipt, SealedEnvelope

__all__ = [
    "ATTEMPT_HEADER",
    "REPLAY_HEADER",
    "TRACE_HEADERS",
    "DeliveryError",
    "DeliveryTimeout",
    "Hop",
    "NotSent",
    "Outcome",
    "Receipt",
    "Transport",
    "delivering",
    "delivering_batch",
]

#: The propagation headers of every tracing back end (sentry-sdk's, then W3C's).
TRACE_HEADERS = ("sentry-trace", "baggage", "traceparent", "tracestate")
#: The number of the control attempt that carries an envelope (1 for the first).
ATTEMPT_HEADER = "x-silo-router-attempt"
#: How many times an operator replayed the payload before this attempt (absent: never).
REPLAY_HEADER = "x-silo-router-replay"
#: Longest header value read from the other side (W3C allows 8192 bytes of baggage).
MAX_HEADER_LENGTH = 8192
#: Header values sent or read: printable ASCII, so no header can be split or smuggled.
_HEADER_VALUE = re.compile(rf"[\x20-\x7e]{{1,{MAX_HEADER_LENGTH}}}")
_NUMBER = re.compile(r"[0-9]{1,9}")

_numbering: contextvars.ContextVar[tuple[int | None, int | None]] = contextvars.ContextVar(
    "silo_router_attempt", default=(None, None)
)
_batch_numbering: contextvars.ContextVar[tuple[tuple[int | None, int | None], ...]] = contextvars.ContextVar(
    "silo_router_batch_attempts", default=()
)
_trace: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "silo_router_attempt_trace", default=None
)
_batch_traces: contextvars.ContextVar[tuple[Mapping[str, str], ...]] = contextvars.ContextVar(
    "silo_router_batch_traces", default=()
)
_batch_spans: contextvars.ContextVar[tuple[tracing.Span, ...]] = contextvars.ContextVar(
    "silo_router_batch_spans", default=()
)


@contextlib.contextmanager
def delivering(
    *, attempt: int | None, replays: int | None = None, trace: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Number the attempt made inside this block, for the transport to carry to the region.

    Control wraps ``transport.deliver(...)`` in it; the region's spans then say which
    attempt (and which replay) they are. ``trace``: the attempt's trace headers, when
    its span is not the current one (an envelope of a batch).
    """
    token = _numbering.set((attempt, replays))
    trace_token = _trace.set(trace)
    try:
        yield
    finally:
        _trace.reset(trace_token)
        _numbering.reset(token)


@contextlib.contextmanager
def delivering_batch(
    numbers: Sequence[tuple[int | None, int | None]],
    *,
    traces: Sequence[Mapping[str, str]] = (),
    spans: Sequence[tracing.Span] = (),
) -> Iterator[None]:
    """Number each attempt of the ``deliver_many`` call made inside this block: ``(attempt, replays)``
    per envelope, in the order the envelopes are given; ``traces``: each attempt's own trace
    headers (its span's), so that each region run is a child of its own attempt; ``spans``:
    the attempts' open spans, made current while an envelope is sent alone (a tracing
    integration that injects its own headers, sentry-sdk's Celery one, then injects the
    envelope's own attempt)."""
    token = _batch_numbering.set(tuple(numbers))
    traces_token = _batch_traces.set(tuple(traces))
    spans_token = _batch_spans.set(tuple(spans))
    try:
        yield
    finally:
        _batch_spans.reset(spans_token)
        _batch_traces.reset(traces_token)
        _batch_numbering.reset(token)


@dataclasses.dataclass(frozen=True)
class Hop:
    """What crosses with a sealed envelope besides it: the attempt's trace context and number."""

    trace: Mapping[str, str] = dataclasses.field(default_factory=dict)
    attempt: int | None = None
    replays: int | None = None

    @classmethod
    def current(cls) -> Hop:
        """The hop of the attempt being made here: the current span's headers, the number from :func:`delivering`."""
        attempt, replays = _numbering.get()
        trace = _trace.get()
        return cls(trace=tracing.propagation_headers() if trace is None else trace, attempt=attempt, replays=replays)

    @classmethod
    def for_batch(cls, count: int) -> list[Hop]:
        """The hop of each of ``count`` envelopes of a batch sent here (numbers from :func:`delivering_batch`)."""
        current = tracing.propagation_headers()
        numbers = _batch_numbering.get()
        traces = _batch_traces.get()
        hops = []
        for i in range(count):
            trace = traces[i] if i < len(traces) else current
            attempt, replays = numbers[i] if i < len(numbers) else (None, None)
            hops.append(cls(trace=trace, attempt=attempt, replays=replays))
        return hops

    def headers(self) -> dict[str, str]:
        """As HTTP request or Celery message headers (lower-case names)."""
        found = {name: value for name, value in self.trace.items() if name in TRACE_HEADERS and _sendable(value)}
        if self.attempt is not None:
            found[ATTEMPT_HEADER] = str(self.attempt)
        if self.replays:
            found[REPLAY_HEADER] = str(self.replays)
        return found

    @classmethod
    def from_headers(cls, headers: Mapping[str, Any] | None) -> Hop:
        """Read a hop from received headers (any case); what is not well formed is left out.

        Trace context is telemetry, not input: a garbled header never refuses an envelope.
        """
        if not headers:
            return cls()
        lowered: dict[str, Any] = {}
        for name, value in headers.items():
            if isinstance(name, str):
                lowered.setdefault(name.lower(), value)
        trace = {name: lowered[name] for name in TRACE_HEADERS if _sendable(lowered.get(name))}
        return cls(
            trace=trace, attempt=_number(lowered.get(ATTEMPT_HEADER)), replays=_number(lowered.get(REPLAY_HEADER))
        )

    def span_attributes(self) -> dict[str, Any]:
        """The attempt's number (and replays) as span attributes (short names)."""
        return {"attempt": self.attempt, "replay": True if self.replays else None, "replays": self.replays or None}


def _sendable(value: Any) -> bool:
    return isinstance(value, str) and _HEADER_VALUE.fullmatch(value) is not None


def _number(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        return int(value.strip())
    return None


class DeliveryError(Exception):
    """An envelope did not get through.

    ``retryable`` says whether another attempt may succeed (a region that is down)
    or not (a region that refused this envelope as malformed). ``region_fault`` says
    the region is unwell (it counts toward the region's circuit breaker) rather than
    that this one payload failed there (a handler error: a poison payload must not hold
    back the rest of the region's traffic). ``hold`` marks a fault of the whole hop
    (keys, clocks, addressing, an ingress mid-deploy, an envelope version the region
    does not read yet): every payload would fail the same way, so control holds the
    region's traffic behind its circuit instead of spending attempts.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        region_fault: bool | None = None,
        hold: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.region_fault = retryable if region_fault is None else region_fault
        self.hold = hold


class DeliveryTimeout(DeliveryError):
    """The region did not answer in time; it may still be working on the envelope.

    ``region_fault`` is False when the region had accepted the envelope (a slow
    handler) and True when it never answered (connect or accept timeout).
    """

    def __init__(self, reason: str = "timeout", *, region_fault: bool = True) -> None:
        super().__init__(reason, retryable=True, region_fault=region_fault)


class NotSent(DeliveryError):
    """The envelope of a batch was never sent: the batch's time ran out, or the region failed before its turn.

    No attempt reached the region, so none is counted against the payload or the region.
    """

    def __init__(self, reason: str = "not_sent") -> None:
        super().__init__(reason, retryable=True, region_fault=False)


#: One result per envelope of a batch: the region's receipt, or why that envelope did not get through.
BatchResult = Receipt | DeliveryError


class Transport(abc.ABC):
    """Delivers sealed envelopes to one region."""

    def __init__(self, region: str, options: Mapping[str, Any]) -> None:
        self.region = region
        self.options = options

    @abc.abstractmethod
    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        """Send ``sealed`` and return the region's receipt within ``timeout`` seconds in total.

        With ``wait`` the caller needs the handler's answer (synchronous kinds).
        Without it a transport that can confirm later (``celery``) may return
        ``Outcome.QUEUED`` once the region's queue has the envelope; transports with no
        confirmation channel (``http``, ``local``) always return the handler's outcome.
        Raises ``DeliveryError`` (``DeliveryTimeout`` when ``timeout`` ran out), never
        anything else.
        """

    def deliver_many(
        self, sealed_envelopes: Sequence[SealedEnvelope], *, timeout: float, wait: bool
    ) -> list[BatchResult]:
        """Send envelopes of this region; one result per envelope, in order, within ``timeout`` seconds in total.

        A failure of one envelope is its own result and does not fail the others. Once
        the region fails as a whole (``region_fault``, or a fault of the hop), or the
        time is up, the envelopes not sent yet are :class:`NotSent`. Attempt numbers
        come from :func:`delivering_batch`. This default sends them one by one with
        :meth:`deliver`; a transport that can carry several envelopes at once overrides it.
        """
        deadline = time.monotonic() + timeout
        hops = Hop.for_batch(len(sealed_envelopes))
        spans = _batch_spans.get()
        results: list[BatchResult] = []
        stopped = False
        for i, (sealed, hop) in enumerate(zip(sealed_envelopes, hops, strict=True)):
            remaining = deadline - time.monotonic()
            if stopped or remaining <= 0:
                results.append(
                    NotSent(
                        "not_sent: the batch stopped before this envelope"
                        if stopped
                        else "not_sent: no time left in the batch"
                    )
                )
                continue
            current = spans[i].as_current() if i < len(spans) else contextlib.nullcontext()
            with delivering(attempt=hop.attempt, replays=hop.replays, trace=hop.trace), current:
                try:
                    results.append(self.deliver(sealed, timeout=remaining, wait=wait))
                except DeliveryError as exc:
                    results.append(exc)
                    stopped = exc.region_fault or exc.hold
        return results

    def close(self) -> None:  # noqa: B027 - optional hook, most transports hold nothing
        """Release pooled resources (called when cached transports are dropped)."""
