"""The floor of a durable acknowledgement: a bare view that commits the body and nothing else.

Not django-silo-router: a reference point for it. Each request's body is committed
before the 200, with the cheapest code that keeps that promise in one process of a
gunicorn server: a group commit (concurrent requests of the process share one write
and one sync; the first to find no write under way writes every body queued so far)
with nothing else on the path: no signature check, no parsing, no routing, no ORM.

- ``BENCH_FLOOR_STORE=sqlite``: one multi-row ``INSERT`` of ``(id, body)`` into a table
  with no other index, on the raw ``sqlite3`` module, WAL with ``synchronous=FULL``
  (``NORMAL`` under ``--sqlite-synchronous NORMAL``);
  the processes of the server take turns through an ``flock`` beside the file, as
  silo_router's writers do (SQLite has one writer at a time).
- ``BENCH_FLOOR_STORE=journal``: an append to a file of the process's own and one
  ``fdatasync``: no table, no lock between processes.

Whatever a durable SQLite ack does on top of this costs more, so this target's rate is
the most any of them can reach on the machine.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import uuid

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from .common import VAR_DIR

STORE = os.environ.get("BENCH_FLOOR_STORE", "sqlite")
#: ``control_ack.py --sqlite-synchronous``, as for silo_router's SQLite targets.
SYNCHRONOUS = "NORMAL" if os.environ.get("BENCH_SQLITE_SYNCHRONOUS") == "NORMAL" else "FULL"


class _Job:
    __slots__ = ("body", "done", "id")

    def __init__(self, body: bytes) -> None:
        self.id = str(uuid.uuid4())
        self.body = body
        self.done = False


class FloorStore:
    """Group commit of request bodies, on SQLite or on a journal file."""

    def __init__(self, store: str) -> None:
        self.store = store
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Job] = []
        self._writing = False
        self._pid = 0

    def commit(self, body: bytes) -> None:
        """Return once ``body`` is committed and synced."""
        job = _Job(body)
        with self._cond:
            self._open()
            self._queue.append(job)
            while not job.done:
                if self._writing:
                    self._cond.wait()
                    continue
                self._writing = True
                group, self._queue = self._queue, []
                self._cond.release()
                try:
                    self._write(group)
                finally:
                    self._cond.acquire()
                    for done in group:
                        done.done = True
                    self._writing = False
                    self._cond.notify_all()

    def _open(self) -> None:
        """Open this process's files (again after gunicorn's fork)."""
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        if self.store == "journal":
            self._journal = os.open(VAR_DIR / f"journal-{self._pid}", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            return
        path = VAR_DIR / "floor.sqlite3"
        self._turn = os.open(f"{path}-lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        fcntl.flock(self._turn, fcntl.LOCK_EX)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS body (id TEXT PRIMARY KEY, body BLOB NOT NULL)")
        finally:
            fcntl.flock(self._turn, fcntl.LOCK_UN)
        self._db.execute(f"PRAGMA synchronous={SYNCHRONOUS}")

    def _write(self, group: list[_Job]) -> None:
        if self.store == "journal":
            os.write(self._journal, b"".join(job.body + b"\n" for job in group))
            os.fdatasync(self._journal)
            return
        values = ", ".join(["(?, ?)"] * len(group))
        params = [value for job in group for value in (job.id, job.body)]
        fcntl.flock(self._turn, fcntl.LOCK_EX)
        try:
            self._db.execute(f"INSERT INTO body (id, body) VALUES {values}", params)  # autocommit: one transaction
        finally:
            fcntl.flock(self._turn, fcntl.LOCK_UN)


store = FloorStore(STORE)


@csrf_exempt
def durable_floor(request: HttpRequest) -> HttpResponse:
    """Commit the body, answer an empty 200."""
    store.commit(request.body)
    return HttpResponse(status=200)
