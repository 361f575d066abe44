"""Celery transport: publish the sealed envelope on the region's queue.

The region's worker runs ``silo_router.region.receive`` on it. Without ``wait`` the
envelope counts as queued once the broker has it (the region confirms the outcome
later); with ``wait`` (synchronous kinds) the result backend carries the handler's
answer back, so a result backend is required for those. ``timeout`` bounds the wait for
that answer; publishing does not retry, so a broker that is down fails at once.

The message carries the attempt's :class:`~.base.Hop` as message headers (not as a task
argument, so a region worker of an older release runs it unchanged): a region worker
without sentry-sdk's Celery integration still joins the attempt's trace from them, and
with it, the integration's task transaction already continues it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from celery import current_app
from celery.exceptions import TimeoutError as CeleryTimeoutError

from silo_router import signing
from silo_router.envelope import Outcome, Receipt, SealedEnvelope, encrypt_for_queue

from .base import ATTEMPT_HEADER, REPLAY_HEADER, TRACE_HEADERS, DeliveryError, DeliveryTimeout, Hop, Transport

RECEIVE_TASK = "silo_router.region.receive"
#: The control task a region worker calls back with the outcome (see ``region.tasks``).
CONFIRM_TASK = "silo_router.control.confirm"
_ANSWERS = frozenset({Outcome.HANDLED, Outcome.DUPLICATE, Outcome.UNHANDLED})


class CeleryTransport(Transport):
    """Options: ``QUEUE`` (default ``silo_router.region.<name>``)."""

    def __init__(self, region: str, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        self.queue = str(options.get("QUEUE") or f"silo_router.region.{region}")

    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        deadline = time.monotonic() + timeout
        app = current_app
        if wait and app.conf.result_backend in (None, "", "disabled"):
            raise DeliveryError("celery transport needs a result backend to answer synchronously", retryable=False)
        try:
            result = app.send_task(
                RECEIVE_TASK,
                args=(encrypt_for_queue(sealed, region=self.region), sealed.signature, self.region),
                queue=self.queue,
                ignore_result=not wait,
                retry=False,
                headers=Hop.current().headers(),
            )
        except Exception as exc:  # every broker library raises its own errors
            raise DeliveryError(f"broker_error: {type(exc).__name__}", retryable=True) from exc
        if not wait:
            return Receipt(outcome=Outcome.QUEUED)
        try:
            data = result.get(timeout=max(deadline - time.monotonic(), 0.0), propagate=False)
        except CeleryTimeoutError as exc:
            raise DeliveryTimeout("timeout", region_fault=_never_started(result)) from exc
        except Exception as exc:  # the result backend's own errors
            raise DeliveryError(f"result_backend_error: {type(exc).__name__}", retryable=True) from exc
        return _receipt(data)


def hop_of(request: Any) -> Hop:
    """The hop a region task's message carried, from its Celery request (``self.request``).

    Celery 5 makes a message's own headers attributes of the request and keeps them in
    ``request.headers`` too, unless the message nests a ``headers`` dict of its own
    (sentry-sdk's integration does, and copies custom headers into it); both are read.
    """
    found: dict[str, Any] = {}
    nested = getattr(request, "headers", None)
    if isinstance(nested, Mapping):
        found.update(nested)
    for name in (*TRACE_HEADERS, ATTEMPT_HEADER, REPLAY_HEADER):
        value = getattr(request, name, None)
        if value is not None:
            found[name] = value
    return Hop.from_headers(found)


def _never_started(result: Any) -> bool:
    """Whether no region worker has picked the task up (``STARTED`` needs ``task_track_started``)."""
    try:
        return bool(result.state == "PENDING")
    except Exception:  # the backend cannot say: count it against the region
        return True


def _receipt(data: Any) -> Receipt:
    """What the region task returned, as a receipt or the ``DeliveryError`` it means."""
    if not isinstance(data, dict) or "outcome" not in data:
        raise DeliveryError(f"region task failed: {type(data).__name__}", retryable=True, region_fault=False)
    outcome = data["outcome"]
    if outcome == Outcome.REJECTED:
        reason = str(data.get("reason"))
        if reason in signing.FLEET_FAULT_REASONS:
            raise DeliveryError(reason, retryable=True, region_fault=True, hold=True)
        raise DeliveryError(reason, retryable=False)
    if outcome not in _ANSWERS:
        raise DeliveryError(f"region task answered {str(outcome)[:40]!r}", retryable=True)
    response = data.get("response")
    return Receipt(outcome=Outcome(outcome), response=response if isinstance(response, dict) else None)
