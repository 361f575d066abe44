"""Settings for the test suite: a monolith (control and region in one process)."""

from __future__ import annotations

import os
import tempfile

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "silo_router.control",
    "silo_router.region",
]
MIDDLEWARE = [
    "silo_router.control.middleware.SiloRouterMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
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
#: A file, not SQLite's shared-cache memory database: there a second thread's write fails
#: at once with "database table is locked", where a file database waits for the lock as
#: a deployed SQLite does (replies write from the delivery's thread while control records it).
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        "TEST": {"NAME": os.path.join(tempfile.gettempdir(), f"silo-router-tests-{os.getpid()}.sqlite3")},
    }
}

SLACK_SIGNING_SECRET = "tests-slack-signing-secret"

SILO_ROUTER = {
    "MODE": "monolith",
    "REGION": "us",
    "SIGNING_KEYS": {"k1": "tests-control-to-region-key-0123456789abcdef"},
    "SIGNING_KEY_ID": "k1",
    "REGIONS": {"us": {"TRANSPORT": "local"}, "eu": {"TRANSPORT": "local"}},
    "SLACK": {
        "SIGNING_SECRETS": [SLACK_SIGNING_SECRET],
        "BOT_TOKEN": "xoxb-tests",
    },
}

CELERY_TASK_ALWAYS_EAGER = True
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_BROKER_URL = "memory://"
