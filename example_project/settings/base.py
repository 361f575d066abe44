"""Settings shared by every silo of the example project.

Everything that differs between machines comes from environment variables with demo
defaults: the var directory (``SILO_DEMO_VAR``), URLs and ports, and the secrets. The
defaults are for a laptop demo only; never deploy them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from example_project.sentry_setup import init_sentry

REPO_DIR = Path(__file__).resolve().parents[2]
#: Databases, broker folders and logs live here (the demo's Cluster makes a fresh one).
VAR_DIR = Path(os.environ.get("SILO_DEMO_VAR") or REPO_DIR / "var" / "demo").resolve()

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-django-secret-key-do-not-deploy-0123456789")
DEBUG = os.environ.get("DJANGO_DEBUG", "") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
WSGI_APPLICATION = "example_project.wsgi.application"
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]


def sqlite_database(name: str) -> dict[str, Any]:
    """A SQLite database under ``VAR_DIR``, tuned for several processes and threads.

    WAL lets readers (the demo reads region databases directly) run beside a writer;
    ``IMMEDIATE`` transactions take the write lock up front, so concurrent writers wait
    for the busy timeout instead of failing with "database is locked" on upgrade. A
    64 MiB page cache per connection (SQLite's default is 2 MiB) keeps the indexes a
    payload insert and a claim touch in memory once the payload table is large.
    """
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": VAR_DIR / name,
        "CONN_MAX_AGE": 600,  # one connection per thread, kept: opening one costs more than the insert
        "CONN_HEALTH_CHECKS": True,
        "OPTIONS": {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-65536;",
        },
    }


def database_from_url(url: str) -> dict[str, Any]:
    """Django ``DATABASES`` entry for ``postgres://user[:password]@host[:port]/name`` (PostgreSQL only)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.path.strip("/"):
        raise ValueError(f"not a postgres://user@host:port/name URL: {url!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.strip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": 600,
        "CONN_HEALTH_CHECKS": True,
    }


#: ``SILO_DEMO_LOG_LEVEL=DEBUG`` logs everything (slack_sdk's request lines too).
DEMO_LOG_LEVEL = os.environ.get("SILO_DEMO_LOG_LEVEL", "")

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d:%(threadName)s] %(message)s"},
    },
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": DEMO_LOG_LEVEL or "WARNING"},
    "loggers": {
        "silo_router": {"handlers": ["stderr"], "level": DEMO_LOG_LEVEL or "INFO", "propagate": False},
        "example_project": {"handlers": ["stderr"], "level": DEMO_LOG_LEVEL or "INFO", "propagate": False},
    },
}

# -- the control-to-region hop and Slack ----------------------------------------------

#: Each region has its own hop key (``SILO_ROUTER_<REGION>_SIGNING_KEY[_ID]``): control holds
#: every region's, a region silo only its own, so one region cannot speak for another (nor
#: call Slack for another's installations through control's Web API proxy).
REGION_NAMES = ("us", "eu")


def region_signing_key(region: str) -> tuple[str, str]:
    """``(key id, key)`` of ``region``'s control-to-region hop."""
    prefix = f"SILO_ROUTER_{region.upper()}_SIGNING_KEY"
    return (
        os.environ.get(f"{prefix}_ID", f"{region}-demo-1"),
        os.environ.get(prefix, f"demo-only-{region}-control-to-region-key-0123456789abcdef"),
    )


#: Where the fake Slack (or Slack) is: control's Web API calls, the OAuth consent page, and
#: the response_urls Slack hands out. Only control holds Slack credentials; see control.py.
SLACK_API_URL = os.environ.get("SLACK_API_URL", "http://127.0.0.1:8010/api/")
SLACK_BASE_URL = SLACK_API_URL.removesuffix("/").removesuffix("/api")

#: The fake Slack serves response_urls under this prefix; like hooks.slack.com URLs they
#: are capabilities, so logs and Sentry events show only the prefix.
FAKE_RESPONSE_URL_PREFIX = SLACK_BASE_URL + "/response/"

#: What every silo shares; control.py and region_*.py add their parts.
SILO_ROUTER_BASE: dict[str, Any] = {
    "REDACTED_URL_PREFIXES": [FAKE_RESPONSE_URL_PREFIX],
    "TRACES_SAMPLE_RATE": float(os.environ.get("SILO_ROUTER_TRACES_SAMPLE_RATE") or 0.01),
}

# -- Sentry (README, "Sentry and tracing"): SENTRY_DSN, or SILO_DEMO_SENTRY_CAPTURE_DIR ---

init_sentry()

#: Seconds the demo's "upstream issue tracker" takes to answer (see issues/upstream.py).
#: At 3 s or more a trigger_id (valid 3 s from the click) is always dead by the time the
#: naive handler calls views.open, however fast the hop is; with less, the naive path's
#: failure would depend on how busy the machine is (an idle loopback hop takes ~0.1 s).
DEMO_UPSTREAM_LATENCY = float(os.environ.get("DEMO_UPSTREAM_LATENCY", "3.0"))

# -- Celery (read by example_project.celery with namespace "CELERY") -------------------

BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "filesystem://")
#: kombu's filesystem transport: a broker that needs no server. Producer and consumer
#: use the same folder (``out``) so the control silo and its worker share one queue.
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = (
    {
        "data_folder_in": str(BROKER_DIR / "out"),
        "data_folder_out": str(BROKER_DIR / "out"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        "polling_interval": 0.2,
    }
    if CELERY_BROKER_URL.startswith("filesystem://")
    else {}
)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
#: Celery's Django fix-up closes every database connection before and after each task
#: unless this is set; then a worker thread reopens its connection only every this many
#: tasks (and CONN_MAX_AGE still applies). Opening a SQLite connection costs more than a
#: delivery's statements.
CELERY_DB_REUSE_MAX = 1000
