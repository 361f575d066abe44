"""The WSGI entry point of every benchmark project (``DJANGO_SETTINGS_MODULE`` picks which)."""

from __future__ import annotations

from django.conf import settings
from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()

if "silo_router.control" in settings.INSTALLED_APPS:
    # Request threads must publish on this app (filesystem broker), not Celery's default.
    from .celery_app import app as celery_app  # noqa: F401
