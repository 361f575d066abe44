"""Celery tasks of the control silo. Messages carry payload ids, never bodies.

Schedule ``silo_router.control.sweep`` with Celery beat (every 5-10 seconds); see
``beat_schedule()``.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from . import delivery

SWEEP_TASK = "silo_router.control.sweep"


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


def beat_schedule(every: float = 5.0) -> dict[str, dict[str, Any]]:
    """Entries for ``CELERY_BEAT_SCHEDULE``: ``{**beat_schedule(), ...}``."""
    return {"silo-router-sweep": {"task": SWEEP_TASK, "schedule": every, "options": {"expires": every * 2}}}
