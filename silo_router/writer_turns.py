"""Writers of a SQLite file take turns through a file lock instead of sleeping and polling.

SQLite has one writer at a time. A connection that finds the write lock taken sleeps
and polls (1, 2, 5, 10 ms, then up to 100 ms between looks) until it is free or the
busy timeout ends, so under concurrent writers (web processes storing payloads, worker
threads claiming and settling them, the sweeper) a write that would take 50 µs waits
for tens of milliseconds, and a click reaches its region late. Writers that queue on
an ``flock`` of a file beside the database (``<database>-silo-router-lock``) and a lock
of their own process instead are woken the moment the holder's statement commits.

:func:`writer_lock` is that turn. The control and region apps install it on every
connection to a SQLite file (:func:`take_turns`, from ``connection_created``) for the
statements that write in autocommit (``INSERT``, ``UPDATE``, ``DELETE``, ``REPLACE``
outside a transaction), which is how the library writes on the delivery path. A
statement inside an ``atomic`` block is left to SQLite's own locking (its transaction
already holds or waits for the lock), unless the block is entered inside
:func:`writer_lock` (the library does so for its own short transactions on hot paths).
Other databases, and SQLite in memory, need nothing.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

try:
    import fcntl
except ImportError:  # not on Windows: SQLite's own locking alone
    fcntl = None  # type: ignore[assignment]

from django.db.backends.base.base import BaseDatabaseWrapper

#: A statement that writes in autocommit (its first word).
_WRITES = re.compile(r"\s*(?:INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


class _Turn:
    """One database file's turn: a lock of this process, then the file lock between processes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.threads = threading.Lock()
        self.fd = -1
        self.pid = 0
        self.held = threading.local()

    def descriptor(self) -> int:
        """This process's descriptor: one inherited across a fork shares its lock with the parent."""
        if self.pid != os.getpid():
            self.fd = os.open(f"{self.path}-silo-router-lock", os.O_RDWR | os.O_CREAT, 0o600)
            self.pid = os.getpid()
        return self.fd


_turns: dict[str, _Turn] = {}
_turns_guard = threading.Lock()


def _turn_of(connection: BaseDatabaseWrapper) -> _Turn | None:
    """The turn of a SQLite file's connection; ``None`` for any other database."""
    if connection.vendor != "sqlite" or fcntl is None:
        return None
    path = str(connection.settings_dict.get("NAME") or "")
    if not path or path == ":memory:" or path.startswith("file:"):
        return None
    turn = _turns.get(path)  # every write statement asks: no lock once the turn exists
    if turn is None:
        with _turns_guard:
            turn = _turns.setdefault(path, _Turn(path))
    return turn


@contextlib.contextmanager
def writer_lock(connection: BaseDatabaseWrapper) -> Iterator[None]:
    """Hold the write turn of ``connection``'s SQLite file (re-entrant in a thread; a no-op elsewhere).

    Inside a transaction the turn is not taken: the transaction may hold SQLite's lock
    already, and waiting for the turn then would deadlock with a writer that has the
    turn and waits for that lock.
    """
    turn = _turn_of(connection)
    if turn is None or connection.in_atomic_block:
        yield
        return
    depth: int = getattr(turn.held, "depth", 0)
    if depth:  # this thread has the turn already
        turn.held.depth = depth + 1
        try:
            yield
        finally:
            turn.held.depth = depth
        return
    with turn.threads:
        fd = turn.descriptor()
        fcntl.flock(fd, fcntl.LOCK_EX)
        turn.held.depth = 1
        try:
            yield
        finally:
            turn.held.depth = 0
            fcntl.flock(fd, fcntl.LOCK_UN)


def _in_turn(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: dict[str, Any]) -> Any:
    if not _WRITES.match(sql):
        return execute(sql, params, many, context)
    with writer_lock(context["connection"]):  # not taken inside a transaction
        return execute(sql, params, many, context)


def take_turns(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """``connection_created`` receiver: a new connection to a SQLite file writes in turns."""
    if _turn_of(connection) is not None and _in_turn not in connection.execute_wrappers:
        connection.execute_wrappers.append(_in_turn)
