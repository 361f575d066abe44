"""The routing table: which strategy answers a request kind, and how far it fans out."""

from __future__ import annotations

import enum
from collections.abc import Mapping

from silo_router.conf import conf
from silo_router.providers.base import InboundRequest


class Strategy(enum.StrEnum):
    """How the control silo answers a request."""

    #: Answered in control, never forwarded (url_verification, ssl_check).
    CONTROL_ONLY = "control_only"
    #: Stored, acknowledged at once with an empty 200, delivered by a worker. A control
    #: response (a Loading modal) may run first when the admin options say so.
    ASYNC = "async"
    #: Forwarded while Slack waits, within the remaining deadline; the region's answer
    #: becomes the HTTP body. On timeout: the provider's fallback answer.
    SYNC = "sync"
    #: Acknowledged with 200 and recorded, but not forwarded.
    IGNORE = "ignore"


class Fanout(enum.StrEnum):
    """How many regions a request goes to when its installation spans several."""

    ALL = "all"
    ONE = "one"


def _lookup(table: Mapping[str, str], inbound: InboundRequest) -> str | None:
    for key in (f"{inbound.provider}.{inbound.kind}", f"{inbound.provider}.{inbound.type}"):
        if key in table:
            return table[key]
    return None


def strategy_for(inbound: InboundRequest) -> Strategy:
    """The configured strategy for ``inbound``; ``type:name`` beats ``type``; default async."""
    return Strategy(_lookup(conf.ROUTES, inbound) or Strategy.ASYNC)


def fanout_for(inbound: InboundRequest) -> Fanout:
    """The configured fan-out for ``inbound``; default one region."""
    return Fanout(_lookup(conf.FANOUT, inbound) or Fanout.ONE)
