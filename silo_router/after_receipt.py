"""Work that runs after the handler's transaction commits and its receipt has gone back.

Reply helpers (``respond``, ``update_view``...) register through
``HandlerRequest.after_commit``. Inside a delivery, whatever commits is held until the
transport has answered control (the http endpoint after its response is written, the
local transport after the receipt is returned, the Celery task after its
confirmation), so a Slack 429 wait in a reply never counts as handler latency.
Outside a delivery (a management command, a shell) it runs at commit.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator
from typing import Any

from django.db import transaction

from silo_router import tracing

logger = logging.getLogger("silo_router.region")

Callback = Callable[[], Any]
_held: contextvars.ContextVar[list[Callback] | None] = contextvars.ContextVar("silo_router_after_receipt", default=None)


@contextlib.contextmanager
def holding() -> Iterator[list[Callback]]:
    """Collect committed callbacks instead of running them; run them with ``run_all``."""
    held: list[Callback] = []
    token = _held.set(held)
    try:
        yield held
    finally:
        _held.reset(token)


def schedule(func: Callback) -> None:
    """Run ``func`` once the current transaction commits and the receipt has been sent.

    ``func`` may run after the handler's own trace has ended, on another thread, so it
    runs in a flow of its own that continues the handler's trace.
    """
    traced = _in_trace(func, tracing.propagation_headers())
    transaction.on_commit(lambda: _hold_or_run(traced), robust=True)


def _in_trace(func: Callback, headers: dict[str, str]) -> Callback:
    if not headers:
        return func

    def run() -> Any:
        with tracing.flow("region", "after_receipt", "after-receipt work", carrier=headers, detached=True):
            return func()

    run.__qualname__ = getattr(func, "__qualname__", type(func).__name__)
    return run


def _hold_or_run(func: Callback) -> None:
    held = _held.get()
    if held is None:
        _run(func)
    else:
        held.append(func)


def run_all(callbacks: list[Callback]) -> None:
    """Run held callbacks in order; one that raises is logged and does not stop the rest."""
    while callbacks:
        _run(callbacks.pop(0))


def _run(func: Callback) -> None:
    try:
        func()
    except Exception:
        logger.exception("after-commit work %s failed", getattr(func, "__qualname__", type(func).__name__))
