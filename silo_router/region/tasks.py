"""The region's Celery task for the ``celery`` transport.

After handling (or giving up on) an envelope, the region tells control through the
control queue, signed with its own hop key: control keeps the payload leased until then,
so a broker that loses the message costs a redelivery, never the payload. Replies the
handler left for after commit run once the confirmation is on its way.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Task, current_app, shared_task
from celery.exceptions import MaxRetriesExceededError

from silo_router import after_receipt, signing
from silo_router.conf import conf
from silo_router.envelope import Outcome, decrypt_from_queue, sign_for_region
from silo_router.exceptions import EnvelopeRejected, SiloRouterConfigurationError
from silo_router.transports.celery import CONFIRM_TASK, RECEIVE_TASK

from .receiver import HandlerFailed, receive

logger = logging.getLogger("silo_router.region")

#: Handler failures are retried by the region worker this many times before control hears "failed".
MAX_RETRIES = 5
#: Retry ``n`` waits ``RETRY_BASE ** n`` seconds, at most ``MAX_RETRY_DELAY``.
RETRY_BASE = 2
MAX_RETRY_DELAY = 60


@shared_task(bind=True, name=RECEIVE_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_RETRIES)
def receive_envelope(self: Task[Any, Any], token: str, signature: str, region: str) -> dict[str, Any]:
    """Decrypt, verify and dispatch one envelope; retry handler failures with backoff; confirm to control."""
    try:
        body = decrypt_from_queue(token, signature, region=region).decode("utf-8")
    except (EnvelopeRejected, UnicodeDecodeError) as exc:
        reason = exc.reason if isinstance(exc, EnvelopeRejected) else "malformed_envelope"
        logger.warning("refused a queued envelope that cannot be opened: %s", reason)
        return {"outcome": str(Outcome.REJECTED), "reason": reason}
    with after_receipt.holding() as held:
        try:
            receipt = receive(body.encode(), signature, region=region, max_age=conf.QUEUED_SIGNATURE_MAX_AGE)
        except EnvelopeRejected as exc:
            logger.warning("rejected a queued envelope: %s", exc.reason)
            confirm(body, region, Outcome.REJECTED, exc.reason)
            return {"outcome": str(Outcome.REJECTED), "reason": exc.reason}
        except HandlerFailed as exc:
            try:
                raise self.retry(exc=exc, countdown=min(RETRY_BASE**self.request.retries, MAX_RETRY_DELAY))
            except MaxRetriesExceededError:
                confirm(body, region, Outcome.FAILED, str(exc))
                raise exc from None
    confirm(body, region, receipt.outcome, "")
    after_receipt.run_all(held)
    return receipt.as_dict()


def confirm(body: str, region: str, outcome: str, reason: str) -> None:
    """Send control a confirmation for the envelope in ``body``, signed with ``region``'s key."""
    try:
        payload_id = str(json.loads(body)["id"])
    except (ValueError, KeyError, TypeError, RecursionError):
        logger.error("cannot confirm an envelope without an id")
        return
    try:
        signature = sign_for_region(region, signing.confirmation_message(payload_id, str(outcome), reason))
    except SiloRouterConfigurationError as exc:
        logger.error("cannot sign a confirmation: %s", exc)
        return
    current_app.send_task(CONFIRM_TASK, args=(payload_id, str(outcome), reason, signature), queue=conf.CONTROL_QUEUE)
