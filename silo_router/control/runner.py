"""Which runner carries the control silo's tasks, and the embedded one that needs no broker.

Every delivery message, retry, backlog chunk and sweep of the control silo is a task
named in :mod:`.beat`. ``SILO_ROUTER["RUNNER"]`` chooses what runs them:

- ``"celery"``: messages on a Celery broker, run by Celery workers, swept by beat (the
  production runner: workers scale apart from the web processes);
- ``"embedded"``: threads of the process that stored the payload (a web process, or
  ``manage.py silo_router_runner``) run them, and a sweep of its own every
  ``SWEEP_INTERVAL`` seconds takes over what a process that died left behind.

Unset, it is ``"celery"`` when a Celery broker is configured (``CELERY_BROKER_URL`` in
settings or the environment) and ``"embedded"`` otherwise, so a project with nothing but
the settings of the quickstart delivers.

The embedded runner is durable because the rows are: a task only says "look at rows X",
exactly as a Celery message does, and runs the same functions (the same claims with
their leases, retries with their backoff, circuits and dead letters). A process that
stops loses its queued tasks and nothing else: its leases expire and the next sweep, in
any process, hands the rows out again. Tasks queue in memory, at most ``MAX_QUEUED``;
past that a task is dropped with a log line and its rows wait for the sweep.
"""

from __future__ import annotations

import atexit
import contextvars
import heapq
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import close_old_connections

from silo_router.conf import conf

from .beat import (
    CHECK_LOADING_VIEW_TASK,
    DELIVER_BATCH_TASK,
    DELIVER_TASK,
    DRAIN_TASK,
    PRUNE_TASK,
    ROTATE_TOKENS_TASK,
    SWEEP_TASK,
)

logger = logging.getLogger("silo_router.delivery")

CELERY, EMBEDDED = "celery", "embedded"
RUNNERS = (CELERY, EMBEDDED)
#: Tasks waiting in one process at most; past that new ones are left to the sweep.
MAX_QUEUED = 10_000
#: At exit, how long a process waits for the tasks that are due (a ``manage.py`` command
#: that replayed payloads, a web process stopped gracefully); later ones are the sweep's.
EXIT_WAIT = 5.0


def celery_broker_configured() -> bool:
    """Whether this project configured a Celery broker (the setting or the environment variable)."""
    return bool(getattr(settings, "CELERY_BROKER_URL", None) or os.environ.get("CELERY_BROKER_URL"))


def active_runner() -> str:
    """``"celery"`` or ``"embedded"``: ``SILO_ROUTER["RUNNER"]``, or chosen by whether a broker is configured."""
    chosen = conf.RUNNER
    if chosen in RUNNERS:
        return chosen
    return CELERY if celery_broker_configured() else EMBEDDED


def embedded() -> bool:
    """Whether this process runs the control silo's tasks itself."""
    return active_runner() == EMBEDDED


def _task_functions() -> Mapping[str, Callable[..., object]]:
    """The functions behind the task names (the Celery tasks in :mod:`.tasks` run the same ones)."""
    from . import delivery, retention
    from .slack import rotation

    return {
        DELIVER_TASK: delivery.deliver,
        DELIVER_BATCH_TASK: delivery.deliver_batch,
        DRAIN_TASK: delivery.drain_chunk,
        SWEEP_TASK: delivery.sweep,
        CHECK_LOADING_VIEW_TASK: delivery.check_loading_view,
        ROTATE_TOKENS_TASK: rotation.rotate_due_tokens,
        PRUNE_TASK: lambda max_seconds=None: retention.prune(max_seconds=max_seconds).as_dict(),
    }


class EmbeddedRunner:
    """Runs tasks on ``RUNNER_THREADS`` threads of this process, each when it is due, and sweeps periodically."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[tuple[float, int, str, tuple[Any, ...], dict[str, Any]]] = []
        self._order = itertools.count()
        self._pid = 0
        self._threads: list[threading.Thread] = []
        self._running = 0
        self._functions: Mapping[str, Callable[..., object]] | None = None
        self._stopping = False

    def submit(self, name: str, args: Sequence[Any] = (), *, countdown: float = 0.0, **kwargs: Any) -> bool:
        """Queue task ``name`` to run in ``countdown`` seconds; False (logged) when too many wait."""
        with self._cond:
            self._start()
            if len(self._queue) >= MAX_QUEUED:
                logger.warning("%d tasks queued in this process: leaving %s to the sweep", len(self._queue), name)
                return False
            due = time.monotonic() + max(countdown, 0.0)
            heapq.heappush(self._queue, (due, next(self._order), name, tuple(args), dict(kwargs)))
            self._cond.notify()
        return True

    def start(self) -> None:
        """Start the threads and the periodic sweep in this process (again after a fork)."""
        if self._pid == os.getpid() and all(thread.is_alive() for thread in self._threads):
            return  # the request path's look, without the lock
        with self._cond:
            self._start()

    def stop(self, timeout: float = 10.0) -> None:
        """Let running tasks finish and end the threads (queued tasks are dropped: the sweep finds their rows)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            threads = list(self._threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(deadline - time.monotonic(), 0.0))

    def pending(self) -> int:
        """Tasks queued or running now."""
        with self._cond:
            return len(self._queue) + self._running

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no task is due or running (later ones may wait); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._running or (self._queue and self._queue[0][0] <= time.monotonic()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
        return True

    def finish_at_exit(self) -> None:
        """Let the tasks due now finish before the process ends (at most ``EXIT_WAIT`` seconds)."""
        if self._pid == os.getpid() and any(thread.is_alive() for thread in self._threads) and not self._stopping:
            if not self.wait_idle(EXIT_WAIT):
                logger.warning("exiting with embedded tasks unfinished: the sweep of a running process takes them")

    def _start(self) -> None:
        if self._stopping:
            return
        if self._pid == os.getpid() and all(thread.is_alive() for thread in self._threads):
            return
        if self._pid != os.getpid():  # the first start in this process, or the first after a fork
            self._pid = os.getpid()
            self._queue, self._running = [], 0  # a parent's tasks are the parent's to run
            self._threads = []
            self._schedule_periodic()
        self._threads = [thread for thread in self._threads if thread.is_alive()]
        for number in range(len(self._threads), max(conf.RUNNER_THREADS, 1)):
            thread = threading.Thread(target=self._work, name=f"silo-router-runner-{number}", daemon=True)
            # Started from an empty context: a thread started inside a request would otherwise
            # inherit its trace (sentry-sdk's threading integration copies the caller's scopes).
            contextvars.Context().run(thread.start)
            self._threads.append(thread)

    def _schedule_periodic(self) -> None:
        """The runner's own beat: a sweep soon after start (what a stopped process left), then every interval."""
        now = time.monotonic()
        for name, every, kwargs in self._periodic():
            first = min(every, 1.0) * random.uniform(0.5, 1.0)
            heapq.heappush(self._queue, (now + first, next(self._order), name, (), {"_every": every, **kwargs}))

    @staticmethod
    def _periodic() -> list[tuple[str, float, dict[str, Any]]]:
        jobs: list[tuple[str, float, dict[str, Any]]] = [(SWEEP_TASK, conf.SWEEP_INTERVAL, {})]
        if conf.PRUNE_INTERVAL:
            jobs.append((PRUNE_TASK, conf.PRUNE_INTERVAL, {"max_seconds": conf.PRUNE_INTERVAL * 0.9}))
        if conf.TOKEN_ROTATION_INTERVAL:
            jobs.append((ROTATE_TOKENS_TASK, conf.TOKEN_ROTATION_INTERVAL, {}))
        return [job for job in jobs if job[1] > 0]

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._queue or self._queue[0][0] > time.monotonic()):
                    self._cond.wait(self._queue[0][0] - time.monotonic() if self._queue else None)
                if self._stopping:
                    return
                _, _, name, args, kwargs = heapq.heappop(self._queue)
                self._running += 1
            every = kwargs.pop("_every", None)
            try:
                self._run(name, args, kwargs)
            finally:
                with self._cond:
                    self._running -= 1
                    if every is not None:  # periodic: the next run, a little jittered so processes spread out
                        due = time.monotonic() + every * random.uniform(0.9, 1.1)
                        heapq.heappush(self._queue, (due, next(self._order), name, (), {"_every": every, **kwargs}))
                    self._cond.notify_all()

    def _run(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._functions is None:
            self._functions = _task_functions()
        function = self._functions.get(name)
        if function is None:
            logger.error("the embedded runner has no task %s", name)
            return
        # Each thread keeps its own connections; drop those broken or past CONN_MAX_AGE, as Celery's Django fixup does.
        close_old_connections()
        try:
            # Each task in a context of its own, as Celery isolates tasks: no scope, tag or
            # span of one task leaks into the next on this thread.
            contextvars.Context().run(function, *args, **kwargs)
        except Exception:  # the rows are the truth: a failed task is logged, its rows are retried or swept
            logger.exception("embedded task %s failed", name)
        finally:
            close_old_connections()


#: The process's embedded runner.
runner = EmbeddedRunner()
atexit.register(lambda: runner.finish_at_exit())  # the runner of the moment (tests replace it)
