"""django-silo-router in control mode: the real asynchronous path.

Verify, classify, resolve through the ``Integration`` table, commit a ``Payload`` row
to SQLite (WAL) and publish a Celery message on kombu's filesystem transport. No worker
consumes the messages: they pile up in ``VAR_DIR/broker/out``.
"""

from __future__ import annotations

import os

from .common import *  # noqa: F403
from .common import SLACK_API_URL, SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET, VAR_DIR

INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "silo_router.control"]
MIDDLEWARE = ["silo_router.control.middleware.SiloRouterMiddleware"]
ROOT_URLCONF = "projects.urls_silo"

#: FULL (SQLite's default) syncs the WAL at every commit: a 200 means the payload is on
#: disk. NORMAL syncs only at checkpoints: it survives a process crash, not a power cut.
SQLITE_SYNCHRONOUS = os.environ.get("BENCH_SQLITE_SYNCHRONOUS", "FULL")

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / "control.sqlite3",
        # One connection per gunicorn thread, kept between requests.
        "CONN_MAX_AGE": None,
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": f"PRAGMA journal_mode=WAL; PRAGMA synchronous={SQLITE_SYNCHRONOUS};",
        },
    }
}

SILO_ROUTER = {
    "MODE": "control",
    "SIGNING_KEYS": {"bench-1": "bench-only-control-to-region-key-0123456789abcdef"},
    "SIGNING_KEY_ID": "bench-1",
    "REGIONS": {"us": {"TRANSPORT": "celery"}},
    "SLACK": {"SIGNING_SECRETS": [SLACK_SIGNING_SECRET], "BOT_TOKEN": SLACK_BOT_TOKEN, "API_URL": SLACK_API_URL},
}

BROKER_DIR = VAR_DIR / "broker"
# The host part only keeps kombu from warning that none was given.
CELERY_BROKER_URL = "filesystem://localhost//"
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "data_folder_in": str(BROKER_DIR / "out"),
    "data_folder_out": str(BROKER_DIR / "out"),
    "processed_folder": str(BROKER_DIR / "processed"),
    "control_folder": str(BROKER_DIR / "control"),
    "store_processed": False,
}
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
