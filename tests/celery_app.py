"""The Celery app of the test suite: eager, configured from Django settings."""

from __future__ import annotations

from celery import Celery

app = Celery("silo_router_tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.set_default()
