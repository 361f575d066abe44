"""What both region silos share; ``region_us`` and ``region_eu`` name the region."""

from __future__ import annotations

from typing import Any

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, SILO_ROUTER_BASE, region_signing_key, sqlite_database

INSTALLED_APPS = [*INSTALLED_APPS, "silo_router.region", "example_project.issues"]
ROOT_URLCONF = "example_project.urls_region"


def region_settings(region: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(DATABASES, SILO_ROUTER)`` for region silo ``region``; regions hold no Slack signing secret."""
    databases = {"default": sqlite_database(f"region_{region}.sqlite3")}
    key_id, key = region_signing_key(region)
    silo_router = {
        **SILO_ROUTER_BASE,
        "MODE": "region",
        "REGION": region,
        "SIGNING_KEYS": {key_id: key},  # its own key only
        "SIGNING_KEY_ID": key_id,
        "HANDLER_MODULES": ["example_project.issues.slack_handlers"],
    }
    return databases, silo_router
