"""django-silo-router in control mode (``settings_silo``) with one tracing back end on: ``BENCH_TRACING``.

See :mod:`projects.tracing` for the modes (``off``, ``otel_api``, ``sentry``, ``otel``).
Each process writes what its back end handled to ``VAR_DIR/tracing-counts/`` as it exits.
"""

from __future__ import annotations

import os

from .settings_silo import *  # noqa: F403
from .settings_silo import SILO_ROUTER, VAR_DIR
from .tracing import setup

TRACING = os.environ.get("BENCH_TRACING", "off")
TRACING_COUNTS_DIR = VAR_DIR / "tracing-counts"

SILO_ROUTER = {**SILO_ROUTER, "OPENTELEMETRY": setup(TRACING, TRACING_COUNTS_DIR)}
