"""Slack Bolt for Python's Django adapter (``slack_bolt.adapter.django``).

``BENCH_BOLT_PROCESS_BEFORE_RESPONSE=1`` builds the app with
``process_before_response=True``; otherwise Bolt's default mode.
"""

from __future__ import annotations

import os

from .common import *  # noqa: F403

ROOT_URLCONF = "projects.urls_bolt"
BOLT_PROCESS_BEFORE_RESPONSE = os.environ.get("BENCH_BOLT_PROCESS_BEFORE_RESPONSE") == "1"
