"""What both region silos share; ``region_us`` and ``region_eu`` name the region.

A region holds no Slack credential at all: its handlers' Web API calls go to control's
proxy (``CONTROL_URL``), signed with the region's own hop key and naming the installation,
and control adds the token. Install links point at control's public install URL.
"""

from __future__ import annotations

import os
from typing import Any

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, SILO_ROUTER_BASE, region_signing_key, sqlite_database

INSTALLED_APPS = [*INSTALLED_APPS, "silo_router.region", "example_project.issues"]
ROOT_URLCONF = "example_project.urls_region"

#: Control's internal address (its gunicorn, not the public edge Slack posts to).
CONTROL_URL = os.environ.get("SILO_CONTROL_URL", "http://127.0.0.1:8009")
#: Control's public install URL, where an install link sends an organization's admin.
SLACK_INSTALL_URL = os.environ.get("SLACK_INSTALL_URL", "http://127.0.0.1:8000/extensions/slack/install/")


def region_settings(region: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(DATABASES, SILO_ROUTER)`` for region silo ``region``: its own hop key, no Slack secret."""
    databases = {"default": sqlite_database(f"region_{region}.sqlite3")}
    key_id, key = region_signing_key(region)
    silo_router = {
        **SILO_ROUTER_BASE,
        "MODE": "region",
        "REGION": region,
        "SIGNING_KEYS": {key_id: key},  # its own key only
        "SIGNING_KEY_ID": key_id,
        "CONTROL_URL": CONTROL_URL,
        "SLACK": {"INSTALL_URL": SLACK_INSTALL_URL},
        "HANDLER_MODULES": ["example_project.issues.slack_handlers"],
    }
    return databases, silo_router
