"""The sampler keeps every integration flow, whatever transaction sentry-sdk opens first."""

from __future__ import annotations

from typing import Any

import pytest

from silo_router import tracing


def http_server(path: str) -> dict[str, Any]:
    """What sentry-sdk's WSGI middleware (Django under gunicorn) hands the sampler."""
    return {
        "transaction_context": {"op": "http.server", "name": "generic WSGI request"},
        "wsgi_environ": {"PATH_INFO": path},
    }


def celery_task(name: str) -> dict[str, Any]:
    """What sentry-sdk's Celery integration hands the sampler for a task with no incoming trace."""
    return {"transaction_context": {"op": "queue.task.celery", "name": name}, "celery_job": {"task": name}}


@pytest.mark.parametrize(
    "path",
    [
        "/extensions/slack/",
        "/extensions/slack/install/",
        "/silo-router/envelopes/",
        "/silo-router/slack-api/chat.postMessage",
    ],
)
def test_requests_to_the_librarys_paths_are_kept(path: str) -> None:
    assert tracing.traces_sampler(http_server(path)) == 1.0


@pytest.mark.parametrize("path", ["/plain/", "/admin/login/", "/", "/extensions/other/"])
def test_other_requests_get_the_configured_rate(path: str, settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "TRACES_SAMPLE_RATE": 0.01}
    assert tracing.traces_sampler(http_server(path)) == 0.01


def test_a_changed_prefix_is_seen_at_once(settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "URL_PREFIXES": {"/hooks/slack/": "slack"}}
    assert tracing.traces_sampler(http_server("/hooks/slack/")) == 1.0
    assert tracing.traces_sampler(http_server("/extensions/slack/")) == tracing.sampling.conf.TRACES_SAMPLE_RATE


def test_the_librarys_celery_tasks_are_kept_and_others_sampled() -> None:
    assert tracing.traces_sampler(celery_task("silo_router.control.deliver")) == 1.0
    assert tracing.traces_sampler(celery_task("silo_router.region.receive")) == 1.0
    assert tracing.traces_sampler(celery_task("billing.charge")) == 0.01


def test_an_upstream_decision_is_kept_either_way() -> None:
    assert tracing.traces_sampler({**http_server("/plain/"), "parent_sampled": True}) == 1.0
    assert tracing.traces_sampler({**celery_task("silo_router.region.receive"), "parent_sampled": False}) == 0.0


def test_a_projects_own_sampler_decides_the_rest() -> None:
    sampler = tracing.sampler(lambda context: 0.25)
    assert sampler(http_server("/extensions/slack/")) == 1.0
    assert sampler(http_server("/plain/")) == 0.25
    assert sampler({**http_server("/plain/"), "parent_sampled": False}) == 0.0
