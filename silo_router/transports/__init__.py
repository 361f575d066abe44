"""Pluggable transports, chosen per region by alias (``local``, ``http``, ``celery``) or dotted path."""

from __future__ import annotations

from typing import cast

from silo_router.conf import conf
from silo_router.exceptions import SiloRouterConfigurationError
from silo_router.plugins import cached, did_you_mean, import_by_alias

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
    regions = conf.REGIONS
    if region not in regions:
        raise SiloRouterConfigurationError(
            f"Region {region!r} is not in SILO_ROUTER['REGIONS']." + did_you_mean(region, regions)
        )
    options = regions[region]
    cls = import_by_alias(
        str(options.get("TRANSPORT", "http")), aliases=ALIASES, setting=f"REGIONS][{region!r}][TRANSPORT"
    )
    return cast(Transport, cls(region, options))
