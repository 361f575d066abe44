"""The Celery app of the silo_router project: the filesystem or Redis broker, no worker."""

from __future__ import annotations

from pathlib import Path

from celery import Celery
from django.conf import settings

app = Celery("bench_silo")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.set_default()

for _key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
    if _key in settings.CELERY_BROKER_TRANSPORT_OPTIONS:
        Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS[_key]).mkdir(parents=True, exist_ok=True)
