"""The region's Celery task for the ``celery`` transport.

After handling (or giving up on) an envelope, the region tells control through the
control queue, signed with its own hop key: control keeps the payload leased until then,
so a broker that loses the message costs a redelivery, never the payload. Replies the
handler left for after commit run once the confirmation is on its way.

The task reads the attempt's trace headers and number from its message headers (the
celery transport's :class:`~silo_router.transports.base.Hop`), so its receive span is
the attempt's child even on a worker without sentry-sdk's Celery integration. The
confirmation carries the receive span's headers the same way, so control's
``confirm_delivery`` (messaging ``settle``) joins the same trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from celery import Task, current_app, shared_task

from silo_router import after_receipt, signing, tracing
from silo_router.conf import conf
from silo_router.envelope import Outcome, decrypt_from_queue, sign_for_region
from silo_router.exceptions import EnvelopeRejected, SiloRouterConfigurationError
from silo_router.transports.base import Hop
from silo_router.transports.celery import CONFIRM_TASK, RECEIVE_TASK, hop_of

from .receiver import HandlerFailed, accept, dispatch, receiving, record_rejection

logger = logging.getLogger("silo_router.region")

#: Handler failures are retried by the region worker this many times before control hears "failed".
MAX_RETRIES = 5
#: Retry ``n`` waits ``RETRY_BASE ** n`` seconds, at most ``MAX_RETRY_DELAY``.
RETRY_BASE = 2
MAX_RETRY_DELAY = 60


@shared_task(bind=True, name=RECEIVE_TASK, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_RETRIES)
def receive_envelope(self: Task[Any, Any], token: str, x_silo_router_signature: str, region: str) -> dict[str, Any]:
    """Decrypt, verify and dispatch one envelope; retry handler failures with backoff; confirm to control.

    The signature is named after the header it stands for, so an error report of a
    failing task scrubs it from the task's frame as it scrubs that header.
    """
    hop = hop_of(self.request)
    try:
        body = decrypt_from_queue(token, x_silo_router_signature, region=region).decode("utf-8")
    except (EnvelopeRejected, UnicodeDecodeError) as exc:
        reason = exc.reason if isinstance(exc, EnvelopeRejected) else "malformed_envelope"
        logger.warning("refused a queued envelope that cannot be opened: %s", reason)
        record_rejection(reason, region=region, hop=hop)
        return {"outcome": str(Outcome.REJECTED), "reason": reason}
    with after_receipt.holding() as held:
        try:
            accepted = accept(
                body.encode(), x_silo_router_signature, region=region, max_age=conf.QUEUED_SIGNATURE_MAX_AGE, hop=hop
            )
        except EnvelopeRejected as exc:
            logger.warning("rejected a queued envelope: %s", exc.reason)
            confirm(body, region, Outcome.REJECTED, exc.reason, hop=hop, trace=hop.trace)
            return {"outcome": str(Outcome.REJECTED), "reason": exc.reason}
        with receiving(accepted) as span:
            retries = int(self.request.retries or 0)
            span.set(region_retry=retries or None)
            try:
                receipt = dispatch(accepted, span=span)
            except HandlerFailed as exc:
                if self.max_retries is not None and retries >= self.max_retries:
                    confirm(body, region, Outcome.FAILED, str(exc), hop=hop)
                    raise
                raise self.retry(exc=exc, countdown=min(RETRY_BASE**retries, MAX_RETRY_DELAY)) from exc
            confirm(body, region, receipt.outcome, "", hop=hop)
    after_receipt.run_all(held)
    return receipt.as_dict()


def confirm(
    body: str,
    region: str,
    outcome: str,
    reason: str,
    *,
    hop: Hop | None = None,
    trace: Mapping[str, str] | None = None,
) -> None:
    """Send control a confirmation for the envelope in ``body``, signed with ``region``'s key.

    The message carries ``trace`` (by default the current span's headers: the receive
    span's) and the number of the attempt in ``hop``.
    """
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
    carried = Hop(trace=tracing.propagation_headers() if trace is None else trace, attempt=hop.attempt if hop else None)
    headers = carried.headers()
    current_app.send_task(
        CONFIRM_TASK, args=(payload_id, str(outcome), reason, signature), queue=conf.CONTROL_QUEUE, headers=headers
    )
