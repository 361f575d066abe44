"""Settings for the separate processes of race tests: the test settings on a shared SQLite file."""

from __future__ import annotations

import os

from tests.settings import *  # noqa: F403
from tests.settings import SILO_ROUTER, SLACK_SIGNING_SECRET

from .token_server import CLIENT_ID, CLIENT_SECRET

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["SILO_RACE_DB"],
        "OPTIONS": {"timeout": 30},
    }
}
SILO_ROUTER = {
    **SILO_ROUTER,
    "SLACK": {
        "SIGNING_SECRETS": [SLACK_SIGNING_SECRET],
        "CLIENT_ID": CLIENT_ID,
        "CLIENT_SECRET": CLIENT_SECRET,
        "API_URL": os.environ.get("SILO_RACE_API_URL", "http://127.0.0.1:9/api/"),
    },
}
