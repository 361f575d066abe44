"""Pluggable transports, chosen per region by alias (``local``, ``http``, ``celery``) or dotted path."""

from __future__ import annotations

import logging

from silo_router.conf import TRANSPORT_ALIASES, conf
from silo_router.plugins import import_by_alias, lookup, on_clear

from .base import (
    BatchResult,
    DeliveryError,
    DeliveryTimeout,
    Hop,
    NotSent,
    Outcome,
    Receipt,
    Transport,
    delivering,
    delivering_batch,
)

ALIASES = TRANSPORT_ALIASES

__all__ = [
    "ALIASES",
    "BatchResult",
    "DeliveryError",
    "DeliveryTimeout",
    "Hop",
    "NotSent",
    "Outcome",
    "Receipt",
    "Transport",
    "delivering",
    "delivering_batch",
    "drop_transports",
    "transport_for",
]

logger = logging.getLogger("silo_router.transports")
_transports: dict[str, Transport] = {}


def transport_for(region: str) -> Transport:
    """The transport instance for ``region``, built once from ``SILO_ROUTER['REGIONS']``."""
    transport = _transports.get(region)
    if transport is None:
        options = lookup(conf.REGIONS, region, setting="REGIONS", what="Region")
        cls = import_by_alias(
            str(options.get("TRANSPORT", "http")), aliases=ALIASES, setting=f"REGIONS][{region!r}][TRANSPORT"
        )
        transport = _transports.setdefault(region, cls(region, options))
    return transport


@on_clear
def drop_transports() -> None:
    """Close and forget every cached transport (settings changed, or shutting down)."""
    for transport in list(_transports.values()):
        try:
            transport.close()
        except Exception:  # closing is best-effort; the next call builds a fresh one
            logger.exception("closing the %s transport failed", transport.region)
    _transports.clear()
