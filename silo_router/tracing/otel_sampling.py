"""A sampler for projects on the OpenTelemetry SDK: every integration flow kept, the rest at a ratio.

The SDK's twin of :func:`silo_router.tracing.traces_sampler`, with the same predicate
(:func:`silo_router.tracing.sampling.is_integration_flow`)::

    from opentelemetry.sdk.trace import TracerProvider
    from silo_router.tracing import otel_sampling

    provider = TracerProvider(sampler=otel_sampling.sampler())

A span with a parent keeps the parent's decision (``ParentBased``: a sampled
``traceparent`` from control is sampled in the region, an unsampled one is not), so
control, queue, worker and region agree. A root span is sampled when it is one of this
library's (``silo_router.*``), a request to one of its paths (``url.path``,
``http.target`` or the path of ``url.full`` / ``http.url``, as the WSGI, Django and ASGI
instrumentations set them when the span starts), or a run or publication of one of its
Celery tasks (``run/silo_router.…``, ``apply_async/silo_router.…``); every other root is
sampled at ``SILO_ROUTER['TRACES_SAMPLE_RATE']`` by trace id, or as ``fallback`` decides.

This module imports the OpenTelemetry SDK, which the ``[otel]`` extra does not install:
nothing in the library imports it; a project that uses it has the SDK.
"""

from __future__ import annotations

import functools
import urllib.parse
from collections.abc import Sequence
from typing import Any

from django.core.exceptions import AppRegistryNotReady, ImproperlyConfigured

try:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, SamplingResult, TraceIdRatioBased
    from opentelemetry.trace import Link, SpanKind, TraceState
    from opentelemetry.util.types import Attributes
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "silo_router.tracing.otel_sampling needs the OpenTelemetry SDK: pip install opentelemetry-sdk"
    ) from exc

from ..conf import DEFAULTS, conf
from .sampling import is_integration_flow

#: Attributes that hold a server span's path (new and old HTTP conventions) or its URL.
_PATH_ATTRIBUTES = ("url.path", "http.target")
_URL_ATTRIBUTES = ("url.full", "http.url")
#: How OpenTelemetry's Celery instrumentation names a task's spans: ``<operation>/<task name>``.
_CELERY_OPERATIONS = frozenset({"run", "apply_async"})


class IntegrationFlowSampler(Sampler):
    """The decision for a root span: an integration flow is sampled, the rest asks ``fallback``.

    ``fallback`` defaults to ``TraceIdRatioBased(SILO_ROUTER['TRACES_SAMPLE_RATE'])``,
    with the rate read at each decision (settings may change).
    """

    def __init__(self, fallback: Sampler | None = None) -> None:
        self.fallback = fallback

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        chosen = ALWAYS_ON if is_flow(name, attributes) else self.fallback or _ratio(_sample_rate())
        return chosen.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        fallback = self.fallback.get_description() if self.fallback else "TRACES_SAMPLE_RATE"
        return f"SiloRouterIntegrationFlows{{fallback={fallback}}}"


def sampler(fallback: Sampler | None = None) -> ParentBased:
    """A parent-based sampler: the parent's decision, else :class:`IntegrationFlowSampler`.

    For a project with a root sampler of its own: ``sampler(fallback=mine)``.
    """
    return ParentBased(root=IntegrationFlowSampler(fallback))


def is_flow(name: str, attributes: Attributes) -> bool:
    """Whether a span about to start (``name``, its first ``attributes``) begins an integration flow."""
    try:
        return is_integration_flow(sampling_context(name, attributes))
    except (ImproperlyConfigured, AppRegistryNotReady):  # a span before Django is set up
        return False


def sampling_context(name: str, attributes: Attributes) -> dict[str, Any]:
    """What a span about to start tells, in the shape ``traces_sampler``'s predicate reads."""
    found: dict[str, Any] = {"transaction_context": {"op": name, "name": name}}
    path = _path(attributes or {})
    if path is not None:
        found["wsgi_environ"] = {"PATH_INFO": path}
    operation, _, task = name.partition("/")
    if operation in _CELERY_OPERATIONS and task:
        found["celery_job"] = {"task": task}
    return found


def _path(attributes: Any) -> str | None:
    for key in _PATH_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return value.split("?", 1)[0]
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and value:
            return urllib.parse.urlsplit(value).path
    return None


def _sample_rate() -> float:
    try:
        return conf.TRACES_SAMPLE_RATE
    except ImproperlyConfigured:  # settings not configured yet
        return float(DEFAULTS["TRACES_SAMPLE_RATE"])


@functools.lru_cache(maxsize=8)
def _ratio(rate: float) -> TraceIdRatioBased:
    return TraceIdRatioBased(rate)
