"""The embedded runner: delivery with no broker, the same claims, retries and circuits, resumed from the rows."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.utils import timezone

from silo_router import tracing
from silo_router.control import delivery, publishing, runner
from silo_router.control.models import Payload, PayloadAttempt, RegionCircuit
from silo_router.region.handlers import slack

from ..sentry_capture import CaptureSentry
from ..tracing.crossing.support import ATTEMPT, HANDLER, RECEIVE, assert_child_of, click_envelope, of_trace
from .conftest import RegionServer
from .test_delivery import make

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def embedded(settings: Any, region_server: RegionServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[RegionServer]:
    """Control with no broker: the embedded runner (a fresh one), ``us`` on a scriptable region on loopback."""
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "RUNNER": "embedded",
        "REGIONS": {"us": {"TRANSPORT": "http", "URL": region_server.url}},
        "RETRY_JITTER": 0,
        "DELIVERY_BACKOFF": 0.05,
        "CIRCUIT_FAILURE_THRESHOLD": 2,
        "CIRCUIT_OPEN_SECONDS": 0.3,
        "SWEEP_INTERVAL": 0.2,
        "SWEEP_GRACE": 0.2,
        "LEASE_MARGIN": 0.1,
        "DELIVERY_TIMEOUT": 2.0,
    }

    def no_celery() -> Any:
        raise AssertionError("the embedded runner must not talk to Celery")

    monkeypatch.setattr(publishing, "celery_app", no_celery)
    fresh = runner.EmbeddedRunner()
    monkeypatch.setattr(runner, "runner", fresh)
    yield region_server
    fresh.stop()


def store(n: int = 1, *, key: str = "k", wake: bool = True) -> list[str]:
    """``n`` payloads for us, stored as the request path stores them, woken after (unless ``wake``)."""
    ids = make(n, key=key)
    if wake:
        delivery.publish_new(list(Payload.objects.filter(pk__in=ids)))
    return ids


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def states(ids: list[str]) -> set[str]:
    return set(Payload.objects.filter(pk__in=ids).values_list("state", flat=True))


def test_with_no_broker_the_web_process_delivers_what_it_stored(embedded: RegionServer, settings: Any) -> None:
    del settings.CELERY_BROKER_URL
    settings.SILO_ROUTER = {key: value for key, value in settings.SILO_ROUTER.items() if key != "RUNNER"}
    assert runner.active_runner() == runner.EMBEDDED  # the default when no broker is configured
    ids = store(30)
    wait_until(lambda: states(ids) == {Payload.State.DELIVERED})
    assert sorted(embedded.received) == sorted(ids)


def test_a_failed_attempt_is_retried_with_backoff_until_the_region_takes_it(
    embedded: RegionServer, settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "CIRCUIT_FAILURE_THRESHOLD": 5}
    (payload_id,) = store(1, wake=False)
    embedded.script[payload_id] = [(503, {"error": "busy"}, {}), (503, {"error": "busy"}, {})] + [
        (200, {"outcome": "handled", "response": None}, {})
    ]
    delivery.publish_new(list(Payload.objects.filter(pk=payload_id)))
    wait_until(lambda: states([payload_id]) == {Payload.State.DELIVERED})
    assert embedded.received.count(payload_id) == 3
    # The timeline row of the last attempt is written just after its state.
    wait_until(lambda: PayloadAttempt.objects.filter(payload_id=payload_id).count() == 3)
    assert list(
        PayloadAttempt.objects.filter(payload_id=payload_id).order_by("number").values_list("outcome", flat=True)
    ) == [
        "retry",
        "retry",
        "delivered",
    ]


def test_a_region_that_keeps_failing_opens_its_circuit_and_is_probed_back(embedded: RegionServer) -> None:
    embedded.default = (503, {"error": "down"}, {})
    ids = store(4)
    wait_until(lambda: RegionCircuit.objects.filter(region="us", state=RegionCircuit.State.OPEN).exists())
    assert states(ids) <= {Payload.State.PENDING, Payload.State.IN_FLIGHT}  # held, not failed
    embedded.default = (200, {"outcome": "handled", "response": None}, {})
    wait_until(lambda: states(ids) == {Payload.State.DELIVERED})  # the sweep's probe closed it and drained
    assert RegionCircuit.objects.get(region="us").state == RegionCircuit.State.CLOSED


def test_a_started_process_resumes_rows_left_pending_or_leased_by_one_that_stopped(embedded: RegionServer) -> None:
    stranded = store(3, key="stranded", wake=False)  # stored, then the process died before its wake-up
    leased = store(1, key="leased", wake=False)
    past = timezone.now() - datetime.timedelta(seconds=5)
    Payload.objects.filter(pk__in=stranded).update(enqueued_at=past)
    Payload.objects.filter(pk__in=leased).update(
        state=Payload.State.IN_FLIGHT, lease_owner="dead-process", lease_until=past, attempts=1
    )
    runner.runner.start()  # what a web process does when it loads
    wait_until(lambda: states(stranded + leased) == {Payload.State.DELIVERED})
    assert sorted(set(embedded.received)) == sorted(stranded + leased)


def test_a_task_that_raises_is_logged_and_the_runner_goes_on(
    embedded: RegionServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    real = delivery.deliver_batch

    def flaky(ids: list[str]) -> dict[str, int]:
        calls.append(len(ids))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real(ids)

    monkeypatch.setattr(delivery, "deliver_batch", flaky)
    first = store(1, key="first")
    wait_until(lambda: bool(calls))
    second = store(1, key="second")
    wait_until(lambda: states(second) == {Payload.State.DELIVERED})
    wait_until(lambda: states(first) == {Payload.State.DELIVERED})  # the sweep took the row the failed task named
    assert "embedded task silo_router.control.deliver_batch failed" in caplog.text


def test_the_runner_is_chosen_by_the_setting_or_by_a_configured_broker(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    settings.CELERY_BROKER_URL = "redis://localhost:6379/0"
    assert runner.active_runner() == runner.CELERY
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RUNNER": "embedded"}
    assert runner.active_runner() == runner.EMBEDDED
    settings.SILO_ROUTER = {key: value for key, value in settings.SILO_ROUTER.items() if key != "RUNNER"}
    del settings.CELERY_BROKER_URL
    assert runner.active_runner() == runner.EMBEDDED
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://localhost:6379/0")
    assert runner.active_runner() == runner.CELERY


def test_each_delivery_is_in_its_own_requests_trace_though_the_first_request_started_the_threads(
    settings: Any, monkeypatch: pytest.MonkeyPatch, capture_sentry: CaptureSentry
) -> None:
    """sentry-sdk's threading integration copies the starting thread's scopes: threads started
    inside request 1 must not put request 2's delivery (or a sweep) into request 1's trace."""
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RUNNER": "embedded"}
    fresh = runner.EmbeddedRunner()
    monkeypatch.setattr(runner, "runner", fresh)
    captured = capture_sentry(scrubbed=True, integrations="defaults")

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        pass

    traces, ids = [], []
    try:
        for n in range(2):
            with tracing.flow("control", "request", "slack request", new_trace=True) as request:
                envelope = click_envelope(key=f"slack:click:embedded-{n}").replace(trace=tracing.propagation_headers())
                payloads = delivery.store([envelope])
                delivery.publish_new(payloads)  # the first one starts the runner's threads, in this trace
            traces.append(str(request.trace_id))
            ids.append(str(payloads[0].pk))
            wait_until(lambda: states(ids) == {Payload.State.DELIVERED})
        captured.wait_for(HANDLER, count=2)
        spans = captured.spans()
        for trace_id in traces:
            (handler,) = of_trace(spans, trace_id, HANDLER)
            assert_child_of(spans, of_trace(spans, trace_id, RECEIVE)[0], ATTEMPT)
            assert handler.trace_id == trace_id
        sweeps = [span for span in spans if span.op == "silo_router.control.sweep"]
        assert all(span.trace_id not in traces for span in sweeps)
    finally:
        fresh.stop()
