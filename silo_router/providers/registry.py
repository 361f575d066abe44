"""Provider instances by name, built once from ``SILO_ROUTER['PROVIDERS']``."""

from __future__ import annotations

from typing import cast

from silo_router.conf import conf
from silo_router.exceptions import SiloRouterConfigurationError
from silo_router.plugins import cached, did_you_mean, import_by_alias

from .base import Provider


@cached
def get_provider(name: str) -> Provider:
    """The provider called ``name``."""
    providers = conf.PROVIDERS
    if name not in providers:
        raise SiloRouterConfigurationError(
            f"Provider {name!r} is not in SILO_ROUTER['PROVIDERS']." + did_you_mean(name, providers)
        )
    cls = import_by_alias(providers[name], aliases={}, setting=f"PROVIDERS][{name!r}")
    return cast(Provider, cls.from_settings())
