"""django-silo-router in control mode: the real asynchronous path.

Verify, classify, resolve through the ``Integration`` table, commit a ``Payload`` row
and wake delivery through Celery. No worker consumes the messages: they pile up in the
broker. The storage (``projects.storage``) comes from the environment:

  BENCH_DATABASE  ``sqlite`` (default: SQLite in WAL mode under ``VAR_DIR``) or ``postgres``
                  (``BENCH_POSTGRES_PORT``, ``BENCH_POSTGRES_NAME`` on 127.0.0.1, persistent
                  connections)
  BENCH_BROKER    ``filesystem`` (default: kombu's filesystem transport in ``VAR_DIR/broker/out``)
                  or ``redis`` (``BENCH_REDIS_URL``)
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

DATABASE = os.environ.get("BENCH_DATABASE", "sqlite")
BROKER = os.environ.get("BENCH_BROKER", "filesystem")

SQLITE_DATABASE = {
    "ENGINE": "django.db.backends.sqlite3",
    "NAME": VAR_DIR / "control.sqlite3",
    # One connection per gunicorn thread, kept between requests.
    "CONN_MAX_AGE": None,
    "OPTIONS": {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        # The page cache docs/deployment.md recommends (SQLite's default is 2 MiB).
        "init_command": f"PRAGMA journal_mode=WAL; PRAGMA synchronous={SQLITE_SYNCHRONOUS}; PRAGMA cache_size=-65536;",
    },
}
#: The server's defaults: fsync on, synchronous_commit on (a commit waits for its WAL flush).
POSTGRES_DATABASE = {
    "ENGINE": "django.db.backends.postgresql",
    "NAME": os.environ.get("BENCH_POSTGRES_NAME", "silo_bench"),
    "USER": "silo",
    "HOST": "127.0.0.1",
    "PORT": os.environ.get("BENCH_POSTGRES_PORT", "5432"),
    # One connection per gunicorn thread, kept between requests and checked before reuse.
    "CONN_MAX_AGE": None,
    "CONN_HEALTH_CHECKS": True,
}
if DATABASE not in ("sqlite", "postgres"):
    raise ValueError(f"BENCH_DATABASE={DATABASE!r}: sqlite or postgres")
DATABASES = {"default": POSTGRES_DATABASE if DATABASE == "postgres" else SQLITE_DATABASE}

SILO_ROUTER = {
    "MODE": "control",
    "SIGNING_KEYS": {"bench-1": "bench-only-control-to-region-key-0123456789abcdef"},
    "SIGNING_KEY_ID": "bench-1",
    "REGIONS": {"us": {"TRANSPORT": "celery"}},
    "SLACK": {"SIGNING_SECRETS": [SLACK_SIGNING_SECRET], "BOT_TOKEN": SLACK_BOT_TOKEN, "API_URL": SLACK_API_URL},
}

BROKER_DIR = VAR_DIR / "broker"
if BROKER == "redis":
    CELERY_BROKER_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, object] = {}
elif BROKER == "filesystem":
    # The host part only keeps kombu from warning that none was given.
    CELERY_BROKER_URL = "filesystem://localhost//"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
else:
    raise ValueError(f"BENCH_BROKER={BROKER!r}: filesystem or redis")
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
