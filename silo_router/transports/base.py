"""The transport interface: how a sealed envelope reaches a region."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from silo_router.envelope import Outcome, Receipt, SealedEnvelope

__all__ = ["DeliveryError", "DeliveryTimeout", "Outcome", "Receipt", "Transport"]


class DeliveryError(Exception):
    """An envelope did not get through.

    ``retryable`` says whether another attempt may succeed (a region that is down)
    or not (a region that refused this envelope as malformed). ``region_fault`` says
    the region is unwell (it counts toward the region's circuit breaker) rather than
    that this one payload failed there (a handler error: a poison payload must not hold
    back the rest of the region's traffic). ``hold`` marks a fault of the whole hop
    (keys, clocks, addressing, an ingress mid-deploy, an envelope version the region
    does not read yet): every payload would fail the same way, so control holds the
    region's traffic behind its circuit instead of spending attempts.
    """

    def __init__(
        self,
        reason: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        region_fault: bool | None = None,
        hold: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        self.region_fault = retryable if region_fault is None else region_fault
        self.hold = hold


class DeliveryTimeout(DeliveryError):
    """The region did not answer in time; it may still be working on the envelope.

    ``region_fault`` is False when the region had accepted the envelope (a slow
    handler) and True when it never answered (connect or accept timeout).
    """

    def __init__(self, reason: str = "timeout", *, region_fault: bool = True) -> None:
        super().__init__(reason, retryable=True, region_fault=region_fault)


class Transport(abc.ABC):
    """Delivers sealed envelopes to one region."""

    def __init__(self, region: str, options: Mapping[str, Any]) -> None:
        self.region = region
        self.options = options

    @abc.abstractmethod
    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        """Send ``sealed`` and return the region's receipt within ``timeout`` seconds in total.

        With ``wait`` the caller needs the handler's answer (synchronous kinds).
        Without it a transport that can confirm later (``celery``) may return
        ``Outcome.QUEUED`` once the region's queue has the envelope; transports with no
        confirmation channel (``http``, ``local``) always return the handler's outcome.
        Raises ``DeliveryError`` (``DeliveryTimeout`` when ``timeout`` ran out), never
        anything else.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most transports hold nothing
        """Release pooled resources (called when cached transports are dropped)."""
