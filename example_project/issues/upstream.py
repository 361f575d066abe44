"""The demo's "upstream issue tracker": the slow network call a real handler makes.

A real integration asks another service (an issue tracker, a CRM) for what to show
the user after changing something. The demo has no such service, so this sleeps for
``DEMO_UPSTREAM_LATENCY`` seconds instead: a sleep here stands for a network call and is
the realistic slow part of the flow, not a shortcut. It is a span of its own
(``issues.upstream``) in the flow's trace, as a real call would be.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import sentry_sdk
from django.conf import settings

from .models import Issue

logger = logging.getLogger("example_project.issues")


def fetch_issue_details(issue: Issue) -> dict[str, Any]:
    """What the upstream tracker knows about ``issue``; takes ``DEMO_UPSTREAM_LATENCY`` seconds."""
    latency = float(getattr(settings, "DEMO_UPSTREAM_LATENCY", 3.0))
    started = time.monotonic()
    # The app's own span, inside the library's trace: where the time of the flow goes.
    with sentry_sdk.start_span(op="issues.upstream", name=f"issue tracker: details of issue #{issue.number}"):
        time.sleep(latency)
    logger.info("upstream tracker answered for issue #%s in %.0f ms", issue.number, (time.monotonic() - started) * 1000)
    return {
        "number": issue.number,
        "title": issue.title,
        "status": issue.status,
        "url": f"https://tracker.invalid/issues/{issue.number}",
    }
