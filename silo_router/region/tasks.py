"""The region's Celery task for the ``celery`` transport."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task

from silo_router.conf import conf
from silo_router.exceptions import EnvelopeRejected
from silo_router.transports.celery import RECEIVE_TASK

from .receiver import HandlerFailed, receive

logger = logging.getLogger("silo_router.region")


@shared_task(bind=True, name=RECEIVE_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=5)
def receive_envelope(self: Task, body: str, signature: str, region: str) -> dict[str, Any]:
    """Verify and dispatch one envelope; retry handler failures with backoff."""
    try:
        return receive(
            body.encode(), signature, region=region, max_age=int(conf.get("QUEUED_SIGNATURE_MAX_AGE"))
        ).as_dict()
    except EnvelopeRejected as exc:
        logger.warning("rejected a queued envelope: %s", exc.reason)
        return {"outcome": "rejected", "reason": exc.reason}
    except HandlerFailed as exc:
        raise self.retry(exc=exc, countdown=min(2**self.request.retries, 60)) from exc
