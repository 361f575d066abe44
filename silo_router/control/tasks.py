"""Celery tasks of the control silo. Messages carry payload ids, never bodies.

Schedule ``silo_router.control.sweep`` with Celery beat (every 5-10 seconds); see
``silo_router.control.beat.beat_schedule``. Other modules publish these tasks by name
(:data:`silo_router.control.beat.DELIVER_TASK`), never by importing this module.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from silo_router import signing, tracing
from silo_router.conf import conf
from silo_router.exceptions import EnvelopeRejected
from silo_router.transports.celery import CONFIRM_TASK, hop_of

from . import delivery, retention
from .beat import (
    CHECK_LOADING_VIEW_TASK,
    DELIVER_BATCH_TASK,
    DELIVER_TASK,
    DRAIN_TASK,
    PRUNE_TASK,
    ROTATE_TOKENS_TASK,
    SWEEP_TASK,
)
from .models import Payload
from .slack.rotation import rotate_due_tokens


# acks_late: a message is acknowledged only once its attempt ended, so a broker
# connection lost mid-task does not lose the wake-up. No reject_on_worker_lost: a
# payload that kills its worker (a segfault, the OOM killer) would otherwise be
# re-queued and kill workers without limit. The message is acknowledged instead; the
# database lease of the claimed row expires, the sweeper hands it out again as a new
# attempt (the claim counted it), and at DELIVERY_MAX_ATTEMPTS it goes to failed.
@shared_task(name=DELIVER_TASK, acks_late=True, reject_on_worker_lost=False, ignore_result=True)
def deliver_payload(payload_id: str) -> str:
    """Attempt delivery of one stored payload to its region."""
    return str(delivery.deliver(payload_id))


@shared_task(name=DELIVER_BATCH_TASK, acks_late=True, reject_on_worker_lost=False, ignore_result=True)
def deliver_payloads(payload_ids: list[str]) -> dict[str, int]:
    """Attempt delivery of stored payloads of one region, claimed and sent as one batch; return how many
    ended each way."""
    return delivery.deliver_batch(payload_ids)


@shared_task(name=DRAIN_TASK, acks_late=True, reject_on_worker_lost=False, ignore_result=True)
def drain_payloads(region: str, payload_ids: list[str]) -> dict[str, int]:
    """Deliver one chunk of a region's backlog as a batch, then publish its next chunks."""
    return delivery.drain_chunk(region, payload_ids)


@shared_task(name=SWEEP_TASK, ignore_result=True)
def sweep() -> dict[str, int]:
    """Expire dead leases, republish payloads the fast path missed, check Loading modals,
    prune old attempts (a span, ``silo_router.control.sweep``, with the counts)."""
    return delivery.sweep()


@shared_task(name=CHECK_LOADING_VIEW_TASK, ignore_result=True)
def check_loading_view(payload_id: str) -> None:
    """Check a Loading modal now. The sweeper runs the same check when it is due, so a
    lost message changes nothing."""
    delivery.check_loading_view(payload_id)


@shared_task(name=ROTATE_TOKENS_TASK, ignore_result=True)
def rotate_tokens() -> int:
    """Refresh the Slack bot tokens that expire within ``SLACK["TOKEN_ROTATION_MARGIN"]``
    (scheduled by :func:`silo_router.control.beat.token_rotation_schedule`)."""
    return rotate_due_tokens()


@shared_task(bind=True, name=CONFIRM_TASK, ignore_result=True)
def confirm_delivery(self: Task[Any, Any], payload_id: str, outcome: str, reason: str, signature: str) -> str:
    """A region worker (``celery`` transport) reports how a queued envelope ended.

    The confirmation must be signed with a key of the payload's own region, so one
    region cannot confirm (or fail) another region's payloads. Its span settles the
    envelope (messaging ``settle``).
    """
    carrier = hop_of(self.request).trace  # the region's receive span, also without Celery's integration
    with tracing.flow("control", "confirm", f"confirm {payload_id}", carrier=carrier, envelope_id=payload_id) as span:
        region = Payload.objects.filter(pk=payload_id).values_list("region", flat=True).first()
        if not region:
            span.set(outcome="missing")
            return "missing"
        span.set(region=region)
        span.set_attributes(tracing.names.messaging(tracing.names.SETTLE, destination=region, message_id=payload_id))
        message = signing.confirmation_message(payload_id, outcome, reason)
        try:
            signing.verify(
                message,
                signature,
                keys=conf.signing_keys_for(region),
                max_age=conf.QUEUED_SIGNATURE_MAX_AGE,
            )
        except EnvelopeRejected as exc:
            span.fail("rejected")
            span.set(rejected=exc.reason)
            raise
        span.set(receipt=outcome[:32])
        result = str(delivery.confirm(payload_id, outcome=outcome, reason=reason))
        span.set(outcome=result)
        return result


@shared_task(name=PRUNE_TASK, ignore_result=True)
def prune(max_seconds: float | None = None) -> dict[str, Any]:
    """Delete expired payloads with their attempts and drop old bodies, in short batches
    (scheduled by :func:`silo_router.control.beat.retention_schedule`)."""
    return retention.prune(max_seconds=max_seconds).as_dict()
