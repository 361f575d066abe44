"""WSGI entry point for every silo; ``DJANGO_SETTINGS_MODULE`` picks which (default: control)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings.control")

from django.core.wsgi import get_wsgi_application  # noqa: E402

from example_project.celery import app as celery_app  # noqa: E402

application = get_wsgi_application()

__all__ = ["application", "celery_app"]
