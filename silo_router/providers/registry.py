"""Provider instances by name, built once from ``SILO_ROUTER['PROVIDERS']``."""

from __future__ import annotations

from typing import cast

from silo_router.conf import conf
from silo_router.plugins import cached, import_by_alias, lookup

from .base import Provider


@cached
def get_provider(name: str) -> Provider:
    """The provider called ``name``."""
    path = lookup(conf.PROVIDERS, name, setting="PROVIDERS", what="Provider")
    cls = import_by_alias(path, aliases={}, setting=f"PROVIDERS][{name!r}")
    return cast(Provider, cls.from_settings())
