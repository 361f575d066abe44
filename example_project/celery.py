"""The example project's Celery app, configured from Django settings (namespace ``CELERY``).

The default broker is kombu's filesystem transport, so the demo runs a real worker with
no broker server; set ``CELERY_BROKER_URL`` (e.g. ``redis://127.0.0.1:6379/0``) to use
another. Run a worker with::

    celery -A example_project.celery worker --pool=threads --concurrency=4 -Q celery
"""

from __future__ import annotations

import os
from pathlib import Path

from celery import Celery
from django.conf import settings
from kombu.transport import TRANSPORT_ALIASES

# Messages appear in the filesystem broker whole (see filesystem_broker).
TRANSPORT_ALIASES["filesystem"] = "example_project.filesystem_broker:Transport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings.control")

app = Celery("example_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
# Request threads of gunicorn's gthread workers must see this app, not Celery's fallback.
app.set_default()
app.autodiscover_tasks()


def ensure_broker_folders() -> None:
    """Create the filesystem broker's folders (kombu does not)."""
    options = getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}) or {}
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)


ensure_broker_folders()
