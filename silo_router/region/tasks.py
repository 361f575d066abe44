"""The region's Celery task for the ``celery`` transport.

After handling (or giving up on) an envelope, the region tells control through the
control queue, signed with the hop's key: control keeps the payload leased until then,
so a broker that loses the message costs a redelivery, never the payload.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Task, current_app, shared_task
from celery.exceptions import MaxRetriesExceededError

from silo_router import signing
from silo_router.conf import conf
from silo_router.exceptions import EnvelopeRejected
from silo_router.transports.celery import CONFIRM_TASK, RECEIVE_TASK

from .receiver import HandlerFailed, receive

logger = logging.getLogger("silo_router.region")

MAX_RETRIES = 5


@shared_task(bind=True, name=RECEIVE_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_RETRIES)
def receive_envelope(self: Task[Any, Any], body: str, signature: str, region: str) -> dict[str, Any]:
    """Verify and dispatch one envelope; retry handler failures with backoff; confirm to control."""
    try:
        receipt = receive(
            body.encode(), signature, region=region, max_age=int(conf.get("QUEUED_SIGNATURE_MAX_AGE"))
        ).as_dict()
    except EnvelopeRejected as exc:
        logger.warning("rejected a queued envelope: %s", exc.reason)
        confirm(body, "rejected", exc.reason)
        return {"outcome": "rejected", "reason": exc.reason}
    except HandlerFailed as exc:
        try:
            raise self.retry(exc=exc, countdown=min(2**self.request.retries, 60))
        except MaxRetriesExceededError:
            confirm(body, "failed", str(exc))
            raise exc from None
    confirm(body, str(receipt["outcome"]), "")
    return receipt


def confirm(body: str, outcome: str, reason: str) -> None:
    """Send control a signed confirmation for the envelope in ``body``."""
    try:
        payload_id = str(json.loads(body)["id"])
    except (ValueError, KeyError, TypeError):
        logger.error("cannot confirm an envelope without an id")
        return
    key_id = conf.SIGNING_KEY_ID
    if not key_id or key_id not in conf.SIGNING_KEYS:
        logger.error("cannot sign a confirmation: SIGNING_KEY_ID names no key")
        return
    signature = signing.sign(
        signing.confirmation_message(payload_id, outcome, reason), key_id=key_id, key=conf.SIGNING_KEYS[key_id]
    )
    current_app.send_task(
        CONFIRM_TASK, args=(payload_id, outcome, reason, signature), queue=str(conf.get("CONTROL_QUEUE"))
    )
