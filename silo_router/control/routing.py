"""The routing table: which strategy answers a request kind, and how far it fans out."""

from __future__ import annotations

from collections.abc import Mapping

from silo_router.conf import conf
from silo_router.providers.base import InboundRequest
from silo_router.routing import Fanout, Strategy

__all__ = ["Fanout", "Strategy", "fanout_for", "has_route", "strategy_for"]


def _lookup(table: Mapping[str, str], inbound: InboundRequest) -> str | None:
    for key in (f"{inbound.provider}.{inbound.kind}", f"{inbound.provider}.{inbound.type}"):
        if key in table:
            return table[key]
    return None


def has_route(inbound: InboundRequest) -> bool:
    """Whether the routing table names ``inbound``'s kind or type (every known type has a default)."""
    return _lookup(conf.ROUTES, inbound) is not None


def strategy_for(inbound: InboundRequest) -> Strategy:
    """The configured strategy for ``inbound``; ``type:name`` beats ``type``; default async."""
    return Strategy(_lookup(conf.ROUTES, inbound) or Strategy.ASYNC)


def fanout_for(inbound: InboundRequest) -> Fanout:
    """The configured fan-out for ``inbound``; default one region."""
    return Fanout(_lookup(conf.FANOUT, inbound) or Fanout.ONE)
