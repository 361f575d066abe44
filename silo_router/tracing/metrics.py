"""Metrics of the flows (the deadline above all), through sentry-sdk and OpenTelemetry.

The figures the spans hold as attributes are emitted as metrics too, so "how often do
we miss Slack's deadline" is a graph: ``silo_router.control.ack_time`` (ms, by provider,
kind and ``deadline_missed``), ``silo_router.control.deadline_missed`` (a count),
``silo_router.control.trigger_left`` (ms of a trigger's 3 s left at ``views.open``),
``silo_router.control.forward_sync.used`` (ms of the budget a synchronous forward
used), ``silo_router.control.attempts`` (a count by outcome). Attribute values are few
(no ids), as metric back ends need.
"""

from __future__ import annotations

import functools
from typing import Any

try:
    import sentry_sdk
except ImportError:  # the [sentry] extra is not installed
    sentry_sdk = None  # type: ignore[assignment]

from .registry import otel_enabled

ACK_TIME = "silo_router.control.ack_time"
DEADLINE_MISSED = "silo_router.control.deadline_missed"
TRIGGER_LEFT = "silo_router.control.trigger_left"
FORWARD_SYNC_USED = "silo_router.control.forward_sync.used"
ATTEMPTS = "silo_router.control.attempts"
NOTIFICATION_STAGES = "silo_router.region.notification_stage"

_OTEL_UNITS = {"millisecond": "ms", "none": "1"}


def distribution(name: str, value: float, *, unit: str = "millisecond", **attributes: Any) -> None:
    """Record one value of the distribution ``name``."""
    attributes = _plain(attributes)
    if sentry_sdk is not None and sentry_sdk.get_client().is_active():
        sentry_sdk.metrics.distribution(name, value, unit=unit, attributes=attributes)
    if otel_enabled():
        _histogram(name, _OTEL_UNITS.get(unit, unit)).record(value, attributes)


def count(name: str, value: int = 1, **attributes: Any) -> None:
    """Add ``value`` to the counter ``name``."""
    attributes = _plain(attributes)
    if sentry_sdk is not None and sentry_sdk.get_client().is_active():
        sentry_sdk.metrics.count(name, value, attributes=attributes)
    if otel_enabled():
        _counter(name).add(value, attributes)


def _plain(attributes: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value if isinstance(value, str | bool | int | float) else str(value)
        for key, value in attributes.items()
        if value is not None
    }


@functools.cache
def _meter() -> Any:
    from opentelemetry import metrics

    from .. import __version__

    return metrics.get_meter("silo_router", __version__)


@functools.cache
def _histogram(name: str, unit: str) -> Any:
    return _meter().create_histogram(name, unit=unit)


@functools.cache
def _counter(name: str) -> Any:
    return _meter().create_counter(name)
