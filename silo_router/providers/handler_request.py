"""What a region handler receives: the parsed request, its organizations and ways to reply.

Provider-neutral; each provider subclasses :class:`HandlerRequest` with its own replies
(``silo_router.providers.slack.request.SlackHandlerRequest``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from django.db import transaction

from silo_router.envelope import Envelope
from silo_router.providers.base import InboundRequest


@dataclasses.dataclass
class HandlerRequest:
    """The provider-neutral part of a handler's argument.

    ``in_transaction`` is True while the handler runs inside its database transaction
    (the receiver sets and resets it); provider clients refuse network calls then.
    """

    envelope: Envelope
    inbound: InboundRequest
    in_transaction: bool = dataclasses.field(default=False, compare=False)

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
        and no transaction is held open across a network call.
        """
        transaction.on_commit(func, robust=True)

    def on_failure(self, exc: BaseException) -> None:
        """Called when the handler raised.

        The envelope may still be retried, so this must not tell the user that the work
        failed; control reports a failure once the payload is really ``failed``.
        """
