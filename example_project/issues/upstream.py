"""The demo's "upstream issue tracker": the slow network call a real handler makes.

A real integration asks another service (an issue tracker, a CRM) for what to show
the user after changing something. The demo has no such service, so this sleeps for
``DEMO_UPSTREAM_LATENCY`` seconds instead: a sleep here stands for a network call and is
the realistic slow part of the flow, not a shortcut.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings

from .models import Issue

logger = logging.getLogger("example_project.issues")


def fetch_issue_details(issue: Issue) -> dict[str, Any]:
    """What the upstream tracker knows about ``issue``; takes ``DEMO_UPSTREAM_LATENCY`` seconds."""
    latency = float(getattr(settings, "DEMO_UPSTREAM_LATENCY", 3.0))
    started = time.monotonic()
    time.sleep(latency)
    logger.info("upstream tracker answered for issue #%s in %.0f ms", issue.number, (time.monotonic() - started) * 1000)
    return {
        "number": issue.number,
        "title": issue.title,
        "status": issue.status,
        "url": f"https://tracker.invalid/issues/{issue.number}",
    }
