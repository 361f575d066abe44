"""Waking delivery for committed payloads, after the answer and in batches.

The row is the truth and the broker message only an optimisation (the sweeper
republishes what no message named within ``SWEEP_GRACE``), so the request path does
not talk to the broker at all: it hands the new payload ids to this process's waker
and answers. A daemon thread publishes them, one ``deliver_batch`` message per region
for the ids gathered since its last round (at most ``WAKE_BATCH`` ids per message),
so a busy process sends a few messages a second instead of one per request, and a
slow or hung broker holds only that thread, never an answer.

With Celery's eager mode (tests) the message is delivered inline instead, as the
publish itself would be; with the embedded runner (:mod:`.runner`) there is no broker to
spare and the batches go straight to its queue.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from silo_router import tracing

from . import runner
from .beat import DELIVER_BATCH_TASK
from .publishing import celery_app, region_queue, send_task

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger("silo_router.delivery")

#: Payload ids named by one message at most.
WAKE_BATCH = 100
#: Ids waiting for the waker at most; past that, new ones are left to the sweeper.
MAX_WAITING = 50_000
#: How long the waker lets ids gather after the first one arrives (seconds). A message costs
#: its publisher the GIL for a while (about 0.6 ms on kombu's filesystem broker), so one per
#: request slows the next request down; 5 ms lets a few sequential requests share one, for
#: 5 ms more before a lone request's delivery starts.
GATHER_SECONDS = 0.005


class Waker:
    """Publishes the wake-ups of one process from a thread of its own."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: dict[str, list[str]] = {}
        self._count = 0
        self._pid = 0
        self._thread: threading.Thread | None = None
        self._app: Celery | None = None

    def wake(self, targets: Iterable[tuple[str, str]]) -> None:
        """Have workers deliver ``(payload_id, region)`` pairs soon; never waits for the broker."""
        by_region: dict[str, list[str]] = {}
        for payload_id, region in targets:
            if region:
                by_region.setdefault(region, []).append(payload_id)
        if not by_region:
            return
        if runner.embedded():  # no broker to spare: straight to the runner's queue, in batches
            _publish_all(by_region, None)
            return
        app = celery_app()  # per thread: the caller's
        if app.conf.task_always_eager:
            for region, ids in by_region.items():
                publish(region, ids, app=app)
            return
        with self._cond:
            self._app = app
            self._start()
            for region, ids in by_region.items():
                if self._count + len(ids) > MAX_WAITING:
                    logger.warning(
                        "%d wake-ups waiting for the broker: leaving %d to the sweeper", self._count, len(ids)
                    )
                    continue
                self._waiting.setdefault(region, []).extend(ids)
                self._count += len(ids)
            self._cond.notify()

    def flush(self) -> None:
        """Publish what waits now, on this thread (at exit: the sweeper would find it later)."""
        _publish_all(*self._take())

    def _take(self) -> tuple[dict[str, list[str]], Celery | None]:
        """What waits, and the app to publish it with; nothing waits after."""
        with self._cond:
            waiting, self._waiting, self._count = self._waiting, {}, 0
            return waiting, self._app

    def _start(self) -> None:
        """Start the thread in this process (again after a fork: threads do not survive it)."""
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        if self._pid != os.getpid():
            self._waiting, self._count = {}, 0  # a parent's ids are the parent's to publish
        self._pid = os.getpid()
        self._thread = threading.Thread(target=self._run, name="silo-router-wake", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._waiting:
                    self._cond.wait()
            # Let the requests arriving together join this round.
            threading.Event().wait(GATHER_SECONDS)
            _publish_all(*self._take())


def _publish_all(waiting: dict[str, list[str]], app: Celery | None) -> None:
    for region, ids in waiting.items():
        for start in range(0, len(ids), WAKE_BATCH):
            publish(region, ids[start : start + WAKE_BATCH], app=app)


def publish(region: str, payload_ids: list[str], *, app: Celery | None = None) -> bool:
    """One ``deliver_batch`` message for ``payload_ids`` of ``region``; False (logged) if the broker refused it."""
    with tracing.stage("control", "wake", region, region=region, payloads=len(payload_ids)) as span:
        try:
            send_task(DELIVER_BATCH_TASK, (payload_ids,), app=app, retry=False, **region_queue(region))
        except Exception:  # the broker's errors vary by transport; the rows are the truth
            logger.exception("could not publish a delivery message for %d payloads; the sweeper will", len(payload_ids))
            span.fail("broker_error")
            return False
    return True


#: The process's waker.
waker = Waker()
atexit.register(waker.flush)
