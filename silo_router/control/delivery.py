"""Delivering stored payloads to regions: claims, retries, circuit breakers, dead letters.

The database row is the truth; a broker message only says "look at row X". Every
step is one short statement (or a short transaction) on ``Payload``; no transaction is
open while a transport talks to a region. A worker claims a row with a
compare-and-set update that also takes a lease; if the worker dies, the lease expires
and the sweeper hands the row out again. The region's idempotency record makes a
second delivery of a handled envelope a no-op, so at-least-once delivery becomes
effectively-once handling.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import random
import socket
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from silo_router import tracing
from silo_router.conf import conf
from silo_router.envelope import Envelope, seal
from silo_router.transports import DeliveryError, DeliveryTimeout, Receipt, transport_for

from . import circuits, control_responses
from .models import Payload
from .publishing import publish_within

logger = logging.getLogger("silo_router.delivery")

State = Payload.State
ACTIVE_STATES = (State.PENDING, State.IN_FLIGHT)


def worker_id() -> str:
    """Who holds a lease: host, process and thread."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{threading.get_ident() % 100000}"


def backoff(attempt: int, *, slow: bool = False, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    ``DELIVERY_BACKOFF * 2 ** (attempt - 1)``, capped at ``DELIVERY_MAX_BACKOFF``, times
    ``SLOW_RETRY_FACTOR`` after a 429 or a timeout, with +-``RETRY_JITTER`` jitter. A
    region's ``Retry-After`` is honoured up to ``RETRY_AFTER_MAX``.
    """
    delay = min(conf.seconds("DELIVERY_BACKOFF") * 2 ** max(attempt - 1, 0), conf.seconds("DELIVERY_MAX_BACKOFF"))
    if slow:
        delay *= conf.seconds("SLOW_RETRY_FACTOR")
    jitter = conf.seconds("RETRY_JITTER")
    delay *= random.uniform(1 - jitter, 1 + jitter)
    if retry_after is not None:
        delay = max(delay, min(retry_after, conf.seconds("RETRY_AFTER_MAX")))
    return float(delay)


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
    """Commit payloads for ``envelopes``; return the new ones (a retry finds them stored).

    One insert in the common case. Raises ``DatabaseError`` when storage fails: the
    caller answers 5xx so the provider retries. A retry, or two copies of one request
    racing, conflicts on the primary key and is told which payloads already exist.
    """
    now = timezone.now()
    rows = [
        Payload(
            id=e.id,
            idempotency_key=e.idempotency_key[:200],
            provider=e.provider,
            kind=e.kind[:200],
            region=e.region,
            strategy=e.strategy,
            envelope=e.to_json().decode(),
            ordering_key=ordering_key_for(e, kind_type),
            enqueued_at=now,
            state=state,
            last_error=last_error[:2000],
        )
        for e in envelopes
    ]
    for _ in range(2):
        try:
            if len(rows) == 1:
                # The usual case: one autocommit statement holds SQLite's write lock for the
                # shortest time. Inside a caller's transaction, a savepoint keeps a conflict
                # from breaking it.
                in_transaction = transaction.get_connection().in_atomic_block
                with transaction.atomic() if in_transaction else contextlib.nullcontext():
                    rows[0].save(force_insert=True)
            else:
                with transaction.atomic():
                    Payload.objects.bulk_create(rows)
            return rows
        except IntegrityError:
            existing = {
                str(pk) for pk in Payload.objects.filter(pk__in=[r.pk for r in rows]).values_list("pk", flat=True)
            }
            if not existing:
                raise
            rows = [r for r in rows if str(r.pk) not in existing]
            if not rows:
                return []
    return []


def enqueue(
    targets: Iterable[tuple[str, str]], *, countdown: float = 0.0, mark: bool = True, retry: bool = True
) -> int:
    """Wake workers for ``(payload_id, region)`` pairs; return how many messages were published.

    A broker failure is logged and leaves the rows pending: the sweeper republishes them.
    ``mark`` records the publish time (``store`` already set it for new rows); ``retry``
    is Celery's publish retry (off on the request path, which must not wait).
    """
    from .tasks import deliver_payload

    sent: list[str] = []
    try:
        for payload_id, region in targets:
            queue = (conf.REGIONS.get(region) or {}).get("DELIVERY_QUEUE")
            options: dict[str, Any] = {"countdown": countdown} if countdown > 0 else {}
            if queue:
                options["queue"] = str(queue)
            deliver_payload.apply_async((payload_id,), retry=retry, **options)
            sent.append(payload_id)
    except Exception:  # the broker's errors vary by transport; the row is the truth
        logger.exception("could not publish a delivery message; the sweeper will retry")
    if sent and mark:
        # A delayed message counts from when it becomes visible, so the sweeper does not
        # mistake a scheduled retry for a lost one.
        visible_at = timezone.now() + datetime.timedelta(seconds=max(countdown, 0.0))
        Payload.objects.filter(pk__in=sent).update(enqueued_at=visible_at)
    return len(sent)


def deliver(payload_id: str) -> str:
    """One delivery attempt for a due payload; returns what became of it."""
    region = Payload.objects.filter(pk=payload_id, state=State.PENDING).values_list("region", flat=True).first()
    if region is None:
        return "not_pending"
    decision = circuits.allow(region)
    if not decision.allowed:
        # Held without a message outstanding: the sweeper sends it once the circuit allows.
        Payload.objects.filter(pk=payload_id, state=State.PENDING).update(
            next_attempt_at=decision.retry_at, enqueued_at=None
        )
        return "held"
    payload = claim(payload_id)
    if payload is None:
        if decision.probe:  # the probe was not used: let the next caller probe at once
            circuits.release_probe(region)
        return "not_claimed"
    envelope = Envelope.from_json(payload.envelope)
    with tracing.flow("silo_router.deliver", f"deliver {envelope.kind} to {region}", headers=envelope.trace) as flow:
        tracing.set_data(flow, payload_id=payload_id, region=region, attempt=payload.attempts)
        try:
            receipt = transport_for(region).deliver(seal(envelope), timeout=conf.DELIVERY_TIMEOUT, wait=False)
        except DeliveryError as exc:
            if exc.region_fault:
                circuits.record_failure(region, exc.reason, probe=decision.probe)
            else:  # it answered: it is up
                note_region_up(region)
            return record_failure(payload, exc)
        note_region_up(region)
        if receipt.outcome == "queued":
            return mark_queued(payload)
        mark_delivered(payload, receipt=receipt)
        return State.DELIVERED


def note_region_up(region: str) -> None:
    """Close the region's circuit; on a recovery, release its held payloads and drain them."""
    if not circuits.record_success(region):
        return
    released = Payload.objects.filter(region=region, state=State.PENDING, enqueued_at__isnull=True).update(
        next_attempt_at=None
    )
    logger.info("region %s recovered; draining %d held payloads", region, released)
    sweep(regions=[region])


def mark_queued(payload: Payload) -> str:
    """The region's queue has the envelope; keep the lease until the region confirms.

    If no confirmation comes within ``QUEUED_CONFIRM_TIMEOUT`` (a flushed broker, say),
    the lease expires and the sweeper sends the envelope again; the region's
    idempotency record absorbs it if it was handled after all.
    """
    Payload.objects.filter(pk=payload.pk, state=State.IN_FLIGHT).update(
        lease_owner=f"queued:{payload.region}"[:64],
        lease_until=timezone.now() + datetime.timedelta(seconds=conf.seconds("QUEUED_CONFIRM_TIMEOUT")),
    )
    return "queued"


def confirm(payload_id: str, *, outcome: str, reason: str = "") -> str:
    """Record a region's confirmation of a queued envelope."""
    payload = Payload.objects.filter(pk=payload_id).first()
    if payload is None:
        return "missing"
    if outcome in ("handled", "duplicate", "unhandled"):
        mark_delivered(payload, receipt=Receipt(outcome=outcome))
        return State.DELIVERED
    error = DeliveryError(f"region {outcome}: {reason}", retryable=False)
    return record_failure(payload, error)


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
            next_attempt_at=now + datetime.timedelta(seconds=conf.seconds("DELIVERY_BACKOFF"))
        )
        return None
    owner = worker_id()
    lease_until = now + datetime.timedelta(seconds=conf.DELIVERY_TIMEOUT + conf.seconds("LEASE_MARGIN"))
    claimed = (
        Payload.objects.filter(pk=payload_id, state=State.PENDING)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now + datetime.timedelta(seconds=1)))
        .update(
            state=State.IN_FLIGHT,
            lease_owner=owner,
            lease_until=lease_until,
            last_attempt_at=now,
            attempts=F("attempts") + 1,
        )
    )
    if not claimed:
        return None
    return Payload.objects.filter(pk=payload_id, lease_owner=owner).first()


def _has_predecessor(payload_id: str, key: str, created_at: datetime.datetime) -> bool:
    """Whether an older payload of the same strict-order key is not delivered yet."""
    earlier = Q(created_at__lt=created_at) | Q(created_at=created_at, pk__lt=payload_id)
    blocking = (State.PENDING, State.IN_FLIGHT, State.FAILED)
    return Payload.objects.filter(earlier, ordering_key=key, state__in=blocking).exists()


def mark_delivered(payload: Payload, *, receipt: Receipt) -> None:
    """Record the region's receipt; wake the next payload of a strict-order key."""
    Payload.objects.filter(pk=payload.pk).exclude(state=State.DELIVERED).update(
        state=State.DELIVERED,
        delivered_at=timezone.now(),
        last_error="" if receipt.outcome != "unhandled" else "no handler in the region",
        next_attempt_at=None,
        lease_owner="",
        lease_until=None,
    )
    if payload.ordering_key:
        following = (
            Payload.objects.filter(ordering_key=payload.ordering_key, state=State.PENDING)
            .order_by("created_at", "pk")
            .values_list("pk", "region")[:1]
        )
        enqueue([(str(pk), region) for pk, region in following])


def record_failure(payload: Payload, exc: DeliveryError, *, retry: bool = True, from_request: bool = False) -> str:
    """Schedule another attempt, or move the payload to failed (kept) and tell the user.

    ``from_request``: called while the provider waits, so the retry's message is published
    without letting a slow broker hold the answer.
    """
    attempts = payload.attempts
    # Only while the row is still ours: a worker whose lease expired must not undo the
    # attempt of the worker that claimed the row after it.
    mine = Payload.objects.filter(pk=payload.pk, lease_owner=payload.lease_owner).exclude(state=State.DELIVERED)
    if retry and exc.retryable and attempts < conf.DELIVERY_MAX_ATTEMPTS:
        slow = isinstance(exc, DeliveryTimeout) or exc.reason.startswith("http_429")
        delay = backoff(attempts, slow=slow, retry_after=exc.retry_after)
        updated = mine.update(
            state=State.PENDING,
            last_error=exc.reason[:2000],
            next_attempt_at=timezone.now() + datetime.timedelta(seconds=delay),
            lease_owner="",
            lease_until=None,
        )
        if not updated:
            return "superseded"
        logger.warning(
            "delivery of %s to %s failed (%s); retry in %.1fs", payload.pk, payload.region, exc.reason, delay
        )
        target = [(str(payload.pk), payload.region)]
        if not from_request:
            enqueue(target, countdown=delay)
            return State.PENDING
        publish_within(
            lambda: enqueue(target, countdown=delay, mark=False, retry=False),
            wait=conf.seconds("PUBLISH_TIMEOUT"),
            what=f"the retry of {payload.pk}",
        )
        Payload.objects.filter(pk=payload.pk).update(enqueued_at=timezone.now() + datetime.timedelta(seconds=delay))
        return State.PENDING
    if not mine.update(
        state=State.FAILED, last_error=exc.reason[:2000], next_attempt_at=None, lease_owner="", lease_until=None
    ):
        return "superseded"
    logger.error("payload %s for %s failed for good: %s", payload.pk, payload.region, exc.reason)
    report_outcome(str(payload.pk), outcome="failed")
    return State.FAILED


def sweep(*, regions: Sequence[str] | None = None) -> dict[str, int]:
    """Recover what the fast path missed; return counts.

    - ``in_flight`` rows whose lease expired (their worker died) become pending;
    - due pending rows with no message outstanding (held by a circuit, or published
      more than ``SWEEP_GRACE`` seconds ago and still here: a crash between commit and
      publish, a flushed broker) are published again, at most ``SWEEP_BATCH`` per region
      per run, so a recovered region drains at a bounded rate. A region whose circuit
      is open gets one message when its probe is due, and none before.
    """
    now = timezone.now()
    grace = datetime.timedelta(seconds=conf.seconds("SWEEP_GRACE"))
    expired = Payload.objects.filter(state=State.IN_FLIGHT, lease_until__lt=now).update(
        state=State.PENDING,
        lease_owner="",
        lease_until=None,
        enqueued_at=None,
        last_error="lease expired: the worker did not finish",
    )
    due = (
        Payload.objects.filter(state=State.PENDING)
        .exclude(region="")
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=now - grace))
    )
    names = list(regions) if regions is not None else sorted(set(due.values_list("region", flat=True)))
    published = 0
    for region in names:
        allowance = circuits.sweep_allowance(region, batch=conf.count("SWEEP_BATCH"))
        if allowance:
            ids = due.filter(region=region).order_by("created_at").values_list("pk", flat=True)[:allowance]
            published += enqueue([(str(pk), region) for pk in ids])
    if expired or published:
        logger.info("sweep: %d expired leases, %d payloads republished", expired, published)
    return {"expired_leases": expired, "republished": published}


def replay(payload_ids: Iterable[str]) -> int:
    """Send failed (or delivered) payloads again; return how many were reset.

    The envelope id does not change, so a payload the region already handled is
    acknowledged there without running its handler a second time.
    """
    ids = [str(pk) for pk in payload_ids]
    reset = (
        Payload.objects.filter(pk__in=ids, state__in=(State.FAILED, State.DELIVERED))
        .exclude(region="")
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


def report_outcome(payload_id: str, *, outcome: str) -> None:
    """Tell the user through the control response (if any), and remember the view's new hash."""
    stored = Payload.objects.filter(pk=payload_id).values_list("envelope", flat=True).first()
    if stored is None:
        return
    envelope = Envelope.from_json(stored)
    updated = control_responses.report(envelope.control_response, outcome=outcome)
    if updated is not None:
        fresh = envelope.replace(control_response=updated).to_json().decode()
        Payload.objects.filter(pk=payload_id).update(envelope=fresh)


def check_loading_view(payload_id: str) -> None:
    """After ``LOADING_VIEW_TIMEOUT``: never leave a user on a Loading modal.

    If the region already replaced the modal, Slack refuses this update (the view's
    hash changed) and nothing happens.
    """
    state = Payload.objects.filter(pk=payload_id).values_list("state", flat=True).first()
    if state == State.DELIVERED:
        report_outcome(payload_id, outcome="done")
    elif state in ACTIVE_STATES:
        report_outcome(payload_id, outcome="timed_out")
