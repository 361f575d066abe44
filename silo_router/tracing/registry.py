"""Which tracing back ends exist in this process: sentry-sdk and OpenTelemetry, each when installed.

The Sentry back end exists when ``sentry-sdk`` is importable (the ``[sentry]`` extra) and is
active when a client is initialised.

The OpenTelemetry back end exists when ``opentelemetry-api`` is importable (the ``[otel]``
extra) and is on when ``SILO_ROUTER['OPENTELEMETRY']`` allows it and a tracer provider
is set; an API that cannot be imported leaves the library working, without it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from typing import Any

from django.core.signals import setting_changed

from ..conf import conf
from .spans import Backend

logger = logging.getLogger("silo_router.tracing")


def otel_installed() -> bool:
    """Whether opentelemetry-api is importable (the ``[otel]`` extra)."""
    return _installed("opentelemetry.trace")


@functools.cache
def otel_enabled() -> bool:
    """``SILO_ROUTER['OPENTELEMETRY']``: ``None`` (the default) means on when opentelemetry-api is installed."""
    setting = conf.OPENTELEMETRY
    return otel_installed() if setting is None else bool(setting) and otel_installed()


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _backends() -> list[Backend]:
    found: list[Backend] = []
    if _installed("sentry_sdk"):
        from .sentry_backend import SentryBackend

        found.append(SentryBackend())
    if otel_installed():
        try:
            from .otel_backend import OtelBackend
        except ImportError as exc:  # an API too old or broken: trace with the other back ends
            logger.warning("OpenTelemetry tracing is off: opentelemetry-api cannot be used (%s)", exc)
        else:
            found.append(OtelBackend(otel_enabled))
    return found


#: Every back end this process could use; each says whether it is active.
BACKENDS: list[Backend] = _backends()


def _reset(**kwargs: Any) -> None:
    otel_enabled.cache_clear()


setting_changed.connect(_reset, dispatch_uid="silo_router.tracing.registry")
