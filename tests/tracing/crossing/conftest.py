"""Fixtures for the hop's traces: what sentry-sdk emits on both sides of each transport.

Control and region run in this process, each with a sentry-sdk client of its own: the
region's is the global client (what a worker thread or a server thread uses), the
control side's is set on the test thread's isolation scope. So each side can have
sentry's integrations on (as README recommends: Django, Celery and the defaults) or
off, and every envelope both emit lands in one capture transport.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import make_server

import celery.app.trace
import celery.worker.consumer.consumer
import pytest
import sentry_sdk
from celery import Celery
from celery.contrib.testing.worker import start_worker
from django.core.handlers.wsgi import WSGIHandler

from ...celery_app import app as suite_app
from ...sentry_capture import Captured, CaptureSentry, Integrations, sentry_options
from ...transports.conftest import ENVELOPE_PATH, _QuietHandler, _ThreadingServer
from .support import TRANSPORTS, Crossing, region_side


@dataclasses.dataclass(frozen=True)
class Sides:
    """Whether sentry's integrations are on in control and in the region."""

    control: bool
    region: bool

    @property
    def id(self) -> str:
        return f"control-{'on' if self.control else 'off'}-region-{'on' if self.region else 'off'}"


#: README's set-up on both sides; a region without integrations; neither side with them.
SIDES = [Sides(True, True), Sides(True, False), Sides(False, False)]


def integrations_of(on: bool) -> Integrations:
    return "readme" if on else "none"


@pytest.fixture(autouse=True)
def empty_queues() -> Iterator[None]:
    """No message of another test waits on the in-memory broker (its queues are one per process)."""
    purge_queues()
    yield
    purge_queues()


def purge_queues() -> None:
    with suite_app.connection_for_write() as connection:
        for queue in ("silo_router.region.us", "celery"):
            connection.default_channel.queue_purge(queue)


@pytest.fixture(params=SIDES, ids=lambda sides: sides.id)
def sides(request: pytest.FixtureRequest) -> Sides:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def captured(sides: Sides, capture_sentry: CaptureSentry) -> Iterator[Captured]:
    """sentry-sdk on both sides, as ``sides`` says (README's scrubbing hooks on), into one capture transport."""
    captured = capture_sentry(scrubbed=True, integrations=integrations_of(sides.region))
    control = sentry_sdk.Client(
        **sentry_options(captured.transport, scrubbed=True, integrations=integrations_of(sides.control))
    )
    try:
        with sentry_sdk.isolation_scope() as scope:
            scope.set_client(control)
            yield captured
            control.flush()
    finally:
        control.close()


@pytest.fixture
def http_region(settings: Any) -> Iterator[str]:
    """Region us is this process's envelope endpoint, served by Django's WSGI handler on loopback."""
    server = make_server("127.0.0.1", 0, WSGIHandler(), server_class=_ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    with region_side():
        thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}{ENVELOPE_PATH}"
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "REGIONS": {"us": {"TRANSPORT": "http", "URL": url}}}
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def region_worker(settings: Any, captured: Captured, monkeypatch: pytest.MonkeyPatch) -> Iterator[Celery]:
    """A real Celery worker thread consuming region us's queue and control's queue (confirmations).

    It starts after sentry-sdk is initialised (its Celery integration wraps the tracers a
    worker builds when it starts), as sentry's documentation asks of a real worker.
    """
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "REGIONS": {"us": {"TRANSPORT": "celery"}}}
    import silo_router.control.tasks  # noqa: F401 - control's confirm task (a shared task)
    import silo_router.region.tasks  # noqa: F401 - the region task the worker runs (a shared task)

    # A real worker imports its consumer after sentry_sdk.init; here it was imported first
    # and kept the build_tracer that sentry-sdk's Celery integration has since wrapped.
    monkeypatch.setattr(celery.worker.consumer.consumer, "build_tracer", celery.app.trace.build_tracer)
    worker_app = Celery("crossing-worker-tests", broker="memory://", backend="cache+memory://")
    worker_app.set_current()
    queues = ["silo_router.region.us", settings.SILO_ROUTER.get("CONTROL_QUEUE", "celery")]
    try:
        with contextlib.ExitStack() as running:
            with region_side():
                running.enter_context(start_worker(worker_app, pool="solo", perform_ping_check=False, queues=queues))
            yield worker_app
    finally:
        suite_app.set_current()


@pytest.fixture(params=TRANSPORTS)
def crossing(request: pytest.FixtureRequest, settings: Any) -> Crossing:
    """Each transport in turn, with its region running."""
    return Crossing(request.param, request, settings)
