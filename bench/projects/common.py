"""What every benchmark project shares: no debug, no middleware, quiet logs.

Each target adds only what it needs, so the comparison is between the request paths
and not between middleware stacks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

#: Databases and broker folders (the benchmark makes a fresh temporary one per run).
VAR_DIR = Path(os.environ.get("BENCH_VAR_DIR") or "/nonexistent-bench-var-dir")

SECRET_KEY = "bench-only-django-secret-key-not-secret-0123456789"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
WSGI_APPLICATION = "projects.wsgi.application"

INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, Any] = {}
TEMPLATES: list[dict[str, Any]] = []

#: Slack's signing secret; the load generator signs with the same value.
SLACK_SIGNING_SECRET = os.environ.get("BENCH_SLACK_SIGNING_SECRET", "bench-only-slack-signing-secret-0123456789")
SLACK_BOT_TOKEN = "xoxb-bench-only-token"
#: Nothing in a benchmark server may reach slack.com: any Web API call goes to the
#: discard port on loopback and fails at once.
SLACK_API_URL = "http://127.0.0.1:9/api/"

LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
}
