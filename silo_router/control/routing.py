"""The routing table: which strategy answers a request kind, and how far it fans out."""

from __future__ import annotations

from collections.abc import Mapping

from silo_router.conf import conf
from silo_router.providers.base import InboundRequest
from silo_router.routing import Fanout, Strategy

__all__ = ["Fanout", "Strategy", "fanout_for", "strategy_for"]


def _lookup(table: Mapping[str, str], inbound: InboundRequest) -> str | None:
    for key in (f"{inbound.provider}.{inbound.kind}", f"{inbound.provider}.{inbound.type}"):
        if key in table:
            return table[key]
    return None


def strategy_for(inbound: InboundRequest) -> Strategy | None:
    """The configured strategy for ``inbound`` (``type:name`` beats ``type``).

    ``None`` when the table names neither: every type the library knows has a default
    route, so that is a type Slack added since.
    """
    route = _lookup(conf.ROUTES, inbound)
    return None if route is None else Strategy(route)


def fanout_for(inbound: InboundRequest) -> Fanout:
    """The configured fan-out for ``inbound``; default one region."""
    return Fanout(_lookup(conf.FANOUT, inbound) or Fanout.ONE)
