"""Delivering stored payloads to regions: claims, retries, circuit breakers, dead letters.

The database row is the truth; a broker message only says "look at row X". Every
step is one short statement (or a short transaction) on ``Payload``; no transaction is
open while a transport talks to a region. A worker claims a row with a
compare-and-set update that also takes a lease; if the worker dies, the lease expires
and the sweeper hands the row out again. The region's idempotency record makes a
second delivery of a handled envelope a no-op, so at-least-once delivery becomes
effectively-once handling.

One function, :func:`attempt`, makes every delivery attempt, for the worker
(:func:`deliver`) and for the request path (:func:`deliver_sync`) alike: circuit
check, claim, transport call, and the accounting of whatever happened.

Every attempt is a span, ``silo_router.control.attempt`` (a message ``send``), with its
outcome and the region's circuit state, and a row in ``PayloadAttempt`` for the
payload's timeline. Which trace an attempt belongs to is decided by comparing the
trace id of the current span with the one the envelope carries (the request's):

- the same trace (the deliver task the request published, continued by Celery's
  integration or run in-process; its retries; a synchronous forward): the attempt is a
  child of the current span;
- another trace or none, for a timely first attempt (never held, replayed or
  republished: the request's own wake-up carried it, however long the worker's queue
  was; a worker that did not continue the trace, the next payload of a strict-order
  key): the attempt continues the request's trace;
- otherwise (a sweep redelivering, a payload held by a circuit and released, a replay,
  a retry outside the request's trace): the attempt starts a trace of its own, linked
  to the request's span (``silo_router.caused_by``), so a delivery long after its
  request is not drawn as part of it.

The envelope keeps the request's trace headers (its creation context, which the
region's handler links to); the attempt's own context crosses beside it, as the
transport's hop (:class:`silo_router.transports.Hop`), so the region's run is the
child of the attempt that carried it, whichever trace that is.

Batches (:func:`deliver_batch`, the ``deliver_batch`` and ``drain`` tasks): one
statement claims the due rows of a message (:func:`claim_batch`), one transport call
sends them (``Transport.deliver_many``: one POST for the http transport), and each
payload is accounted as :func:`attempt` accounts one (the same failure, retry and
circuit rules, its own attempt span and timeline row). Each attempt span is open
across the batch's one call, in the trace the rule above gives it, and its context
crosses with its own envelope: every region run is the child of its own attempt. A
batch of several envelopes is a ``send_batch`` span, the parent of attempts that stay
in the worker's trace. Rows of a strict-order key, and a region whose circuit is not
closed, go one at a time through :func:`attempt`. A region's backlog (a recovery, or a
sweep finding more than a sweep's worth) is drained by :func:`drain` in chunks, with
at most ``DRAIN_OUTSTANDING`` chunks of a region outstanding, each chunk publishing the
next when it is done.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, cast

from django.db import DatabaseError, connections, router
from django.db.models import Case, Exists, F, Field, Q, QuerySet, TextField, Value, When
from django.utils import timezone

from silo_router import redaction, tracing
from silo_router.conf import conf
from silo_router.envelope import Envelope, Outcome, seal
from silo_router.routing import Strategy
from silo_router.transports import (
    BatchResult,
    DeliveryError,
    DeliveryTimeout,
    NotSent,
    Receipt,
    delivering,
    delivering_batch,
    transport_for,
)
from silo_router.writer_turns import writer_lock

from . import circuits, followups, ingest, retention, wakeup
from .beat import DELIVER_TASK, DRAIN_TASK
from .models import Payload, PayloadAttempt
from .publishing import publish_within, region_queue, send_task

logger = logging.getLogger("silo_router.delivery")

State = Payload.State
ACTIVE_STATES = (State.PENDING, State.IN_FLIGHT)

#: How much of an error text a row keeps.
LAST_ERROR_MAX = circuits.LAST_ERROR_MAX
IDEMPOTENCY_KEY_MAX = Payload._meta.get_field("idempotency_key").max_length or 200
KIND_MAX = Payload._meta.get_field("kind").max_length or 200
LEASE_OWNER_MAX = Payload._meta.get_field("lease_owner").max_length or 64
#: A message may arrive a little before ``next_attempt_at`` (clock skew between hosts).
EARLY_CLAIM_ALLOWANCE = datetime.timedelta(seconds=1)
HOSTNAME_IN_WORKER_ID = 20
#: A payload whose wake-up was published this soon after it was stored was woken by its request.
REQUEST_WAKE_WINDOW = datetime.timedelta(seconds=1)

#: How much of an error reason an attempt's span and timeline row keep.
ATTEMPT_ERROR_MAX = PayloadAttempt._meta.get_field("error").max_length or 500
#: Old attempts deleted per sweep (the sweeper runs every few seconds).
PRUNE_BATCH = 1000
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)

#: ``last_error`` of a payload its region's circuit holds (``_give_back`` adds the region's reason).
HELD_PREFIX = "held: "
HELD_BY_CIRCUIT = HELD_PREFIX + "the region's circuit is open"
LEASE_EXPIRED = "lease expired: the worker did not finish its attempt"
NO_QUEUE_CONFIRMATION = "the region's queue did not confirm the envelope within QUEUED_CONFIRM_TIMEOUT"

#: Most rows one claiming statement takes (a batch message carries at most this many ids per claim).
CLAIM_BATCH_MAX = 500
#: Rows a batch message claims at most, its own and those woken by messages still queued.
TAKE_AHEAD = 100
#: Payload ids per message when a region's backlog is drained.
DRAIN_CHUNK = 100
#: Chunks of one region's backlog queued or being delivered at once: on a queue shared with other
#: regions, their fresh payloads wait behind at most this many chunks.
DRAIN_OUTSTANDING = 2
#: Receipts that mean the region has handled the envelope.
HANDLED_OUTCOMES = frozenset({Outcome.HANDLED, Outcome.DUPLICATE})


class AttemptOutcome(enum.StrEnum):
    """What became of a payload after one attempt (or one confirmation)."""

    DELIVERED = "delivered"
    QUEUED = "queued"
    #: The attempt failed; another one is scheduled.
    PENDING = "pending"
    FAILED = "failed"
    #: The region's circuit holds it; no attempt was spent.
    HELD = "held"
    NOT_PENDING = "not_pending"
    NOT_CLAIMED = "not_claimed"
    #: Our lease had expired and another worker owns the row now.
    SUPERSEDED = "superseded"
    MISSING = "missing"
    #: A confirmation for a copy the row no longer waits for.
    STALE = "stale"
    #: A batch never sent it (out of time, or the region failed first): back to pending, no attempt spent.
    NOT_SENT = "not_sent"


@dataclasses.dataclass(frozen=True)
class Attempt:
    """The outcome of one attempt and, when it was delivered, the region's receipt.

    ``error`` is why it did not get through (a short reason); ``retry_in`` how many
    seconds until the next attempt, when one is scheduled.
    """

    outcome: AttemptOutcome
    receipt: Receipt | None = None
    error: str = ""
    retry_in: float | None = None


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who makes an attempt: a worker, or a request the provider is waiting for.

    ``deadline`` (a ``time.monotonic()`` value) is set on the request path: the
    transport gets only the time left, every broker publish waits at most that long,
    and nothing drains the backlog inline.
    """

    deadline: float | None = None
    read_only: bool = False

    @property
    def on_request_path(self) -> bool:
        return self.deadline is not None

    def remaining(self) -> float:
        if self.deadline is None:
            return conf.DELIVERY_TIMEOUT
        return max(self.deadline - time.monotonic(), 0.0)

    def publish(self, targets: Sequence[tuple[str, str]], *, countdown: float = 0.0) -> None:
        """Wake workers for ``targets``; on the request path never past the deadline."""
        if not targets:
            return
        if not self.on_request_path:
            enqueue(targets, countdown=countdown)
            return
        publish_within(
            lambda: enqueue(targets, countdown=countdown, mark=False, retry=False),
            wait=min(conf.PUBLISH_TIMEOUT, self.remaining()),
            what=f"{len(targets)} delivery messages",
        )
        visible_at = timezone.now() + datetime.timedelta(seconds=max(countdown, 0.0))
        Payload.objects.filter(pk__in=[pk for pk, _ in targets]).update(enqueued_at=visible_at)


WORKER = Caller()
_identity = threading.local()


def worker_id() -> str:
    """Who holds a lease: unique per process and thread (a fresh uuid after a fork too)."""
    pid = os.getpid()
    if getattr(_identity, "pid", None) != pid:
        _identity.pid = pid
        _identity.value = f"{socket.gethostname()[:HOSTNAME_IN_WORKER_ID]}:{uuid.uuid4().hex}"
    value: str = _identity.value
    return value[:LEASE_OWNER_MAX]


def backoff(attempt: int, *, slow: bool = False, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    ``DELIVERY_BACKOFF * 2 ** (attempt - 1)``, capped at ``DELIVERY_MAX_BACKOFF``, times
    ``SLOW_RETRY_FACTOR`` after a 429 or a timeout, with +-``RETRY_JITTER`` jitter. A
    region's ``Retry-After`` is honoured up to ``RETRY_AFTER_MAX``.
    """
    delay = min(conf.DELIVERY_BACKOFF * 2 ** max(attempt - 1, 0), conf.DELIVERY_MAX_BACKOFF)
    if slow:
        delay *= conf.SLOW_RETRY_FACTOR
    jitter = conf.RETRY_JITTER
    delay *= random.uniform(1 - jitter, 1 + jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, conf.RETRY_AFTER_MAX))
    return float(delay)


def kind_type_of(envelope: Envelope) -> str:
    """The request type of an envelope (its kind is ``type`` or ``type:name``)."""
    return envelope.kind.partition(":")[0]


def ordering_key_for(envelope: Envelope, kind_type: str) -> str:
    """The strict-ordering key of an envelope, or "" when its kind is unordered."""
    table = conf.ORDERING
    mode = table.get(f"{envelope.provider}.{envelope.kind}") or table.get(f"{envelope.provider}.{kind_type}")
    if mode != "strict":
        return ""
    return f"{envelope.region}|{envelope.integration_id or ''}"


def store(
    envelopes: Sequence[Envelope], *, kind_type: str = "", state: str = State.PENDING, last_error: str = ""
) -> list[Payload]:
    """Commit payloads for ``envelopes``; return exactly the rows this call inserted.

    One insert in the common case. A retry, or two copies of one request racing,
    conflicts on the primary key: the rows that exist are left out and the rest are
    inserted again, until no conflict remains. Raises ``DatabaseError`` when storage
    fails (``DataError`` when the data itself cannot be stored), so the caller answers
    the provider accordingly; a row it did not insert is never returned.
    """
    with tracing.stage("control", "store", envelopes[0].kind if envelopes else "") as span:
        describe_store(span, envelopes)
        stored = _store(envelopes, kind_type=kind_type, state=state, last_error=last_error)
        span.set(stored=len(stored), duplicates=len(envelopes) - len(stored))
    return stored


def describe_store(span: tracing.Span, envelopes: Sequence[Envelope]) -> None:
    """The messaging ``create`` attributes of storing ``envelopes`` (a batch when there are several)."""
    if len(envelopes) == 1:
        (envelope,) = envelopes
        span.set(kind=envelope.kind, region=envelope.region or None, envelope_id=envelope.id)
        span.set_attributes(
            tracing.names.messaging(tracing.names.CREATE, destination=envelope.region, message_id=envelope.id)
        )
        return
    span.set(regions=",".join(sorted({e.region for e in envelopes})))
    span.set_attributes(
        {
            "messaging.system": tracing.names.PREFIX,
            "messaging.operation.type": tracing.names.CREATE,
            "messaging.batch.message_count": len(envelopes),
        }
    )


def _store(envelopes: Sequence[Envelope], *, kind_type: str, state: str, last_error: str) -> list[Payload]:
    """The rows of ``envelopes``, committed by the process's group commit (:mod:`.ingest`)."""
    now = timezone.now()
    loading_scheduled = False
    rows = []
    for e in envelopes:
        loading = {} if loading_scheduled else followups.fields_for_new_payload(e.control_response, now=now)
        loading_scheduled = loading_scheduled or bool(loading)
        rows.append(
            Payload(
                id=e.id,
                idempotency_key=e.idempotency_key[:IDEMPOTENCY_KEY_MAX],
                provider=e.provider,
                kind=e.kind[:KIND_MAX],
                region=e.region,
                strategy=e.strategy,
                envelope=e.to_json().decode(),
                ordering_key=ordering_key_for(e, kind_type or kind_type_of(e)),
                enqueued_at=now,
                state=state,
                last_error=last_error[:LAST_ERROR_MAX],
                trace_id=tracing.links.trace_id_of(e.trace) or "",
                # One clock reading per row, as the ORM takes them: strict-order keys
                # are delivered in (created_at, id) order, the order of ``envelopes``.
                created_at=(created := timezone.now()),
                updated_at=created,
                **loading,
            )
        )
    return ingest.committer.insert(rows)


def enqueue(
    targets: Iterable[tuple[str, str]], *, countdown: float = 0.0, mark: bool = True, retry: bool = True
) -> int:
    """Wake workers for ``(payload_id, region)`` pairs; return how many messages were published.

    A broker failure is logged and leaves the rows pending: the sweeper republishes them
    (after ``SWEEP_GRACE``, since they are marked as published). ``mark`` records the
    publish time (``store`` already set it for new rows); ``retry`` is Celery's publish
    retry (off on the request path, which must not wait).
    """
    targets = list(targets)
    if mark and targets:
        # Marked before the message goes out, so a worker that takes it at once sees a row
        # woken again (not by its request). A delayed message counts from when it becomes
        # visible, so the sweeper does not mistake a scheduled retry for a lost one.
        visible_at = timezone.now() + datetime.timedelta(seconds=max(countdown, 0.0))
        Payload.objects.filter(pk__in=[pk for pk, _ in targets]).update(enqueued_at=visible_at)
    sent = 0
    try:
        for payload_id, region in targets:
            options: dict[str, Any] = {"countdown": countdown} if countdown > 0 else {}
            send_task(DELIVER_TASK, (payload_id,), retry=retry, **options, **region_queue(region))
            sent += 1
    except Exception:  # the broker's errors vary by transport; the row is the truth
        logger.exception("could not publish a delivery message; the sweeper will retry")
    return sent


def publish_new(payloads: Sequence[Payload]) -> None:
    """Wake workers for payloads ``store`` just inserted: after the answer, batched (:mod:`.wakeup`)."""
    wakeup.waker.wake((str(p.pk), p.region) for p in payloads)


def deliver(payload_id: str) -> AttemptOutcome:
    """One delivery attempt by a worker for a due payload; returns what became of it."""
    row = Payload.objects.filter(pk=payload_id).values("region", "state").first()
    if row is None or row["state"] != State.PENDING:
        return _not_pending(payload_id, row["region"] if row else "", row["state"] if row else "missing")
    return attempt(payload_id, region=row["region"], caller=WORKER, wait=False).outcome


def _not_pending(payload_id: str, region: str, state: str) -> AttemptOutcome:
    """A duplicate or late message (its row taken, delivered or gone): say so, for whoever follows its trace."""
    if tracing.active():
        subject = _subject_of(payload_id, region=region)
        with _attempt_span(subject, description=f"deliver {payload_id}: not pending") as span:
            _finish(span, Attempt(AttemptOutcome.NOT_PENDING), region=subject.region)
            span.set(state=state)
    return AttemptOutcome.NOT_PENDING


def deliver_batch(payload_ids: Sequence[str]) -> dict[str, int]:
    """Deliver stored payloads of a batch message (one region, as a rule); count how each ended.

    The due pending rows of each region are claimed in one statement and sent in one
    transport call, with those of the region that queued messages woke (see
    :func:`claim_batch`); an id another attempt has taken or delivered (an earlier
    batch took it ahead of its message) ends at once; every other id (missing, ended
    otherwise, of a strict-order key) goes through :func:`deliver`, as its own message
    would.
    """
    ids = list(dict.fromkeys(str(pid) for pid in payload_ids))
    rows = Payload.objects.filter(pk__in=ids).values_list("pk", "region", "state", "ordering_key")
    batchable: dict[str, str] = {}
    taken: dict[str, tuple[str, str]] = {}
    for pk, region, state, key in rows:
        if region and not key and state == State.PENDING:
            batchable[str(pk)] = region
        elif not key and state in (State.IN_FLIGHT, State.DELIVERED):
            taken[str(pk)] = (region, state)
    outcomes: Counter[str] = Counter()
    by_region: dict[str, list[str]] = {}
    for payload_id in ids:
        if payload_id in batchable:
            by_region.setdefault(batchable[payload_id], []).append(payload_id)
        elif payload_id in taken:
            outcomes[str(_not_pending(payload_id, *taken[payload_id]))] += 1
        else:
            outcomes[str(deliver(payload_id))] += 1
    for region, group in by_region.items():
        for start in range(0, len(group), CLAIM_BATCH_MAX):
            outcomes.update(str(o) for o in _deliver_group(region, group[start : start + CLAIM_BATCH_MAX]))
    return dict(outcomes)


def _deliver_group(region: str, payload_ids: Sequence[str]) -> list[AttemptOutcome]:
    """Claim, send and account payloads of ``region`` as one batch."""
    started_at, started = timezone.now(), time.monotonic()
    decision = circuits.allow(region)
    if not decision.allowed or decision.probe:
        if decision.probe:
            circuits.release_probe(region)
        # One at a time: the probe goes alone, and each held payload is held as its own message would be.
        return [attempt(pid, region=region, caller=WORKER, wait=False).outcome for pid in payload_ids]
    claimed = claim_batch(ids=payload_ids, region=region, limit=max(len(payload_ids), TAKE_AHEAD), woken=True)
    taken = {str(p.pk) for p in claimed}
    outcomes: list[AttemptOutcome] = []
    for payload_id in payload_ids:
        if payload_id not in taken:
            if tracing.active():
                with _attempt_span(_subject_of(payload_id, region=region), decision) as span:
                    _finish(span, Attempt(AttemptOutcome.NOT_CLAIMED), region=region)
            outcomes.append(AttemptOutcome.NOT_CLAIMED)
    timeline: list[PayloadAttempt | None] = []
    sendable: list[tuple[Payload, Envelope, _Subject]] = []
    for payload in claimed:
        subject = _Subject.of(payload)
        try:
            envelope = Envelope.from_json(payload.envelope)
        except Exception as exc:  # a corrupt row: a failure in control, not in the region
            with _attempt_span(subject, decision) as span:
                result = _control_failure(payload, exc, probe=False, caller=WORKER)
                _finish(span, result, region=region)
                ids = (span.trace_id or "", span.span_id or "")
            timeline.append(_attempt_row(subject, result, started_at=started_at, started=started, span_ids=ids))
            outcomes.append(result.outcome)
            continue
        subject = dataclasses.replace(subject, trace=envelope.trace, provider=envelope.provider, kind=envelope.kind)
        sendable.append((payload, envelope, subject))
    if sendable:
        # One envelope needs no batch span: its attempt is the child of whatever delivers it.
        batching = (
            tracing.stage("control", "send_batch", f"deliver {len(sendable)} to {region}", region=region)
            if len(sendable) > 1
            else contextlib.nullcontext(tracing.NO_SPAN)
        )
        with batching as batch, contextlib.ExitStack() as attempts:
            # Each payload's attempt span is open across the one call, in its own trace (the
            # module docstring's rule), and its context crosses with its own envelope: each
            # region run is the child of its own attempt, as with one envelope per call.
            spans, traces = [], []
            for _, _, subject in sendable:
                spans.append(attempts.enter_context(_attempt_span(subject, decision)))
                traces.append(tracing.propagation_headers())
            results = _send_batch(batch, region, sendable, traces, spans)
            outcomes.extend(_account_batch(region, sendable, results, spans, started_at, started, timeline))
    _save_attempts([row for row in timeline if row is not None])
    return outcomes


def _send_batch(
    span: tracing.Span,
    region: str,
    sendable: Sequence[tuple[Payload, Envelope, _Subject]],
    traces: Sequence[Mapping[str, str]],
    spans: Sequence[tracing.Span],
) -> list[BatchResult | Exception]:
    """One transport call for a batch: a result per envelope (an exception for a failure inside control)."""
    span.set(batch_size=len(sendable))
    try:
        transport = transport_for(region)
        sealed = [seal(envelope) for _, envelope, _ in sendable]
        numbers = [(payload.attempts, payload.replays) for payload, _, _ in sendable]
        with delivering_batch(numbers, traces=traces if tracing.active() else (), spans=spans):
            results: list[BatchResult | Exception] = list(
                transport.deliver_many(sealed, timeout=WORKER.remaining(), wait=False)
            )
        if len(results) != len(sealed):
            raise RuntimeError(f"the transport answered {len(results)} results for {len(sealed)} envelopes")
    except Exception as exc:  # settings, signing, a transport bug: every envelope failed in control
        span.fail("error")
        return [exc] * len(sendable)
    span.set(delivered=sum(1 for r in results if isinstance(r, Receipt) and r.outcome in HANDLED_OUTCOMES))
    return results


def _account_batch(
    region: str,
    sendable: Sequence[tuple[Payload, Envelope, _Subject]],
    results: Sequence[BatchResult | Exception],
    spans: Sequence[tracing.Span],
    started_at: datetime.datetime,
    started: float,
    timeline: list[PayloadAttempt | None],
) -> list[AttemptOutcome]:
    """Account each payload of a sent batch as :func:`attempt` would; fill ``timeline`` with their rows."""
    answered = any(isinstance(r, Receipt) or (isinstance(r, DeliveryError) and _region_answered(r)) for r in results)
    if answered:
        note_region_up(region)
    handled = [p for (p, _, _), r in zip(sendable, results, strict=True) if _handled(r)]
    _mark_all_delivered(handled)
    not_sent = [p for (p, _, _), r in zip(sendable, results, strict=True) if isinstance(r, NotSent)]
    _put_back(not_sent)
    outcomes: list[AttemptOutcome] = []
    for (payload, envelope, subject), outcome, span in zip(sendable, results, spans, strict=True):
        if isinstance(outcome, NotSent):  # no attempt reached the region: no timeline row
            span.set(outcome=str(AttemptOutcome.NOT_SENT))
            outcomes.append(AttemptOutcome.NOT_SENT)
            continue
        if isinstance(outcome, Receipt):
            if _handled(outcome):
                result = Attempt(AttemptOutcome.DELIVERED, outcome)
            else:
                result = _settle_receipt(payload, envelope, outcome, caller=WORKER, region_up=False)
        elif isinstance(outcome, DeliveryError):
            result = _region_failure(payload, outcome, probe=False, caller=WORKER)
        else:
            result = _control_failure(payload, outcome, probe=False, caller=WORKER)
        _finish(span, result, region=region)
        span.set(batch_size=len(sendable))
        ids = (span.trace_id or "", span.span_id or "")
        timeline.append(_attempt_row(subject, result, started_at=started_at, started=started, span_ids=ids))
        outcomes.append(result.outcome)
    return outcomes


def _handled(result: BatchResult | Exception) -> bool:
    return isinstance(result, Receipt) and result.outcome in HANDLED_OUTCOMES


def _region_answered(error: DeliveryError) -> bool:
    """Whether an error says the region answered (it is up): not its fault, and not an envelope left unsent."""
    return not error.region_fault and not error.hold and not isinstance(error, NotSent)


def drain_chunk(region: str, payload_ids: Sequence[str]) -> dict[str, int]:
    """Deliver one chunk of ``region``'s backlog, then publish the next chunks (see :func:`drain`)."""
    outcomes = deliver_batch(payload_ids)
    drain(region)
    return outcomes


def drain(region: str) -> int:
    """Publish the next chunks of ``region``'s backlog as ``drain`` messages; return how many payloads they carry.

    The backlog is the region's due pending rows with no message outstanding (held,
    put back, or published more than ``SWEEP_GRACE`` ago), oldest first. At most
    ``DRAIN_OUTSTANDING`` chunks of ``DRAIN_CHUNK`` are outstanding at once, counted
    from the rows (due pending rows published within ``SWEEP_GRACE``, and rows in
    flight), so a backlog never fills a shared queue ahead of another region's
    payloads; each chunk, when done, publishes the next. Nothing is published while the
    region's circuit is not closed (the sweeper sends the probe).
    """
    if not circuits.closed(region):
        return 0
    now = timezone.now()
    recent = now - datetime.timedelta(seconds=conf.SWEEP_GRACE)
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    rows = Payload.objects.filter(region=region)
    # Two counts, each within its state's part of the (region, state) index: one count with an
    # OR over the states reads every row of the region, its delivered history included.
    outstanding = (
        rows.filter(state=State.IN_FLIGHT).count()
        + rows.filter(due, state=State.PENDING, enqueued_at__gt=recent).count()
    )
    free = DRAIN_OUTSTANDING - math.ceil(outstanding / DRAIN_CHUNK)
    if free <= 0:
        return 0
    backlog = (
        rows.filter(due, state=State.PENDING)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=recent))
        .order_by("created_at")
        .values_list("pk", flat=True)[: free * DRAIN_CHUNK]
    )
    ids = [str(pk) for pk in backlog]
    options = region_queue(region)
    published = 0
    for start in range(0, len(ids), DRAIN_CHUNK):
        chunk = ids[start : start + DRAIN_CHUNK]
        # Marked first, so a concurrent drain counts this chunk as outstanding.
        Payload.objects.filter(pk__in=chunk, state=State.PENDING).update(enqueued_at=timezone.now())
        try:
            send_task(DRAIN_TASK, (region, chunk), **options)
        except Exception:  # the broker's errors vary by transport; the sweeper takes the rows after SWEEP_GRACE
            logger.exception("could not publish a chunk of %s's backlog; the sweeper will retry", region)
            break
        published += len(chunk)
    return published


def deliver_sync(envelope: Envelope, *, budget: float, read_only: bool) -> Receipt | None:
    """Store ``envelope`` and deliver it while the provider waits, within ``budget`` seconds.

    Returns the region's receipt, or ``None`` when the caller must answer the provider's
    fallback (open circuit, timeout, error, a row another process holds). A kind that
    changes state stays stored for asynchronous delivery; a read-only kind (an options
    load) is closed as failed, since its answer is useless after the deadline.
    """
    caller = Caller(deadline=time.monotonic() + max(budget, 0.0), read_only=read_only)
    store([envelope], kind_type=kind_type_of(envelope))
    result = attempt(envelope.id, region=envelope.region, caller=caller, wait=True)
    if result.outcome is AttemptOutcome.DELIVERED:
        return result.receipt
    if result.outcome is AttemptOutcome.HELD and read_only:
        _close_read_only(envelope.id, "not sent: the region's circuit is open")
    return None


def attempt(payload_id: str, *, region: str, caller: Caller, wait: bool) -> Attempt:
    """Make one attempt: circuit, claim, transport call, and the accounting of the result.

    Every attempt is a span (see the module docstring for its trace); an attempt on the
    payload (held by the circuit included) is also a ``PayloadAttempt`` row.
    """
    started_at, started = timezone.now(), time.monotonic()
    decision = circuits.allow(region)
    if not decision.allowed:
        # Held without a message outstanding: the sweeper sends it once the circuit allows.
        Payload.objects.filter(pk=payload_id, state=State.PENDING).update(
            next_attempt_at=decision.retry_at, enqueued_at=None, last_error=HELD_BY_CIRCUIT
        )
        held = Attempt(AttemptOutcome.HELD, error=HELD_BY_CIRCUIT, retry_in=_until(decision))
        subject = _subject_of(payload_id, region=region, next_attempt=True)
        with _attempt_span(subject, decision) as span:
            _finish(span, held, region=region)
            ids = (span.trace_id or "", span.span_id or "")
        _log_attempt(subject, held, started_at=started_at, started=started, span_ids=ids)
        return held
    payload = claim(payload_id)
    if payload is None:
        if decision.probe:  # the probe was not used: let the next caller probe at once
            circuits.release_probe(region)
        if tracing.active():
            with _attempt_span(_subject_of(payload_id, region=region), decision) as span:
                _finish(span, Attempt(AttemptOutcome.NOT_CLAIMED), region=region)
        return Attempt(AttemptOutcome.NOT_CLAIMED)
    subject = _Subject.of(payload)
    try:
        envelope = Envelope.from_json(payload.envelope)
    except Exception as exc:  # a corrupt row: a failure in control, not in the region
        with _attempt_span(subject, decision) as span:
            result = _control_failure(payload, exc, probe=decision.probe, caller=caller)
            _finish(span, result, region=region)
            ids = (span.trace_id or "", span.span_id or "")
        _log_attempt(subject, result, started_at=started_at, started=started, span_ids=ids)
        return result
    subject = dataclasses.replace(subject, trace=envelope.trace, provider=envelope.provider, kind=envelope.kind)
    with _attempt_span(subject, decision) as span:
        result = _call_region(payload, envelope, probe=decision.probe, caller=caller, wait=wait)
        _finish(span, result, region=region)
        ids = (span.trace_id or "", span.span_id or "")
    _log_attempt(subject, result, started_at=started_at, started=started, span_ids=ids)
    return result


@dataclasses.dataclass(frozen=True)
class _Subject:
    """What an attempt's span and timeline row say about its payload."""

    payload_id: str
    region: str
    provider: str = ""
    kind: str = ""
    #: The attempt's number (1-based) since the payload was stored or last replayed.
    number: int = 0
    replays: int = 0
    created_at: datetime.datetime | None = None
    #: Whether the payload waited behind its region's circuit before this attempt.
    was_held: bool = False
    #: When its latest wake-up was published (the sweeper's, a drain's or the request's own).
    enqueued_at: datetime.datetime | None = None
    trace: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Whether the row exists (an attempt on a missing payload records nothing).
    exists: bool = True

    @classmethod
    def of(cls, payload: Payload) -> _Subject:
        return cls(
            payload_id=str(payload.pk),
            region=payload.region,
            provider=payload.provider,
            kind=payload.kind,
            number=payload.attempts,
            replays=payload.replays,
            created_at=payload.created_at,
            was_held=payload.last_error.startswith(HELD_PREFIX),
            enqueued_at=payload.enqueued_at,
        )

    @property
    def timely(self) -> bool:
        """A first attempt the request's own wake-up carried, never held (see the module docstring)."""
        if self.number > 1 or self.replays or self.was_held or self.created_at is None or self.enqueued_at is None:
            return False
        # ``store`` sets both; a sweep, a drain or a release publishes again later.
        return self.enqueued_at - self.created_at < REQUEST_WAKE_WINDOW


def _subject_of(payload_id: str, *, region: str, next_attempt: bool = False) -> _Subject:
    """The subject of an attempt that claimed nothing (one short read; the envelope only when traced).

    ``next_attempt``: number it as the attempt it would have been (a held one).
    """
    fields = ["region", "provider", "kind", "attempts", "replays", "created_at", "enqueued_at"]
    if tracing.active():
        fields.append("envelope")
    row = Payload.objects.filter(pk=payload_id).values(*fields).first()
    if row is None:
        return _Subject(payload_id=payload_id, region=region, exists=False)
    return _Subject(
        payload_id=payload_id,
        region=row["region"] or region,
        provider=row["provider"],
        kind=row["kind"],
        number=row["attempts"] + (1 if next_attempt else 0),
        replays=row["replays"],
        created_at=row["created_at"],
        enqueued_at=row["enqueued_at"],
        trace=_trace_of(row.get("envelope")),
    )


def _trace_of(raw: str | None) -> Mapping[str, str]:
    """The propagation headers a stored envelope carries (empty when there are none, or it is corrupt)."""
    if not raw or not tracing.active():
        return {}
    try:
        trace = json.loads(raw).get("trace")
    except (ValueError, AttributeError):
        return {}
    if not isinstance(trace, dict):
        return {}
    return {str(key): value for key, value in trace.items() if isinstance(value, str)}


def _joining(trace: Mapping[str, str], *, timely: bool) -> dict[str, Any]:
    """How an attempt's span joins the traces: the rule of the module docstring, as ``flow`` arguments."""
    carried = tracing.links.trace_id_of(trace)
    if carried is None or tracing.current_trace_id() == carried:
        return {}
    if timely:
        return {"carrier": trace}
    return {"new_trace": True, "links": [tracing.links.from_headers(trace)]}


@contextlib.contextmanager
def _attempt_span(
    subject: _Subject, decision: circuits.Decision | None = None, *, description: str = ""
) -> Iterator[tracing.Span]:
    """The span of one attempt on ``subject``, in the trace the module docstring's rule gives it."""
    if not tracing.active():
        yield tracing.NO_SPAN
        return
    joining = _joining(subject.trace, timely=subject.timely)
    with tracing.flow(
        "control",
        "attempt",
        description or f"deliver {subject.kind or subject.payload_id} to {subject.region or '?'}",
        span_kind="producer",
        **joining,
    ) as span:
        span.set(
            provider=subject.provider or None,
            kind=subject.kind or None,
            region=subject.region or None,
            envelope_id=subject.payload_id,
            payload_id=subject.payload_id,
            attempt=subject.number,
            retry=subject.number > 1,
            replay=subject.replays > 0,
            replays=subject.replays or None,
            late="new_trace" in joining,
        )
        if subject.number > 1 and subject.exists:
            span.set(retry_of=_previous_span_id(subject))
        if decision is not None:
            span.set(circuit=str(decision.state), probe=decision.probe)
        if subject.region:
            span.set_attributes(
                tracing.names.messaging(tracing.names.SEND, destination=subject.region, message_id=subject.payload_id)
            )
        yield span


def _previous_span_id(subject: _Subject) -> str | None:
    """The span id of the attempt before this one (its timeline row), if it was traced."""
    span_id = (
        PayloadAttempt.objects.filter(payload_id=subject.payload_id, replay=subject.replays, number=subject.number - 1)
        .order_by("-started_at")
        .values_list("span_id", flat=True)
        .first()
    )
    return span_id or None


#: An attempt's outcome as its span and the metric say it.
_SPAN_OUTCOMES = {AttemptOutcome.PENDING: "retry"}


def _finish(span: tracing.Span, result: Attempt, *, region: str) -> None:
    """Say how the attempt ended on its span, and count it."""
    outcome = _SPAN_OUTCOMES.get(result.outcome, str(result.outcome))
    span.set(
        receipt=str(result.receipt.outcome) if result.receipt is not None else None,
        retry_in_s=round(result.retry_in, 1) if result.retry_in is not None else None,
        error=safe_reason(result.error) or None,
    )
    if result.outcome in (AttemptOutcome.PENDING, AttemptOutcome.FAILED):
        span.fail(outcome)
    else:
        span.set(outcome=outcome)
    tracing.metrics.count(tracing.metrics.ATTEMPTS, outcome=outcome, region=region or None)


def safe_reason(reason: str) -> str:
    """``reason`` for a span or the admin: capabilities redacted, no URL, short."""
    if not reason:
        return ""
    return _URL.sub("[url]", redaction.scrub_text(reason))[:ATTEMPT_ERROR_MAX]


def _until(decision: circuits.Decision) -> float | None:
    if decision.retry_at is None:
        return None
    return max((decision.retry_at - timezone.now()).total_seconds(), 0.0)


def _log_attempt(
    subject: _Subject, result: Attempt, *, started_at: datetime.datetime, started: float, span_ids: tuple[str, str]
) -> None:
    """One insert for the payload's timeline; a failure to write it never fails the attempt."""
    row = _attempt_row(subject, result, started_at=started_at, started=started, span_ids=span_ids)
    if row is not None:
        _save_attempts([row])


def _attempt_row(
    subject: _Subject, result: Attempt, *, started_at: datetime.datetime, started: float, span_ids: tuple[str, str]
) -> PayloadAttempt | None:
    """The timeline row of an attempt (``None`` for a payload that does not exist)."""
    if not subject.exists:
        return None
    return PayloadAttempt(
        payload_id=subject.payload_id,
        number=subject.number,
        replay=subject.replays,
        started_at=started_at,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
        outcome=_SPAN_OUTCOMES.get(result.outcome, str(result.outcome)),
        error=safe_reason(result.error),
        receipt=str(result.receipt.outcome) if result.receipt is not None else "",
        trace_id=span_ids[0],
        span_id=span_ids[1],
    )


def _save_attempts(rows: Sequence[PayloadAttempt]) -> None:
    """Insert timeline rows in one statement; a failure to write them never fails the attempts."""
    if not rows:
        return
    try:
        with writer_lock(connections[router.db_for_write(PayloadAttempt)]):  # bulk_create is a transaction
            PayloadAttempt.objects.bulk_create(rows)
    except DatabaseError:
        logger.warning("could not record %d attempts of %s for the timeline", len(rows), rows[0].payload_id)


def _call_region(payload: Payload, envelope: Envelope, *, probe: bool, caller: Caller, wait: bool) -> Attempt:
    region = payload.region
    try:
        transport = transport_for(region)
        sealed = seal(envelope)  # the attempt's own trace context crosses beside it (``transports.Hop``)
        timeout = caller.remaining()
        if timeout <= 0:
            raise DeliveryError("no time left before the provider's deadline", retryable=True, region_fault=False)
        with delivering(attempt=payload.attempts, replays=payload.replays):
            receipt = transport.deliver(sealed, timeout=timeout, wait=wait)
    except DeliveryError as exc:
        return _region_failure(payload, exc, probe=probe, caller=caller)
    except Exception as exc:  # anything else went wrong in control (settings, signing, a transport bug)
        return _control_failure(payload, exc, probe=probe, caller=caller)
    return _settle_receipt(payload, envelope, receipt, caller=caller)


def _settle_receipt(
    payload: Payload, envelope: Envelope, receipt: Receipt, *, caller: Caller, region_up: bool = True
) -> Attempt:
    """Account the region's receipt for a claimed payload (``region_up``: tell its circuit first)."""
    region = payload.region
    if region_up:
        note_region_up(region, drain=not caller.on_request_path)
    if receipt.outcome == "unhandled":
        # Deploy skew: the region has no handler (yet). Not its fault, and not handled.
        missing = DeliveryError(
            f"no handler for {envelope.kind} in region {region}", retryable=True, region_fault=False
        )
        return dataclasses.replace(
            _record_failure(payload, missing, retry=not caller.read_only, caller=caller), receipt=receipt
        )
    if receipt.outcome == "queued":
        return Attempt(mark_queued(payload), receipt)
    mark_delivered(payload, receipt=receipt, caller=caller)
    return Attempt(AttemptOutcome.DELIVERED, receipt)


def _region_failure(payload: Payload, exc: DeliveryError, *, probe: bool, caller: Caller) -> Attempt:
    region = payload.region
    if getattr(exc, "hold", False):
        retry_at = circuits.hold(region, exc.reason)
        logger.error(
            "region %s refuses every envelope (%s): holding its payloads behind its circuit until %s; "
            "fix the configuration (keys, region name, envelope version, ingress)",
            region,
            exc.reason,
            retry_at.isoformat(),
        )
        retry_in = max((retry_at - timezone.now()).total_seconds(), 0.0)
        return Attempt(_give_back(payload, exc.reason, retry_at=retry_at), error=exc.reason, retry_in=retry_in)
    if exc.region_fault:
        circuits.record_failure(region, exc.reason, probe=probe)
    else:  # it answered: it is up
        note_region_up(region, drain=not caller.on_request_path)
    return _record_failure(payload, exc, retry=not caller.read_only, caller=caller)


def _control_failure(payload: Payload, exc: Exception, *, probe: bool, caller: Caller) -> Attempt:
    """Count an attempt that failed inside control itself, keeping the real error."""
    logger.error("delivery of %s to %r failed in control", payload.pk, payload.region, exc_info=exc)
    if probe:
        circuits.release_probe(payload.region)
    reason = f"control error: {type(exc).__name__}: {exc}"
    error = DeliveryError(reason, retryable=True, region_fault=False)
    return _record_failure(payload, error, retry=not caller.read_only, caller=caller)


def _give_back(payload: Payload, reason: str, *, retry_at: datetime.datetime) -> AttemptOutcome:
    """Put a held payload back to pending without spending its attempt."""
    updated = Payload.objects.filter(pk=payload.pk, lease_owner=payload.lease_owner, state=State.IN_FLIGHT).update(
        state=State.PENDING,
        attempts=Case(When(attempts__gt=0, then=F("attempts") - 1), default=Value(0)),
        last_error=f"{HELD_PREFIX}{reason}"[:LAST_ERROR_MAX],
        next_attempt_at=retry_at,
        enqueued_at=None,
        lease_owner="",
        lease_until=None,
    )
    return AttemptOutcome.HELD if updated else AttemptOutcome.SUPERSEDED


def _close_read_only(payload_id: str, reason: str) -> None:
    Payload.objects.filter(pk=payload_id, state=State.PENDING).update(
        state=State.FAILED, last_error=reason[:LAST_ERROR_MAX], next_attempt_at=None
    )


def note_region_up(region: str, *, drain: bool = True) -> None:
    """Close the region's circuit; on a recovery, release its held payloads.

    Only the one process that saw the recovery (a compare-and-set in
    :func:`circuits.record_success`) releases them and, with ``drain``, sweeps the
    region at once: up to ``SWEEP_BATCH`` messages, or a backlog's first chunks
    (:func:`drain`), which publish the rest as they finish. The request path never
    drains inline.
    """
    if not circuits.record_success(region):
        return
    with tracing.stage("control", "region_up", region, region=region) as span:
        released = Payload.objects.filter(region=region, state=State.PENDING, enqueued_at__isnull=True).update(
            next_attempt_at=None
        )
        logger.info("region %s recovered; %d held payloads released", region, released)
        span.set(released=released, drain=drain)
        if drain:
            sweep(regions=[region], expire=False)


def queued_lease_owner(region: str) -> str:
    """The lease owner of a payload waiting for its region's queue to confirm it."""
    return f"queued:{region}"[:LEASE_OWNER_MAX]


def mark_queued(payload: Payload) -> AttemptOutcome:
    """The region's queue has the envelope; keep the lease until the region confirms.

    If no confirmation comes within ``QUEUED_CONFIRM_TIMEOUT`` (a flushed broker, the
    region's workers down), the lease expires and the sweeper sends the envelope again
    as a new attempt; at ``DELIVERY_MAX_ATTEMPTS`` it fails instead. The region's
    idempotency record absorbs a copy that was handled after all.
    """
    Payload.objects.filter(pk=payload.pk, state=State.IN_FLIGHT).update(
        lease_owner=queued_lease_owner(payload.region),
        lease_until=timezone.now() + datetime.timedelta(seconds=conf.QUEUED_CONFIRM_TIMEOUT),
    )
    return AttemptOutcome.QUEUED


def confirm(payload_id: str, *, outcome: str, reason: str = "") -> AttemptOutcome:
    """Record a region's confirmation of a queued envelope.

    ``handled``/``duplicate`` is the truth whatever the row says: the handler ran, so
    the payload is delivered, even if it had been failed meanwhile (noted in
    ``last_error``); a delivered row never goes back. Other outcomes only count for a
    row still waiting on its queue; a confirmation of an older copy is ignored.
    """
    payload = Payload.objects.filter(pk=payload_id).first()
    if payload is None:
        return AttemptOutcome.MISSING
    PayloadAttempt.objects.filter(payload_id=payload.pk, replay=payload.replays, number=payload.attempts).update(
        receipt=outcome[: PayloadAttempt._meta.get_field("receipt").max_length], confirmed_at=timezone.now()
    )
    if outcome in ("handled", "duplicate"):
        if payload.state == State.DELIVERED:
            return AttemptOutcome.DELIVERED
        note = "handled after it had been marked failed" if payload.state == State.FAILED else ""
        mark_delivered(payload, receipt=Receipt(outcome=Outcome(outcome)), note=note)
        return AttemptOutcome.DELIVERED
    if payload.state != State.IN_FLIGHT or payload.lease_owner != queued_lease_owner(payload.region):
        logger.info("ignoring a %s confirmation for %s: it waits for no copy now", outcome, payload_id)
        return AttemptOutcome.STALE
    if outcome == "unhandled":
        error = DeliveryError(
            f"no handler for {payload.kind} in region {payload.region}", retryable=True, region_fault=False
        )
    elif outcome == "rejected":  # e.g. the copy waited past its signature's age: a fresh one may pass
        error = DeliveryError(f"region rejected: {reason}", retryable=True, region_fault=False)
    else:  # the region's task already retried the handler
        error = DeliveryError(f"region {outcome}: {reason}", retryable=False)
    return _record_failure(payload, error, retry=True, caller=WORKER).outcome


def claim(payload_id: str) -> Payload | None:
    """Take a due pending row with a lease; ``None`` if someone else has it or it is not due.

    A compare-and-set ``UPDATE ... WHERE state = 'pending'`` is atomic on every backend,
    so two workers can never both claim a row. In a strict-order key only the oldest
    active row may be claimed.
    """
    now = timezone.now()
    row = Payload.objects.filter(pk=payload_id).values("ordering_key", "created_at").first()
    if row is None:
        return None
    if row["ordering_key"] and _has_predecessor(payload_id, row["ordering_key"], row["created_at"]):
        Payload.objects.filter(pk=payload_id, state=State.PENDING).update(
            next_attempt_at=now + datetime.timedelta(seconds=conf.DELIVERY_BACKOFF)
        )
        return None
    owner = worker_id()
    lease_until = now + datetime.timedelta(seconds=conf.DELIVERY_TIMEOUT + conf.LEASE_MARGIN)
    claimable = Payload.objects.filter(pk=payload_id, state=State.PENDING).filter(
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + EARLY_CLAIM_ALLOWANCE)
    )
    if row["ordering_key"]:
        # The predecessor check again, inside the claiming statement: a predecessor that
        # became active since the check above cannot be overtaken.
        claimable = claimable.exclude(Exists(_predecessors(payload_id, row["ordering_key"], row["created_at"])))
    claimed = claimable.update(
        state=State.IN_FLIGHT,
        lease_owner=owner,
        lease_until=lease_until,
        last_attempt_at=now,
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return None
    return Payload.objects.filter(pk=payload_id, lease_owner=owner).first()


def _predecessors(payload_id: str, key: str, created_at: datetime.datetime) -> QuerySet[Payload]:
    """Older payloads of the same strict-order key that are not delivered yet."""
    earlier = Q(created_at__lt=created_at) | Q(created_at=created_at, pk__lt=payload_id)
    blocking = (State.PENDING, State.IN_FLIGHT, State.FAILED)
    return Payload.objects.filter(earlier, ordering_key=key, state__in=blocking)


def _has_predecessor(payload_id: str, key: str, created_at: datetime.datetime) -> bool:
    """Whether an older payload of the same strict-order key is not delivered yet."""
    return _predecessors(payload_id, key, created_at).exists()


def claim_batch(
    *, ids: Sequence[str] | None = None, region: str | None = None, limit: int, woken: bool = False
) -> list[Payload]:
    """Take up to ``limit`` due pending rows (among ``ids``, of ``region``) with leases, in one statement.

    With ``woken`` (and ``region``), rows of the region that a message already woke
    (``enqueued_at`` set) are taken as well, after ``ids``: a busy worker takes, with
    its own message's rows, the ones whose messages still wait in the queue, so
    deliveries go in batches as soon as they fall behind (those messages then find
    their rows taken and end at once).

    The guarantees of :func:`claim`: one ``UPDATE`` chooses the rows and takes them,
    so no row gets two owners; only due rows (``next_attempt_at``); each claim counts
    an attempt. Rows of a strict-order key are left alone (:func:`claim` takes them,
    one at a time and in order). On PostgreSQL the rows are chosen ``FOR UPDATE SKIP
    LOCKED``, so concurrent claimers take different rows without waiting for each
    other; SQLite runs the statement under its single write lock. Returns the claimed
    rows, oldest first.
    """
    if limit <= 0 or (ids is not None and not ids):
        return []
    alias = router.db_for_write(Payload)
    connection = connections[alias]
    now = timezone.now()
    owner = worker_id()
    lease_until = now + datetime.timedelta(seconds=conf.DELIVERY_TIMEOUT + conf.LEASE_MARGIN)
    meta = Payload._meta

    def column(name: str) -> str:
        return str(connection.ops.quote_name(str(cast("Field[Any, Any]", meta.get_field(name)).column)))

    def value(name: str, raw: Any) -> Any:
        return cast("Field[Any, Any]", meta.get_field(name)).get_db_prep_value(raw, connection, prepared=False)

    table = connection.ops.quote_name(meta.db_table)
    pk, state, due_at = column("id"), column("state"), column("next_attempt_at")
    conditions = [f"{state} = %s", f"{column('ordering_key')} = %s", f"({due_at} IS NULL OR {due_at} <= %s)"]
    chosen: list[Any] = [State.PENDING, "", value("next_attempt_at", now + EARLY_CLAIM_ALLOWANCE)]
    if region is not None:
        conditions.append(f"{column('region')} = %s")
        chosen.append(region)
    order = f"{column('created_at')}, {pk}"
    if ids is not None:
        listed = f"{pk} IN ({', '.join(['%s'] * len(ids))})"
        listed_ids = [value("id", payload_id) for payload_id in ids]
        if woken and region is not None and len(ids) < limit:  # else no room for rows ahead
            # Rows taken ahead must be due now: the early allowance is for a message's own
            # rows (clock skew), and a retry taken early would cut its backoff short. A
            # synchronous row not yet attempted belongs to the request that stored it (it
            # claims it a moment later, while the provider waits): never taken ahead.
            ahead = (
                f"{column('enqueued_at')} IS NOT NULL AND ({due_at} IS NULL OR {due_at} <= %s) "
                f"AND NOT ({column('strategy')} = %s AND {column('attempts')} = 0)"
            )
            conditions.append(f"({listed} OR ({ahead}))")
            order = f"CASE WHEN {listed} THEN 0 ELSE 1 END, {order}"
            chosen.extend(  # the last ids: the order's CASE
                [*listed_ids, value("next_attempt_at", now), str(Strategy.SYNC), *listed_ids]
            )
        else:
            conditions.append(listed)
            chosen.extend(listed_ids)
    choose = f"SELECT {pk} FROM {table} WHERE {' AND '.join(conditions)} ORDER BY {order} LIMIT %s"
    take = (
        f"{state} = %s, {column('lease_owner')} = %s, {column('lease_until')} = %s, "
        f"{column('last_attempt_at')} = %s, {column('attempts')} = {column('attempts')} + 1"
    )
    taken = [State.IN_FLIGHT, owner, value("lease_until", lease_until), value("last_attempt_at", now)]
    if connection.vendor == "postgresql":
        # A materialized CTE runs its locking select once; as an IN (...) subquery the planner
        # may run it again and take more than ``limit`` rows.
        sql = (
            f"WITH chosen AS MATERIALIZED ({choose} FOR UPDATE SKIP LOCKED) "
            f"UPDATE {table} SET {take} FROM chosen WHERE {table}.{pk} = chosen.{pk} AND {table}.{state} = %s "
            f"RETURNING {table}.{pk}"
        )
        params = [*chosen, limit, *taken, State.PENDING]
    else:
        sql = f"UPDATE {table} SET {take} WHERE {pk} IN ({choose}) AND {state} = %s RETURNING {pk}"
        params = [*taken, *chosen, limit, State.PENDING]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        claimed = [row[0] for row in cursor.fetchall()]
    if not claimed:
        return []
    return list(Payload.objects.using(alias).filter(pk__in=claimed, lease_owner=owner).order_by("created_at", "pk"))


def mark_delivered(payload: Payload, *, receipt: Receipt, caller: Caller = WORKER, note: str = "") -> None:
    """Record the region's receipt; wake the next payload of a strict-order key."""
    updated = Payload.objects.filter(pk=payload.pk).exclude(state=State.DELIVERED).update(**_delivered(note))
    if updated:
        followups.payload_ended(str(payload.pk), followups.Report.DONE)
    if payload.ordering_key:
        following = (
            Payload.objects.filter(ordering_key=payload.ordering_key, state=State.PENDING)
            .order_by("created_at", "pk")
            .values_list("pk", "region")[:1]
        )
        caller.publish([(str(pk), region) for pk, region in following])


def _delivered(note: str = "") -> dict[str, Any]:
    """The columns of a payload the region has handled."""
    return {
        "state": State.DELIVERED,
        "delivered_at": timezone.now(),
        "last_error": note[:LAST_ERROR_MAX],
        "next_attempt_at": None,
        "lease_owner": "",
        "lease_until": None,
    }


def _mark_all_delivered(payloads: Sequence[Payload]) -> None:
    """:func:`mark_delivered` for the handled payloads of a batch (no strict-order key): one update."""
    if not payloads:
        return
    ids = [p.pk for p in payloads]
    Payload.objects.filter(pk__in=ids).exclude(state=State.DELIVERED).update(**_delivered())
    # A delivery changes only a modal that already said "taking longer" (followups.payload_ended).
    taking_longer = Payload.objects.filter(pk__in=ids, loading_view=Payload.LoadingView.TIMED_OUT)
    for pk in taking_longer.values_list("pk", flat=True):
        followups.payload_ended(str(pk), followups.Report.DONE)


def _put_back(payloads: Sequence[Payload]) -> int:
    """Claimed payloads a batch never sent: pending again, due now, their attempts not spent."""
    if not payloads:
        return 0
    return Payload.objects.filter(
        pk__in=[p.pk for p in payloads], state=State.IN_FLIGHT, lease_owner=payloads[0].lease_owner
    ).update(
        state=State.PENDING,
        attempts=Case(When(attempts__gt=0, then=F("attempts") - 1), default=Value(0)),
        next_attempt_at=None,
        enqueued_at=None,
        lease_owner="",
        lease_until=None,
    )


def record_failure(payload: Payload, exc: DeliveryError, *, retry: bool = True) -> AttemptOutcome:
    """Schedule another attempt of a worker's claimed ``payload``, or move it to failed (kept)."""
    return _record_failure(payload, exc, retry=retry, caller=WORKER).outcome


def _record_failure(payload: Payload, exc: DeliveryError, *, retry: bool, caller: Caller) -> Attempt:
    attempts = payload.attempts
    # Only while the row is still ours: a worker whose lease expired must not undo the
    # attempt of the worker that claimed the row after it.
    ours = Payload.objects.filter(pk=payload.pk, lease_owner=payload.lease_owner).exclude(state=State.DELIVERED)
    if retry and exc.retryable and attempts < conf.DELIVERY_MAX_ATTEMPTS:
        slow = isinstance(exc, DeliveryTimeout) or exc.reason.startswith("http_429")
        delay = backoff(attempts, slow=slow, retry_after=exc.retry_after)
        updated = ours.update(
            state=State.PENDING,
            last_error=exc.reason[:LAST_ERROR_MAX],
            next_attempt_at=timezone.now() + datetime.timedelta(seconds=delay),
            lease_owner="",
            lease_until=None,
        )
        if not updated:
            return Attempt(AttemptOutcome.SUPERSEDED, error=exc.reason)
        logger.warning(
            "delivery of %s to %s failed (%s); retry in %.1fs", payload.pk, payload.region, exc.reason, delay
        )
        caller.publish([(str(payload.pk), payload.region)], countdown=delay)
        return Attempt(AttemptOutcome.PENDING, error=exc.reason, retry_in=delay)
    if not ours.update(
        state=State.FAILED,
        last_error=exc.reason[:LAST_ERROR_MAX],
        next_attempt_at=None,
        lease_owner="",
        lease_until=None,
    ):
        return Attempt(AttemptOutcome.SUPERSEDED, error=exc.reason)
    logger.error("payload %s for %s failed for good: %s", payload.pk, payload.region, exc.reason)
    followups.payload_ended(str(payload.pk), followups.Report.FAILED)
    return Attempt(AttemptOutcome.FAILED, error=exc.reason)


def expire_leases(*, now: datetime.datetime | None = None) -> int:
    """End the leases of attempts whose worker vanished; return how many.

    Each expired lease was an attempt (the claim counted it): a row that has used
    ``DELIVERY_MAX_ATTEMPTS`` goes to failed, the others to pending. A real error
    recorded earlier is kept in ``last_error``.
    """
    moment = now or timezone.now()
    expired = Payload.objects.filter(state=State.IN_FLIGHT, lease_until__lt=moment)
    error = Case(
        When(lease_owner__startswith="queued:", then=Value(NO_QUEUE_CONFIRMATION)),
        When(last_error="", then=Value(LEASE_EXPIRED)),
        default=F("last_error"),
        output_field=TextField(),
    )
    exhausted = list(expired.filter(attempts__gte=conf.DELIVERY_MAX_ATTEMPTS).values_list("pk", "region"))
    failed = expired.filter(pk__in=[pk for pk, _ in exhausted]).update(
        state=State.FAILED, lease_owner="", lease_until=None, enqueued_at=None, next_attempt_at=None, last_error=error
    )
    for pk, region in exhausted:
        logger.error("payload %s for %s failed for good: its last attempt never finished", pk, region)
        followups.payload_ended(str(pk), followups.Report.FAILED)
    retried = expired.update(state=State.PENDING, lease_owner="", lease_until=None, enqueued_at=None, last_error=error)
    return failed + retried


def sweep(*, regions: Sequence[str] | None = None, expire: bool = True) -> dict[str, int]:
    """Recover what the fast path missed; return counts.

    - ``in_flight`` rows whose lease expired (their worker died, or a queue never
      confirmed) become pending, or failed once they used their attempts;
    - due pending rows with no message outstanding (held by a circuit, or published
      more than ``SWEEP_GRACE`` seconds ago and still here: a crash between commit and
      publish, a flushed broker) are published again, at most ``SWEEP_BATCH`` per region
      per run; a region with more than ``max(SWEEP_BATCH, DRAIN_CHUNK)`` has a backlog,
      drained in chunks (:func:`drain`). A region whose circuit is open gets one message
      when its probe is due;
    - Loading modals whose check is due are checked.
    """
    with tracing.stage("control", "sweep", ",".join(regions) if regions is not None else "all regions") as span:
        counts = _sweep(regions=regions, expire=expire)
        span.set(regions=",".join(regions) if regions is not None else None, **counts)
    return counts


def _sweep(*, regions: Sequence[str] | None, expire: bool) -> dict[str, int]:
    now = timezone.now()
    expired = expire_leases(now=now) if expire else 0
    grace = datetime.timedelta(seconds=conf.SWEEP_GRACE)
    due = (
        Payload.objects.filter(state=State.PENDING)
        .exclude(region="")
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=now - grace))
    )
    names = list(regions) if regions is not None else sorted(set(due.values_list("region", flat=True)))
    published = 0
    # More due rows than this is a backlog: drained in chunks rather than one message per row.
    backlog_above = max(conf.SWEEP_BATCH, DRAIN_CHUNK)
    for region in names:
        oldest = due.filter(region=region).order_by("created_at").values_list("pk", flat=True)
        if circuits.closed(region):
            ids = list(oldest[: backlog_above + 1])
            if len(ids) > backlog_above:
                published += drain(region)
                continue
            allowance = conf.SWEEP_BATCH
        else:
            allowance = circuits.sweep_allowance(region, batch=conf.SWEEP_BATCH)  # the probe, when it is due
            ids = list(oldest[:allowance]) if allowance else []
        published += enqueue([(str(pk), region) for pk in ids[:allowance]])
    full = regions is None
    checked = followups.run_due_checks(now=now) if full else 0
    pruned = prune_attempts(now=now) if full else 0
    if expired or published or checked:
        logger.info(
            "sweep: %d expired leases, %d payloads republished, %d loading views checked", expired, published, checked
        )
    return {"expired_leases": expired, "republished": published, "loading_checks": checked, "pruned_attempts": pruned}


def prune_attempts(*, now: datetime.datetime | None = None) -> int:
    """Delete timeline rows older than ``ATTEMPT_RETENTION`` (at most ``PRUNE_BATCH``); return how many."""
    cutoff = (now or timezone.now()) - datetime.timedelta(seconds=conf.ATTEMPT_RETENTION)
    old = list(PayloadAttempt.objects.filter(started_at__lt=cutoff).values_list("pk", flat=True)[:PRUNE_BATCH])
    if not old:
        return 0
    deleted, _ = PayloadAttempt.objects.filter(pk__in=old).delete()
    return deleted


def replay(payload_ids: Iterable[str]) -> int:
    """Send failed (or delivered) payloads again; return how many were reset.

    The envelope id does not change, so a payload the region already handled is
    acknowledged there without running its handler a second time. Unroutable payloads
    are resolved again by :func:`silo_router.control.rerouting.replay`.
    """
    ids = [str(pk) for pk in payload_ids]
    reset = (
        Payload.objects.filter(pk__in=ids, state__in=(State.FAILED, State.DELIVERED))
        .exclude(region="")
        .exclude(envelope__startswith=retention.BODY_DROPPED_PREFIX)
        .update(
            state=State.PENDING,
            attempts=0,
            replays=F("replays") + 1,
            next_attempt_at=None,
            last_error="",
            delivered_at=None,
        )
    )
    pending = Payload.objects.filter(pk__in=ids, state=State.PENDING).values_list("pk", "region")
    enqueue([(str(pk), region) for pk, region in pending])
    return reset


def check_loading_view(payload_id: str) -> None:
    """Check the Loading modal of ``payload_id`` now (the sweeper does this when it is due)."""
    followups.check(payload_id)
