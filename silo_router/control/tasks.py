"""Celery tasks of the control silo. Messages carry payload ids, never bodies.

Schedule ``silo_router.control.sweep`` with Celery beat (every 5-10 seconds); see
``silo_router.control.beat.beat_schedule``.
"""

from __future__ import annotations

from celery import shared_task

from silo_router import signing
from silo_router.conf import conf
from silo_router.transports.celery import CONFIRM_TASK

from . import delivery
from .beat import SWEEP_TASK
from .models import Payload


@shared_task(name="silo_router.control.deliver", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def deliver_payload(payload_id: str) -> str:
    """Attempt delivery of one stored payload to its region."""
    return delivery.deliver(payload_id)


@shared_task(name=SWEEP_TASK, ignore_result=True)
def sweep() -> dict[str, int]:
    """Expire dead leases and republish payloads the fast path missed."""
    return delivery.sweep()


@shared_task(name="silo_router.control.check_loading_view", ignore_result=True)
def check_loading_view(payload_id: str) -> None:
    """Replace a Loading modal that is still showing after ``LOADING_VIEW_TIMEOUT``."""
    delivery.check_loading_view(payload_id)


@shared_task(name=CONFIRM_TASK, ignore_result=True)
def confirm_delivery(payload_id: str, outcome: str, reason: str, signature: str) -> str:
    """A region worker (``celery`` transport) reports how a queued envelope ended.

    The confirmation must be signed with a key of the payload's own region, so one
    region cannot confirm (or fail) another region's payloads.
    """
    region = Payload.objects.filter(pk=payload_id).values_list("region", flat=True).first()
    if not region:
        return "missing"
    message = signing.confirmation_message(payload_id, outcome, reason)
    signing.verify(
        message,
        signature,
        keys=conf.signing_keys_for(region),
        max_age=int(conf.get("QUEUED_SIGNATURE_MAX_AGE")),
    )
    return delivery.confirm(payload_id, outcome=outcome, reason=reason)
