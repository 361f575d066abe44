"""What a handler receives: the parsed request, its organizations and ways to reply."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from silo_router.envelope import Envelope
from silo_router.providers.base import InboundRequest

from . import after_receipt


@dataclasses.dataclass
class HandlerRequest:
    """The provider-neutral part of a handler's argument."""

    envelope: Envelope
    inbound: InboundRequest
    #: True while the handler's database transaction is open (set by the receiver).
    in_transaction: bool = dataclasses.field(default=False, init=False)

    @property
    def payload(self) -> Mapping[str, Any]:
        return self.inbound.payload

    @property
    def kind(self) -> str:
        return self.inbound.kind

    @property
    def organization_ids(self) -> tuple[str, ...]:
        """Organizations in this region that the request concerns."""
        return self.envelope.organization_ids

    @property
    def organization_id(self) -> str | None:
        """The first of ``organization_ids`` (most requests concern exactly one)."""
        return self.envelope.organization_ids[0] if self.envelope.organization_ids else None

    @staticmethod
    def after_commit(func: Callable[[], Any]) -> None:
        """Run ``func`` once the handler's transaction commits (at once outside one).

        Reply helpers use this so a user is never told about work that rolled back,
        and no transaction is held open across a network call. During a delivery the
        work waits until the receipt has been sent back to control.
        """
        after_receipt.schedule(func)

    def on_failure(self, exc: BaseException) -> None:
        """Called when the handler raised; providers tell the user here."""
