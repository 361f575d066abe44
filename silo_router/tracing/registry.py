"""Which tracing back ends exist in this process: sentry-sdk always, OpenTelemetry when installed."""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

from django.core.signals import setting_changed

from ..conf import conf
from .sentry_backend import SentryBackend
from .spans import Backend


def otel_installed() -> bool:
    """Whether opentelemetry-api is importable (the ``[otel]`` extra)."""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except ModuleNotFoundError:
        return False


@functools.cache
def otel_enabled() -> bool:
    """``SILO_ROUTER['OPENTELEMETRY']``: ``None`` (the default) means on when opentelemetry-api is installed."""
    setting = conf.OPENTELEMETRY
    return otel_installed() if setting is None else bool(setting) and otel_installed()


def _backends() -> list[Backend]:
    found: list[Backend] = [SentryBackend()]
    if otel_installed():
        from .otel_backend import OtelBackend

        found.append(OtelBackend())
    return found


#: Every back end this process could use; each says whether it is active.
BACKENDS: list[Backend] = _backends()


def _reset(**kwargs: Any) -> None:
    otel_enabled.cache_clear()


setting_changed.connect(_reset, dispatch_uid="silo_router.tracing.registry")
