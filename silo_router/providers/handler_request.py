"""What a region handler receives: the parsed request, its organizations and ways to reply.

Provider-neutral; each provider subclasses :class:`HandlerRequest` with its own replies
(``silo_router.providers.slack.request.SlackHandlerRequest``).
"""

from __future__ import annotations

import contextvars
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from silo_router import after_receipt
from silo_router.envelope import Envelope
from silo_router.providers.base import InboundRequest

#: Set while a handler's database transaction is open in this thread (or task).
_transaction_open: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "silo_router_handler_transaction", default=False
)


def handler_transaction_open() -> bool:
    """Whether a handler's transaction is open here: provider clients refuse network calls then."""
    return _transaction_open.get()


@dataclasses.dataclass
class HandlerRequest:
    """The provider-neutral part of a handler's argument.

    ``in_transaction`` is True while the handler runs inside its database transaction
    (the receiver sets and resets it); provider clients refuse network calls then, also
    when handler code builds a client itself.
    """

    envelope: Envelope
    inbound: InboundRequest
    _in_transaction: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    @in_transaction.setter
    def in_transaction(self, value: bool) -> None:
        self._in_transaction = bool(value)
        _transaction_open.set(self._in_transaction)

    @property
    def body(self) -> Mapping[str, Any]:
        """The whole parsed request (Bolt's ``body``)."""
        return self.inbound.payload

    @property
    def payload(self) -> Mapping[str, Any]:
        """The whole parsed request, the same as ``body`` (not Bolt's narrower ``payload``)."""
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

    def after_commit(self, func: Callable[[], Any]) -> None:
        """Run ``func`` once the handler's transaction commits (at once outside one).

        Reply helpers use this so a user is never told about work that rolled back,
        and no transaction is held open across a network call. ``func`` runs with
        ``in_transaction`` False, so it may call Slack. During a delivery it waits until
        the receipt has gone back to control (:mod:`silo_router.after_receipt`).
        """

        def committed() -> None:
            held = self.in_transaction
            self.in_transaction = False
            try:
                func()
            finally:
                self.in_transaction = held

        after_receipt.schedule(committed)

    def on_failure(self, exc: BaseException) -> None:
        """Called when the handler raised.

        The envelope may still be retried, so this must not tell the user that the work
        failed; control reports a failure once the payload is really ``failed``.
        """
