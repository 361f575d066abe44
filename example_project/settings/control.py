"""The control silo: the public edge that Slack posts to (``/extensions/slack/``) and the admin."""

from __future__ import annotations

import os

from .base import *  # noqa: F403
from .base import INSTALLED_APPS, MIDDLEWARE, SILO_ROUTER_BASE, SLACK_SIGNING_SECRET, sqlite_database

INSTALLED_APPS = [*INSTALLED_APPS, "silo_router.control"]
# First, so provider requests skip session, CSRF and auth work they do not need.
MIDDLEWARE = ["silo_router.control.middleware.SiloRouterMiddleware", *MIDDLEWARE]
ROOT_URLCONF = "example_project.urls_control"
DATABASES = {"default": sqlite_database("control.sqlite3")}

SILO_ROUTER = {
    **SILO_ROUTER_BASE,
    "MODE": "control",
    "REGIONS": {
        "us": {
            "TRANSPORT": "http",
            "URL": os.environ.get("SILO_REGION_US_URL", "http://127.0.0.1:8001/silo-router/envelopes/"),
        },
        "eu": {
            "TRANSPORT": "http",
            "URL": os.environ.get("SILO_REGION_EU_URL", "http://127.0.0.1:8002/silo-router/envelopes/"),
        },
    },
    "SLACK": {**SILO_ROUTER_BASE["SLACK"], "SIGNING_SECRETS": [SLACK_SIGNING_SECRET]},
}
