"""In-process transport: the region receiver runs in this process (monolith, tests).

The region app registers its receiver here when it is ready (``register_receiver``),
so this module knows nothing of the region's internals. The receiver runs in a worker
thread so that ``timeout`` is a total deadline, as on every transport; a caller inside
a database transaction gets an inline call instead (the receiver must see and join
that transaction, which another thread cannot), and no deadline.

The receiver gets the attempt's :class:`~.base.Hop`, taken on the caller's thread: the
region's thread starts with no span of its own, and joins the attempt's trace from it.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from django.db import connection, connections

from silo_router import signing
from silo_router.envelope import Receipt, SealedEnvelope
from silo_router.exceptions import EnvelopeRejected

from .base import DeliveryError, DeliveryTimeout, Hop, Transport

logger = logging.getLogger("silo_router.transports")

#: Seconds the receiver may take to verify an envelope before the region counts as not answering.
DEFAULT_ACCEPT_TIMEOUT = 2.0


class LocalReceiver(Protocol):
    def __call__(
        self, body: bytes, signature: str | None, *, region: str, on_accept: Callable[[], None], hop: Hop
    ) -> tuple[Receipt, Sequence[Callable[[], Any]]]: ...


_receiver: LocalReceiver | None = None


def register_receiver(receiver: LocalReceiver) -> None:
    """Set the in-process region receiver (the region app does this in ``ready()``)."""
    global _receiver
    _receiver = receiver


def delivery_error(exc: BaseException) -> DeliveryError:
    """What any failure of an in-process delivery means to control."""
    if isinstance(exc, DeliveryError):
        return exc
    if isinstance(exc, EnvelopeRejected):
        if exc.reason in signing.FLEET_FAULT_REASONS:
            return DeliveryError(exc.reason, retryable=True, region_fault=True, hold=True)
        return DeliveryError(exc.reason, retryable=False)
    return DeliveryError(f"region_error: {type(exc).__name__}", retryable=True, region_fault=True)


class LocalTransport(Transport):
    """Options: ``ACCEPT_TIMEOUT`` (seconds to verify, default 2)."""

    def __init__(self, region: str, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        self.accept_timeout = float(options.get("ACCEPT_TIMEOUT", DEFAULT_ACCEPT_TIMEOUT))

    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        receiver = _receiver
        if receiver is None:
            raise DeliveryError(
                "no region receiver in this process (is silo_router.region in INSTALLED_APPS?)",
                retryable=True,
                hold=True,
            )
        hop = Hop.current()
        if connection.in_atomic_block:
            return self._inline(receiver, sealed, hop)
        return self._threaded(receiver, sealed, hop, timeout=timeout)

    def _inline(self, receiver: LocalReceiver, sealed: SealedEnvelope, hop: Hop) -> Receipt:
        try:
            receipt, held = receiver(sealed.body, sealed.signature, region=self.region, on_accept=lambda: None, hop=hop)
        except Exception as exc:
            raise delivery_error(exc) from exc
        _run_held(held)
        return receipt

    def _threaded(self, receiver: LocalReceiver, sealed: SealedEnvelope, hop: Hop, *, timeout: float) -> Receipt:
        deadline = time.monotonic() + timeout
        answered = threading.Event()  # verified, or refused
        outcome: concurrent.futures.Future[Receipt] = concurrent.futures.Future()

        def work() -> None:
            try:
                receipt, held = receiver(
                    sealed.body, sealed.signature, region=self.region, on_accept=answered.set, hop=hop
                )
            except BaseException as exc:  # handed to the caller, which maps it
                outcome.set_exception(exc)
            else:
                outcome.set_result(receipt)
                _run_held(held)
            finally:
                answered.set()
                connections.close_all()  # this thread's connections, opened by the receiver

        _running.start()
        threading.Thread(target=_tracked(work), name=f"silo-router-local-{self.region}", daemon=True).start()
        if not answered.wait(max(min(self.accept_timeout, timeout), 0.0)):
            raise DeliveryTimeout("accept_timeout", region_fault=True)
        try:
            return outcome.result(timeout=max(deadline - time.monotonic(), 0.0))
        except concurrent.futures.TimeoutError as exc:
            raise DeliveryTimeout("timeout", region_fault=False) from exc
        except Exception as exc:
            raise delivery_error(exc) from exc


class _Running:
    """How many in-process deliveries (with their after-receipt work) are still running."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    def start(self) -> None:
        with self._changed:
            self._count += 1

    def finish(self) -> None:
        with self._changed:
            self._count -= 1
            self._changed.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self._count == 0, timeout=timeout)


_running = _Running()


def _tracked(work: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        try:
            work()
        finally:
            _running.finish()

    return run


def wait_until_idle(timeout: float) -> bool:
    """Wait until every in-process delivery of this process, replies included, has finished.

    Replies run after the receipt has been returned, on the delivery's own thread; a
    management command or a test that wants to see them done waits here. True if idle.
    """
    return _running.wait_idle(timeout)


def _run_held(held: Sequence[Callable[[], Any]]) -> None:
    for func in held:
        try:
            func()
        except Exception:  # after-commit work is best-effort: log it, run the rest
            logger.exception("after-commit work failed")
