"""The control silo: the public edge that Slack posts to (``/extensions/slack/``) and the admin.

Control is the only silo with Slack credentials: the signing secret, the app's OAuth client
id and secret, and the workspaces' tokens, which it stores encrypted with
``TOKEN_ENCRYPTION_KEYS`` once each workspace is installed through
``/extensions/slack/install/``. Regions call Slack through its Web API proxy.
"""

from __future__ import annotations

import os
from typing import Any

from silo_router.control.beat import beat_schedule, token_rotation_schedule

from .base import *  # noqa: F403
from .base import (
    INSTALLED_APPS,
    MIDDLEWARE,
    SILO_ROUTER_BASE,
    SLACK_API_URL,
    SLACK_BASE_URL,
    database_from_url,
    region_signing_key,
    sqlite_database,
)

INSTALLED_APPS = [*INSTALLED_APPS, "silo_router.control"]
# First, so provider requests skip session, CSRF and auth work they do not need.
MIDDLEWARE = ["silo_router.control.middleware.SiloRouterMiddleware", *MIDDLEWARE]
ROOT_URLCONF = "example_project.urls_control"
#: ``SILO_CONTROL_DATABASE_URL`` (``postgres://user@host:port/name``) puts control's database on
#: PostgreSQL (the fault tests run on both); unset, it is SQLite under ``VAR_DIR``.
CONTROL_DATABASE_URL = os.environ.get("SILO_CONTROL_DATABASE_URL", "")
DATABASES = {
    "default": database_from_url(CONTROL_DATABASE_URL) if CONTROL_DATABASE_URL else sqlite_database("control.sqlite3")
}

SLACK_SIGNING_SECRET = os.environ.get("SLACK_SIGNING_SECRET", "demo-only-slack-signing-secret-0123456789")
#: The app's OAuth credentials (the fake Slack is started with the same pair).
SLACK_CLIENT_ID = os.environ.get("SLACK_CLIENT_ID", "0000000001.0000000001")
SLACK_CLIENT_SECRET = os.environ.get("SLACK_CLIENT_SECRET", "demo-only-slack-client-secret")
#: What an install asks for: post messages and replies, slash commands, @-mentions.
SLACK_SCOPES = ["chat:write", "commands", "app_mentions:read", "channels:history"]
#: Where Slack sends the user back after consent: control's public URL (behind the buffering
#: proxy, which is what the browser sees), registered with the app as Slack requires.
SLACK_REDIRECT_URI = os.environ.get("SLACK_REDIRECT_URI", "http://127.0.0.1:8000/extensions/slack/oauth_redirect/")
#: Tokens expiring within this many seconds are refreshed before use (the rotation tests
#: set it just under the fake's short token lifetime, so that tokens are due in seconds).
SLACK_TOKEN_ROTATION_MARGIN = int(os.environ.get("SLACK_TOKEN_ROTATION_MARGIN") or 7200)
#: Fernet keys for the stored tokens, comma-separated, the newest first
#: (``manage.py silo_router_rotate_encryption_key`` re-encrypts with the first).
TOKEN_ENCRYPTION_KEYS = [key for key in os.environ.get("SILO_ROUTER_TOKEN_ENCRYPTION_KEYS", "").split(",") if key]

#: Delivery settings an environment variable ``SILO_ROUTER_<NAME>`` may override (the
#: end-to-end tests shorten the retry schedule this way); unset means the library default.
ENV_TUNABLE: dict[str, type[float] | type[int]] = {
    "DELIVERY_BACKOFF": float,
    "DELIVERY_MAX_ATTEMPTS": int,
    "DELIVERY_TIMEOUT": float,
    "LOADING_VIEW_TIMEOUT": float,
    "SWEEP_GRACE": float,
    "SWEEP_BATCH": int,
    "LEASE_MARGIN": float,
    "RETRY_JITTER": float,
    "DELIVERY_MAX_BACKOFF": float,
    "CIRCUIT_FAILURE_THRESHOLD": int,
    "CIRCUIT_OPEN_SECONDS": float,
    "CIRCUIT_MAX_OPEN_SECONDS": float,
    "QUEUED_CONFIRM_TIMEOUT": float,
}


def region(name: str, default_url: str) -> dict[str, Any]:
    """Region ``name`` over ``SILO_REGION_<NAME>_TRANSPORT`` (``http``, the default, or ``celery``).

    The ``celery`` transport publishes envelopes on the queue ``silo_router.region.<name>``,
    which a Celery worker of that region consumes; the URL is then unused.
    """
    prefix = f"SILO_REGION_{name.upper()}"
    key_id, key = region_signing_key(name)
    return {
        "TRANSPORT": os.environ.get(f"{prefix}_TRANSPORT") or "http",
        "URL": os.environ.get(f"{prefix}_URL", default_url),
        "SIGNING_KEYS": {key_id: key},
        "SIGNING_KEY_ID": key_id,
    }


def env_overrides() -> dict[str, Any]:
    """The ``ENV_TUNABLE`` settings that are set in the environment, parsed."""
    overrides: dict[str, Any] = {}
    for name, parse in ENV_TUNABLE.items():
        raw = os.environ.get(f"SILO_ROUTER_{name}")
        if raw:
            overrides[name] = parse(raw)
    return overrides


SILO_ROUTER = {
    **SILO_ROUTER_BASE,
    "MODE": "control",
    "REGIONS": {
        "us": region("us", "http://127.0.0.1:8001/silo-router/envelopes/"),
        "eu": region("eu", "http://127.0.0.1:8002/silo-router/envelopes/"),
    },
    "SLACK": {
        "SIGNING_SECRETS": [SLACK_SIGNING_SECRET],
        "API_URL": SLACK_API_URL,
        "CLIENT_ID": SLACK_CLIENT_ID,
        "CLIENT_SECRET": SLACK_CLIENT_SECRET,
        "SCOPES": SLACK_SCOPES,
        "AUTHORIZE_URL": SLACK_BASE_URL + "/oauth/v2/authorize",
        "REDIRECT_URI": SLACK_REDIRECT_URI,
        "TOKEN_ROTATION_MARGIN": SLACK_TOKEN_ROTATION_MARGIN,
    },
    "TOKEN_ENCRYPTION_KEYS": TOKEN_ENCRYPTION_KEYS,
    **env_overrides(),
}

#: Celery beat (``celery -A example_project.celery beat``) runs the delivery sweeper every
#: ``SILO_ROUTER_SWEEP_EVERY`` seconds and refreshes expiring Slack tokens (token rotation)
#: every ``SILO_ROUTER_ROTATE_TOKENS_EVERY`` seconds, ahead of the requests that need them.
CELERY_BEAT_SCHEDULE = {
    **beat_schedule(every=float(os.environ.get("SILO_ROUTER_SWEEP_EVERY") or 5.0)),
    **token_rotation_schedule(every=float(os.environ.get("SILO_ROUTER_ROTATE_TOKENS_EVERY") or 600.0)),
}

#: ``SILO_ROUTER_RUNNER=embedded`` (the cluster's ``control_runner="embedded"``): control's web
#: processes deliver and sweep themselves, with no Celery worker or beat, the sweep every
#: ``SILO_ROUTER_SWEEP_EVERY`` seconds as beat would.
if os.environ.get("SILO_ROUTER_RUNNER"):
    SILO_ROUTER["RUNNER"] = os.environ["SILO_ROUTER_RUNNER"]
    SILO_ROUTER["SWEEP_INTERVAL"] = float(os.environ.get("SILO_ROUTER_SWEEP_EVERY") or 5.0)
