"""The wake-up after the answer: every committed payload named by one message, batched per region, never waited for."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery import current_app

from silo_router.control import tasks, wakeup


class Broker:
    """Records deliver_batch messages; can be made to refuse or to hang."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], dict[str, Any]]] = []
        self.refuse = False
        self.hang = threading.Event()
        self.hang.set()
        self.lock = threading.Lock()

    def apply_async(self, args: tuple[list[str]], **options: Any) -> None:
        self.hang.wait(10)
        if self.refuse:
            raise ConnectionError("broker unreachable")
        with self.lock:
            self.messages.append((list(args[0]), options))

    def ids(self) -> list[str]:
        with self.lock:
            return [pid for ids, _ in self.messages for pid in ids]

    def wait_for(self, count: int) -> list[str]:
        deadline = time.monotonic() + 5
        while len(self.ids()) < count:
            assert time.monotonic() < deadline, f"only {len(self.ids())} of {count} ids published"
            time.sleep(0.005)
        return self.ids()


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[Broker]:
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "REGIONS": {"us": {"TRANSPORT": "local"}, "eu": {"TRANSPORT": "local", "DELIVERY_QUEUE": "deliver-eu"}},
    }
    fake = Broker()
    eager = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = False  # as in production: the waker's thread publishes
    monkeypatch.setattr(tasks.deliver_payloads, "apply_async", fake.apply_async)
    monkeypatch.setattr(wakeup, "waker", wakeup.Waker())
    yield fake
    fake.hang.set()
    current_app.conf.task_always_eager = eager


def test_ids_from_many_threads_are_each_named_once_in_batches_per_region(broker: Broker) -> None:
    targets = [(f"us-{i}", "us") for i in range(250)] + [(f"eu-{i}", "eu") for i in range(30)]
    app = current_app._get_current_object()

    def request_thread(share: list[tuple[str, str]]) -> None:
        app.set_current()  # as a Django request thread of a project whose Celery app is current
        wakeup.waker.wake(share)

    threads = [threading.Thread(target=request_thread, args=(targets[i::7],)) for i in range(7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    published = broker.wait_for(len(targets))
    assert sorted(published) == sorted(pid for pid, _ in targets)
    for ids, options in broker.messages:
        assert len(ids) <= wakeup.WAKE_BATCH
        regions = {pid.split("-")[0] for pid in ids}
        assert len(regions) == 1  # one region per message, on that region's queue
        assert options.get("queue") == ("deliver-eu" if regions == {"eu"} else None)
    assert len(broker.messages) < len(targets) / 10  # batched, not one message per payload


def test_a_hung_broker_never_holds_the_caller(broker: Broker) -> None:
    broker.hang.clear()
    began = time.monotonic()
    for i in range(50):
        wakeup.waker.wake([(f"hung-{i}", "us")])
    assert time.monotonic() - began < 1.0  # nothing waited for the broker
    broker.hang.set()
    assert sorted(broker.wait_for(50)) == sorted(f"hung-{i}" for i in range(50))


def test_a_refused_publish_is_logged_and_the_next_ones_go_out(broker: Broker, caplog: Any) -> None:
    broker.refuse = True
    wakeup.waker.wake([("lost", "us")])
    deadline = time.monotonic() + 5
    while "could not publish a delivery message" not in caplog.text:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    broker.refuse = False
    wakeup.waker.wake([("next", "us")])
    assert broker.wait_for(1) == ["next"]  # the lost one is the sweeper's (its row says when it was stored)


def test_payloads_with_no_region_wake_nothing(broker: Broker) -> None:
    wakeup.waker.wake([("unroutable", "")])
    time.sleep(0.05)
    assert broker.messages == []


def test_the_wake_up_goes_out_on_the_callers_celery_app(broker: Broker) -> None:
    """Celery's current app is per thread: the waker's thread must publish on the app of the request's."""
    from celery import Celery

    app = Celery("the-projects-app", set_as_current=False)
    app.conf.task_always_eager = False
    sent: list[tuple[str, Any]] = []
    app.send_task = lambda name, args=None, kwargs=None, **options: sent.append((name, tuple(args)))  # type: ignore[method-assign]

    def request_thread() -> None:
        app.set_current()
        wakeup.waker.wake([("on-its-app", "us")])

    thread = threading.Thread(target=request_thread)
    thread.start()
    thread.join()
    deadline = time.monotonic() + 5
    while not sent:
        assert time.monotonic() < deadline, "nothing was published on the caller's app"
        time.sleep(0.005)
    assert sent == [("silo_router.control.deliver_batch", (["on-its-app"],))]
    assert broker.messages == []  # not on the default app
