"""What a mapping row may name: a configured region, a registered provider (the admin and the shell check alike)."""

from __future__ import annotations

from collections.abc import Iterable

from silo_router.conf import conf


def unknown_region(region: str) -> str | None:
    """Why ``region`` cannot be an organization's region, or ``None`` if it can."""
    if region in conf.REGIONS:
        return None
    return f"{region!r} is not a region in SILO_ROUTER['REGIONS']. Valid regions: {_listed(conf.REGIONS)}."


def unknown_provider(provider: str) -> str | None:
    """Why ``provider`` cannot be an installation's provider, or ``None`` if it can."""
    if provider in conf.PROVIDERS:
        return None
    return f"{provider!r} is not a registered provider. Valid providers: {_listed(conf.PROVIDERS)}."


def _listed(names: Iterable[str]) -> str:
    return ", ".join(sorted(names)) or "(none configured)"
