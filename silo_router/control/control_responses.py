"""Control responses: answers the control silo gives itself before forwarding.

Handlers are named in ``SILO_ROUTER['CONTROL_RESPONSE_HANDLERS']`` (name -> dotted
path) and looked up by name; which requests get one is an operator decision held in
options (``slack.control_responses.enabled`` and ``slack.control_responses.actions``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import Any, Protocol

from silo_router.conf import conf
from silo_router.plugins import cached, import_by_alias
from silo_router.providers.base import InboundRequest

from .options import CONTROL_RESPONSE_ACTIONS, CONTROL_RESPONSES_ENABLED, options

DEFAULT_HANDLER = "slack.loading_modal"
#: Request types whose trigger_id a control response may use.
ELIGIBLE_TYPES = frozenset({"block_actions", "shortcut", "message_action", "command"})


@dataclasses.dataclass(frozen=True)
class ControlResponse:
    """What a control response did; travels to the region inside the envelope."""

    handler: str
    status: str  # "opened" or "failed"
    view_id: str | None = None
    external_id: str | None = None
    hash: str | None = None
    error: str | None = None
    elapsed_ms: float = 0.0

    @property
    def opened(self) -> bool:
        return self.status == "opened"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ControlResponseHandler(Protocol):
    """Answers in control, and later reports how the forwarded work ended."""

    name: str

    def run(self, inbound: InboundRequest, *, external_id: str, timeout: float) -> ControlResponse:
        """Answer now (before any database or region work)."""

    def report(self, response: Mapping[str, Any], *, outcome: str) -> str | None:
        """Tell the user how it ended (``done``, ``failed``, ``timed_out``); return the view's new hash."""


@cached
def handlers() -> Mapping[str, ControlResponseHandler]:
    """Every configured handler, imported and instantiated once."""
    return {
        name: import_by_alias(path, aliases={}, setting="CONTROL_RESPONSE_HANDLERS")(name)
        for name, path in conf.CONTROL_RESPONSE_HANDLERS.items()
    }


def select(inbound: InboundRequest) -> str | None:
    """The handler name to run for ``inbound``, or ``None``; reads options (no query)."""
    if inbound.provider != "slack" or inbound.type not in ELIGIBLE_TYPES or not inbound.trigger_id:
        return None
    if not options.get(CONTROL_RESPONSES_ENABLED):
        return None
    for entry in options.get(CONTROL_RESPONSE_ACTIONS):
        name, _, handler = entry.partition("=")
        if name.strip() == inbound.name:
            return handler.strip() or DEFAULT_HANDLER
    return None


def external_id_for(inbound: InboundRequest) -> str:
    """A Slack ``external_id`` for the loading view, unique per request."""
    return "sr-" + hashlib.sha256(inbound.idempotency_key.encode()).hexdigest()[:32]


def run(name: str, inbound: InboundRequest, *, timeout: float) -> ControlResponse:
    """Run handler ``name``; an unknown name is reported as a failed control response."""
    handler = handlers().get(name)
    if handler is None:
        return ControlResponse(handler=name, status="failed", error="unknown_handler")
    result: ControlResponse = handler.run(inbound, external_id=external_id_for(inbound), timeout=timeout)
    return result


def report(response: Mapping[str, Any] | None, *, outcome: str) -> Mapping[str, Any] | None:
    """Pass how the work ended to the handler that answered, if it opened something.

    Returns the control response with the view's new ``hash`` when the handler replaced
    the view, so a later report is not mistaken for a stale one; ``None`` otherwise.
    """
    if not response or response.get("status") != "opened":
        return None
    handler = handlers().get(str(response.get("handler")))
    if handler is None:
        return None
    new_hash = handler.report(response, outcome=outcome)
    return {**response, "hash": new_hash} if new_hash else None
