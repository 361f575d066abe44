"""The transport interface: how a sealed envelope reaches a region."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping
from typing import Any

from silo_router.envelope import SealedEnvelope


@dataclasses.dataclass(frozen=True)
class Receipt:
    """The region's answer to one envelope.

    ``outcome`` is ``handled``, ``duplicate`` (already handled; ``response`` is the
    first answer), ``unhandled`` (no handler registered; not an error) or ``queued``
    (accepted by a transport that does not wait for the handler).
    """

    outcome: str
    response: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "response": self.response}


class DeliveryError(Exception):
    """An envelope did not get through.

    ``retryable`` says whether another attempt may succeed (a region that is down)
    or not (a region that refused the envelope as forged or malformed).
    """

    def __init__(
        self, reason: str, *, retryable: bool, retry_after: float | None = None, region_fault: bool | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after
        #: Whether this says the region is unwell (counts toward its circuit breaker) rather
        #: than that this one payload failed there (a handler error: a poison payload must
        #: not hold back the rest of the region's traffic).
        self.region_fault = retryable if region_fault is None else region_fault


class DeliveryTimeout(DeliveryError):
    """The region did not answer in time; it may still be working on the envelope."""

    def __init__(self, reason: str = "timeout") -> None:
        super().__init__(reason, retryable=True)


class Transport(abc.ABC):
    """Delivers sealed envelopes to one region."""

    def __init__(self, region: str, options: Mapping[str, Any]) -> None:
        self.region = region
        self.options = options

    @abc.abstractmethod
    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        """Send ``sealed``; with ``wait``, return the handler's receipt.

        Raises ``DeliveryError`` (``DeliveryTimeout`` when ``timeout`` ran out).
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most transports hold nothing
        """Release pooled resources."""
