"""Celery beat entries and task names of the control silo. Importable from settings (it imports no models)."""

from __future__ import annotations

from typing import Any

SWEEP_TASK = "silo_router.control.sweep"
DELIVER_TASK = "silo_router.control.deliver"
#: Delivers a list of payload ids of one region (the wake-up the request path publishes after its answer).
DELIVER_BATCH_TASK = "silo_router.control.deliver_batch"
#: Delivers one chunk of a region's backlog (region, payload ids), then publishes the next chunks.
DRAIN_TASK = "silo_router.control.drain"
CHECK_LOADING_VIEW_TASK = "silo_router.control.check_loading_view"
ROTATE_TOKENS_TASK = "silo_router.control.rotate_tokens"
PRUNE_TASK = "silo_router.control.prune"


def beat_schedule(every: float = 5.0) -> dict[str, dict[str, Any]]:
    """Entries for ``CELERY_BEAT_SCHEDULE``: ``{**beat_schedule(), ...}``."""
    return {"silo-router-sweep": {"task": SWEEP_TASK, "schedule": every, "options": {"expires": every * 2}}}


def token_rotation_schedule(every: float = 600.0) -> dict[str, dict[str, Any]]:
    """The entry that refreshes expiring Slack tokens ahead of requests, for apps with token rotation on.

    ``CELERY_BEAT_SCHEDULE = {**beat_schedule(), **token_rotation_schedule()}``. Keep
    ``every`` well under ``SLACK["TOKEN_ROTATION_MARGIN"]`` (2 hours by default).
    """
    return {"silo-router-rotate-tokens": {"task": ROTATE_TOKENS_TASK, "schedule": every, "options": {"expires": every}}}


def retention_schedule(every: float = 3600.0) -> dict[str, dict[str, Any]]:
    """The entry that deletes expired payloads and drops old bodies (``DELIVERED_RETENTION`` and on).

    ``CELERY_BEAT_SCHEDULE = {**beat_schedule(), **retention_schedule()}``. Each run stops
    after ``every`` seconds at most and the next one goes on, so runs never overlap.
    """
    return {
        "silo-router-prune": {
            "task": PRUNE_TASK,
            "schedule": every,
            "kwargs": {"max_seconds": every * 0.9},
            "options": {"expires": every},
        }
    }
