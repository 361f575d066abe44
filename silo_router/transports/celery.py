"""Celery transport: publish the sealed envelope on the region's queue.

The region's worker runs ``silo_router.region.receive`` on it. Without ``wait`` the
envelope counts as delivered once the broker has it (the region task retries handler
failures itself); with ``wait`` (synchronous kinds) the result backend carries the
handler's answer back, so a result backend is required for those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import current_app
from celery.exceptions import TimeoutError as CeleryTimeoutError
from kombu.exceptions import OperationalError

from silo_router.envelope import SealedEnvelope

from .base import DeliveryError, DeliveryTimeout, Receipt, Transport

RECEIVE_TASK = "silo_router.region.receive"
#: The control task a region worker calls back with the outcome (see ``region.tasks``).
CONFIRM_TASK = "silo_router.control.confirm"


class CeleryTransport(Transport):
    """Options: ``QUEUE`` (default ``silo_router.region.<name>``)."""

    def __init__(self, region: str, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        self.queue = str(options.get("QUEUE") or f"silo_router.region.{region}")

    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        app = current_app
        try:
            result = app.send_task(
                RECEIVE_TASK,
                args=(sealed.body.decode(), sealed.signature, self.region),
                queue=self.queue,
                ignore_result=not wait,
            )
        except OperationalError as exc:
            raise DeliveryError(f"broker_error: {exc}", retryable=True) from exc
        if not wait:
            return Receipt(outcome="queued")
        if app.conf.result_backend in (None, "", "disabled"):
            raise DeliveryError("celery transport needs a result backend to answer synchronously", retryable=False)
        try:
            data = result.get(timeout=timeout, propagate=False)
        except CeleryTimeoutError as exc:
            raise DeliveryTimeout() from exc
        if isinstance(data, dict) and "outcome" in data:
            if data["outcome"] == "rejected":
                raise DeliveryError(str(data.get("reason")), retryable=False)
            return Receipt(outcome=str(data["outcome"]), response=data.get("response"))
        raise DeliveryError(f"region task failed: {type(data).__name__}", retryable=True)
