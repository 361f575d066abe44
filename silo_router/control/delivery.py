"""Delivering stored payloads to regions, with retries and a dead-letter state.

Each step is a short statement on the ``Payload`` row; no transaction is open while
a transport talks to a region.
"""

from __future__ import annotations

import datetime
import logging
import random
from collections.abc import Sequence

from django.db import transaction
from django.utils import timezone

from silo_router import tracing
from silo_router.conf import conf
from silo_router.envelope import Envelope, seal
from silo_router.transports import DeliveryError, Receipt, transport_for

from . import control_responses
from .models import Payload

logger = logging.getLogger("silo_router.delivery")

MAX_BACKOFF = 300.0


def backoff(attempt: int, *, retry_after: float | None = None) -> float:
    """Seconds before attempt ``attempt + 1``: exponential with +-50% jitter, capped.

    A region's ``Retry-After`` is a floor.
    """
    delay = min(conf.DELIVERY_BACKOFF * 2 ** max(attempt - 1, 0), MAX_BACKOFF) * random.uniform(0.5, 1.5)
    return max(delay, retry_after or 0.0)


def store(envelopes: Sequence[Envelope]) -> list[Payload]:
    """Commit payloads for ``envelopes``; return the new ones (retries are already there).

    Raises ``DatabaseError`` when storage fails: the caller answers 5xx so the provider
    retries.
    """
    ids = [e.id for e in envelopes]
    existing = {str(pk) for pk in Payload.objects.filter(pk__in=ids).values_list("pk", flat=True)}
    fresh = [
        Payload(
            id=e.id,
            idempotency_key=e.idempotency_key[:200],
            provider=e.provider,
            kind=e.kind[:200],
            region=e.region,
            strategy=e.strategy,
            envelope=e.to_json().decode(),
        )
        for e in envelopes
        if e.id not in existing
    ]
    if fresh:
        with transaction.atomic():
            Payload.objects.bulk_create(fresh)
    return fresh


def enqueue(payload_id: str, *, countdown: float = 0.0) -> None:
    """Wake a worker for ``payload_id``. A broker failure leaves the row pending."""
    from .tasks import deliver_payload

    try:
        deliver_payload.apply_async((payload_id,), countdown=countdown or None)
    except Exception:  # the broker's errors vary by transport; the row is the truth
        logger.exception("could not enqueue payload %s; it stays pending", payload_id)


def deliver(payload_id: str) -> str:
    """One delivery attempt for a pending payload; returns the state it ends in."""
    payload = Payload.objects.filter(pk=payload_id).first()
    if payload is None or payload.state != Payload.State.PENDING:
        return payload.state if payload else "missing"
    envelope = Envelope.from_json(payload.envelope)
    with tracing.flow(
        "silo_router.deliver", f"deliver {envelope.kind} to {payload.region}", headers=envelope.trace
    ) as flow:
        tracing.set_data(flow, payload_id=payload_id, region=payload.region, attempt=payload.attempts + 1)
        try:
            receipt = transport_for(payload.region).deliver(seal(envelope), timeout=conf.DELIVERY_TIMEOUT, wait=False)
        except DeliveryError as exc:
            return record_failure(payload, exc)
        mark_delivered(payload_id, attempts=payload.attempts + 1, receipt=receipt)
        return Payload.State.DELIVERED


def mark_delivered(payload_id: str, *, attempts: int, receipt: Receipt) -> None:
    Payload.objects.filter(pk=payload_id).update(
        state=Payload.State.DELIVERED,
        attempts=attempts,
        delivered_at=timezone.now(),
        last_error="" if receipt.outcome != "unhandled" else "no handler in the region",
        next_attempt_at=None,
    )


def record_failure(payload: Payload, exc: DeliveryError, *, retry: bool = True) -> str:
    """Schedule another attempt, or move the payload to failed and tell the user."""
    attempts = payload.attempts + 1
    if retry and exc.retryable and attempts < conf.DELIVERY_MAX_ATTEMPTS:
        delay = backoff(attempts, retry_after=exc.retry_after)
        Payload.objects.filter(pk=payload.pk).update(
            attempts=attempts,
            last_error=exc.reason[:2000],
            next_attempt_at=timezone.now() + datetime.timedelta(seconds=delay),
        )
        logger.warning(
            "delivery of %s to %s failed (%s); retry in %.1fs", payload.pk, payload.region, exc.reason, delay
        )
        enqueue(str(payload.pk), countdown=delay)
        return Payload.State.PENDING
    Payload.objects.filter(pk=payload.pk).update(
        state=Payload.State.FAILED, attempts=attempts, last_error=exc.reason[:2000], next_attempt_at=None
    )
    logger.error("payload %s for %s failed for good: %s", payload.pk, payload.region, exc.reason)
    report_outcome(str(payload.pk), outcome="failed")
    return Payload.State.FAILED


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
    if state == Payload.State.DELIVERED:
        report_outcome(payload_id, outcome="done")
    elif state == Payload.State.PENDING:
        report_outcome(payload_id, outcome="timed_out")
