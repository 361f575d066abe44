"""In-process transport: the region receiver runs in this process (monolith, tests)."""

from __future__ import annotations

from silo_router.envelope import SealedEnvelope
from silo_router.exceptions import EnvelopeRejected

from .base import DeliveryError, Receipt, Transport


class LocalTransport(Transport):
    """Calls the region receiver directly; the timeout is not enforced in-process."""

    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        from silo_router.region.receiver import HandlerFailed, receive

        try:
            return receive(sealed.body, sealed.signature, region=self.region)
        except EnvelopeRejected as exc:
            raise DeliveryError(exc.reason, retryable=False) from exc
        except HandlerFailed as exc:
            raise DeliveryError(str(exc), retryable=True, region_fault=False) from exc
