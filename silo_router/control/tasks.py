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
    """A region worker (``celery`` transport) reports how a queued envelope ended."""
    message = signing.confirmation_message(payload_id, outcome, reason)
    signing.verify(message, signature, keys=conf.SIGNING_KEYS, max_age=int(conf.get("QUEUED_SIGNATURE_MAX_AGE")))
    return delivery.confirm(payload_id, outcome=outcome, reason=reason)
