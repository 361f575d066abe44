"""Celery tasks of the control silo. Messages carry payload ids, never bodies."""

from __future__ import annotations

from celery import shared_task

from . import delivery


@shared_task(name="silo_router.control.deliver", acks_late=True, ignore_result=True)
def deliver_payload(payload_id: str) -> str:
    """Deliver one stored payload to its region."""
    return delivery.deliver(payload_id)


@shared_task(name="silo_router.control.check_loading_view", ignore_result=True)
def check_loading_view(payload_id: str) -> None:
    """Replace a Loading modal that is still showing after ``LOADING_VIEW_TIMEOUT``."""
    delivery.check_loading_view(payload_id)
