"""The ``traces_sampler``: every integration flow at 100%, the rest at ``TRACES_SAMPLE_RATE``.

Under gunicorn with sentry-sdk's Django integration the first transaction of a Slack
request is Django's ``http.server``, not this library's span, and a Celery worker's is
the task's. So the sampler recognises a flow by what it is: a transaction of this
library's op, a request to one of its paths (the provider prefixes, the region's
envelope endpoint, the Web API proxy), or one of its Celery tasks.
A decision made upstream (``parent_sampled``) is kept, so control, queue, worker and
region agree.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from django.core.signals import setting_changed
from django.urls import NoReverseMatch, reverse

from ..conf import conf
from . import names

#: The URL names of this library's views outside the provider prefixes.
_VIEW_NAMES = ("silo_router_region:envelopes",)


def traces_sampler(sampling_context: Mapping[str, Any]) -> float:
    """A ``traces_sampler`` for ``sentry_sdk.init``.

    Follows the parent's decision when there is one; samples every integration flow at
    1.0 and every other transaction at ``SILO_ROUTER['TRACES_SAMPLE_RATE']``.
    """
    parent = sampling_context.get("parent_sampled")
    if parent is not None:
        return 1.0 if parent else 0.0
    return 1.0 if is_integration_flow(sampling_context) else conf.TRACES_SAMPLE_RATE


def sampler(fallback: Callable[[Mapping[str, Any]], float]) -> Callable[[Mapping[str, Any]], float]:
    """A ``traces_sampler`` that keeps integration flows and asks ``fallback`` for the rest.

    For projects with a sampler of their own: ``traces_sampler=tracing.sampler(mine)``.
    """

    def sample(sampling_context: Mapping[str, Any]) -> float:
        parent = sampling_context.get("parent_sampled")
        if parent is not None:
            return 1.0 if parent else 0.0
        return 1.0 if is_integration_flow(sampling_context) else float(fallback(sampling_context))

    return sample


def is_integration_flow(sampling_context: Mapping[str, Any]) -> bool:
    """Whether the transaction about to start is part of an integration flow."""
    context = sampling_context.get("transaction_context") or {}
    if names.is_integration_op(context.get("op")):
        return True
    environ = sampling_context.get("wsgi_environ") or sampling_context.get("asgi_scope")
    if isinstance(environ, Mapping):
        path = environ.get("PATH_INFO") if "PATH_INFO" in environ else environ.get("path")
        if isinstance(path, str) and is_integration_path(path):
            return True
    job = sampling_context.get("celery_job")
    if isinstance(job, Mapping):
        task = job.get("task")
        return isinstance(task, str) and task.startswith(names.PREFIX + ".")
    return False


def is_integration_path(path: str) -> bool:
    """Whether ``path`` is served by this library (a provider prefix, the region endpoint, ...)."""
    return path.startswith(_integration_paths())


@functools.cache
def _integration_paths() -> tuple[str, ...]:
    paths = [*conf.URL_PREFIXES, conf.WEB_API_PROXY_PATH]  # the install flow is under a provider prefix
    for name in _VIEW_NAMES:
        try:
            paths.append(reverse(name))
        except NoReverseMatch:
            continue
    return tuple("/" + path.lstrip("/") for path in paths if path)


def _reset(**kwargs: Any) -> None:
    _integration_paths.cache_clear()


setting_changed.connect(_reset, dispatch_uid="silo_router.tracing.sampling")
