"""Publishing to the broker from the request path without letting the broker hold the answer.

The payload is already committed when the control path publishes its wake-up message,
so the message is an optimisation: if the broker is slow or hung, the answer to the
provider must not wait for it. Publishes run on a small thread pool; the request waits
at most ``PUBLISH_TIMEOUT`` (and never past the provider's deadline), then answers; the
sweeper republishes whatever did not get out. A bounded number of publishes may be
outstanding at once, so a hung broker cannot pile up threads either.

Each wait is a span, ``silo_router.control.publish``: how long it could wait, how long
it did, and whether it gave up. The publish runs in the caller's context (its trace
above all), so the message carries the caller's trace headers.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from silo_router import tracing
from silo_router.conf import conf

from . import runner

if TYPE_CHECKING:
    from celery import Celery

logger = logging.getLogger("silo_router.delivery")

#: Publishes that may wait for a slow broker at once; past that the sweeper takes over.
MAX_OUTSTANDING = 64
#: Threads that talk to the broker for request-path publishes.
PUBLISH_THREADS = 4
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=PUBLISH_THREADS, thread_name_prefix="silo-router-publish")
_slots = threading.BoundedSemaphore(MAX_OUTSTANDING)
#: How a publish ended (the span's ``outcome``): taken by the broker, run inline (Celery's
#: eager mode), queued in this process (the embedded runner), not taken within the wait, or
#: left to the sweeper because too many wait.
PUBLISHED, EAGER, EMBEDDED, TIMED_OUT, BACKLOG_FULL = "published", "eager", "embedded", "timed_out", "backlog_full"


def publish_within(publish: Callable[[], object], *, wait: float, what: str) -> bool:
    """Run ``publish`` but return after ``wait`` seconds at most; True if it finished.

    ``publish`` must not touch the database (it runs on another thread). With Celery in
    eager mode (tests), it runs here, synchronously.
    """
    with tracing.stage("control", "publish", what, wait_ms=round(max(wait, 0.0) * 1000, 1)) as span:
        started = time.monotonic()
        outcome = _publish(publish, wait=wait, what=what)
        span.set(
            waited_ms=round((time.monotonic() - started) * 1000, 1), outcome=outcome, timed_out=outcome == TIMED_OUT
        )
    return outcome in (PUBLISHED, EAGER, EMBEDDED)


def _publish(publish: Callable[[], object], *, wait: float, what: str) -> str:
    if runner.embedded():  # a queue in memory: nothing to wait for
        publish()
        return EMBEDDED
    if celery_app().conf.task_always_eager:
        publish()
        return EAGER
    if not _slots.acquire(blocking=False):
        logger.warning("%d publishes outstanding: leaving %s to the sweeper", MAX_OUTSTANDING, what)
        return BACKLOG_FULL
    context = contextvars.copy_context()  # the caller's trace, for the message's headers

    def run() -> None:
        try:
            context.run(publish)
        finally:
            _slots.release()

    future = _pool.submit(run)
    try:
        future.result(timeout=max(wait, 0.0))
    except concurrent.futures.TimeoutError:
        logger.warning("the broker did not take %s within %.2f s; answering anyway", what, wait)
        return TIMED_OUT
    return PUBLISHED


def region_queue(region: str) -> dict[str, Any]:
    """The publish options that route a delivery message of ``region`` to its own queue, if it has one
    (``REGIONS[region]["DELIVERY_QUEUE"]``)."""
    queue = (conf.REGIONS.get(region) or {}).get("DELIVERY_QUEUE")
    return {"queue": str(queue)} if queue else {}


def celery_app() -> Celery:
    """This thread's current Celery app (imported only when the Celery runner is used)."""
    from celery import current_app

    return current_app._get_current_object()  # type: ignore[attr-defined, no-any-return]


def send_task(name: str, args: Sequence[Any], *, app: Celery | None = None, **options: Any) -> None:
    """Have the active runner run the task registered as ``name``, without importing its module.

    The embedded runner queues it in this process (``countdown`` is honoured, the other
    publish options are Celery's). With Celery, where the task is registered in this
    process (a worker, or tests in eager mode) it is sent through its own ``apply_async``
    so eager mode runs it; elsewhere the message goes out by name, which is all the
    broker needs. ``app``: the Celery app to publish with (Celery's current app is per
    thread; by default, this thread's).
    """
    if app is None and runner.embedded():
        runner.runner.submit(name, args, countdown=float(options.get("countdown") or 0.0))
        return
    app = app or celery_app()
    task = app.tasks.get(name)
    if task is not None:
        task.apply_async(tuple(args), **options)
    else:
        app.send_task(name, args=tuple(args), **options)
