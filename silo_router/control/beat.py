"""Celery beat entries and task names of the control silo. Importable from settings (it imports no models)."""

from __future__ import annotations

from typing import Any

SWEEP_TASK = "silo_router.control.sweep"
DELIVER_TASK = "silo_router.control.deliver"
CHECK_LOADING_VIEW_TASK = "silo_router.control.check_loading_view"


def beat_schedule(every: float = 5.0) -> dict[str, dict[str, Any]]:
    """Entries for ``CELERY_BEAT_SCHEDULE``: ``{**beat_schedule(), ...}``."""
    return {"silo-router-sweep": {"task": SWEEP_TASK, "schedule": every, "options": {"expires": every * 2}}}
