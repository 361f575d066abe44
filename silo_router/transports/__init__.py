"""Pluggable transports, chosen per region by alias (``local``, ``http``, ``celery``) or dotted path."""

from __future__ import annotations

from typing import cast

from silo_router.conf import conf
from silo_router.plugins import cached, import_by_alias, lookup

from .base import DeliveryError, DeliveryTimeout, Receipt, Transport

ALIASES = {
    "local": "silo_router.transports.local.LocalTransport",
    "http": "silo_router.transports.http.HttpTransport",
    "celery": "silo_router.transports.celery.CeleryTransport",
}

__all__ = ["ALIASES", "DeliveryError", "DeliveryTimeout", "Receipt", "Transport", "transport_for"]


@cached
def transport_for(region: str) -> Transport:
    """The transport instance for ``region``, built once from ``SILO_ROUTER['REGIONS']``."""
    options = lookup(conf.REGIONS, region, setting="REGIONS", what="Region")
    cls = import_by_alias(
        str(options.get("TRANSPORT", "http")), aliases=ALIASES, setting=f"REGIONS][{region!r}][TRANSPORT"
    )
    return cast(Transport, cls(region, options))
