"""Committing payload rows on the request path: group commit, one raw insert per group.

A 2xx to the provider means the payload is committed; the cost of that is one
transaction and, on a durable database, one sync of its log. Requests of one process
that arrive together share both: the first to find no write in progress becomes the
group's *leader* and inserts its own rows at once; requests that arrive while it
writes queue up, and when it has committed, one of them leads the next group with
every row queued meanwhile. Each request returns only once the transaction that holds
its rows has committed, so the guarantee is unchanged: a killed process loses only
rows whose requests had no answer yet. One request alone pays nothing for this: it
leads its own group at once.

A group is one multi-row ``INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id``
(SQLite 3.35 or later, PostgreSQL): a provider's retry, or two copies of a request
racing, conflict on the envelope id, and ``RETURNING`` says which rows this statement
inserted. Values are adapted once per column kind, not through the ORM's per-object
machinery. When a group fails, what failed is found out request by request, so a row
the database refuses (a ``DataError``) fails only its own request; an outage fails
every request of the group (each answers 503 and the provider retries).

The leader writes on its own thread's connection; a caller inside a transaction (a
test case, code that stores inside its own ``atomic``) inserts alone, on its
connection, inside a savepoint, so that its transaction decides.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import uuid
from collections.abc import Sequence
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connections, router, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import CharField, Field, IntegerField, TextField

from silo_router.writer_turns import writer_lock

from .models import Payload

#: Rows in one statement at most (far under SQLite's 32,766 bound variables).
MAX_GROUP_ROWS = 500
#: The first SQLite release with ``RETURNING``.
SQLITE_RETURNING = (3, 35, 0)

_FIELDS: tuple[Field[Any, Any], ...] = tuple(Payload._meta.concrete_fields)
COLUMNS: tuple[str, ...] = tuple(str(field.column) for field in _FIELDS)


@dataclasses.dataclass(eq=False)
class _Job:
    """One caller's rows and, once its group is written, what became of them."""

    rows: Sequence[Payload]
    done: bool = False
    inserted: frozenset[str] = frozenset()
    error: BaseException | None = None


class GroupCommit:
    """Inserts the rows of concurrent callers of one process in shared transactions."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Job] = []
        self._writing = False
        self._leader = threading.local()

    def insert(self, rows: Sequence[Payload]) -> list[Payload]:
        """Commit ``rows`` (new ``Payload`` instances); return those this call inserted, in order.

        Raises the ``DatabaseError`` that kept them from being committed.
        """
        if not rows:
            return []
        connection = _connection()
        # A store made while this thread leads a group (from a database wrapper, a signal)
        # must not wait for the group it is part of.
        leading = getattr(self._leader, "active", False)
        if leading or connection.in_atomic_block or not supports_raw_insert(connection):
            inserted = _insert_alone(rows, connection)
        else:
            job = _Job(rows)
            self._run(job, connection)
            if job.error is not None:
                raise job.error
            inserted = job.inserted
        return _saved([row for row in rows if str(row.pk) in inserted], connection.alias)

    def _run(self, job: _Job, connection: BaseDatabaseWrapper) -> None:
        with self._cond:
            self._queue.append(job)
            while not job.done:
                if self._writing:
                    self._cond.wait()
                    continue
                self._writing = True
                group = self._take()
                self._cond.release()
                self._leader.active = True
                try:
                    _write(group, connection)
                finally:
                    self._leader.active = False
                    self._cond.acquire()
                    self._writing = False
                    self._cond.notify_all()

    def _take(self) -> list[_Job]:
        """The queued jobs that fit in one statement (the rest wait for the next group)."""
        taken: list[_Job] = []
        size = 0
        while self._queue and (not taken or size + len(self._queue[0].rows) <= MAX_GROUP_ROWS):
            job = self._queue.pop(0)
            taken.append(job)
            size += len(job.rows)
        return taken


def _write(group: list[_Job], connection: BaseDatabaseWrapper) -> None:
    """Insert every job's rows in one transaction; on failure, find out job by job."""
    rows = [row for job in group for row in job.rows]
    try:
        # One statement is a transaction of its own (autocommit): no BEGIN, no COMMIT to send.
        with (
            writer_lock(connection),
            transaction.atomic(using=connection.alias) if len(rows) > MAX_GROUP_ROWS else contextlib.nullcontext(),
        ):
            inserted = insert_rows(rows, connection)
    except BaseException as exc:
        if len(group) == 1 or not isinstance(exc, DatabaseError) or _is_outage(exc):
            for job in group:
                job.error, job.done = exc, True
            return
        for job in group:  # one job's bad row must not fail the others
            try:
                with transaction.atomic(using=connection.alias):
                    job.inserted = frozenset(insert_rows(job.rows, connection))
            except BaseException as job_exc:
                job.error = job_exc
            job.done = True
        return
    for job in group:  # two copies of one request in a group: the first one inserted it
        mine = frozenset(str(row.pk) for row in job.rows) & inserted
        inserted -= mine
        job.inserted, job.done = mine, True


def _is_outage(exc: BaseException) -> bool:
    """An error that no row caused (the database is away, locked, read-only)."""
    return isinstance(exc, (OperationalError, InterfaceError))


def _insert_alone(rows: Sequence[Payload], connection: BaseDatabaseWrapper) -> frozenset[str]:
    """Insert on the caller's own connection; a savepoint keeps a failure from breaking its transaction."""
    with transaction.atomic(using=connection.alias):
        if supports_raw_insert(connection):
            return frozenset(insert_rows(rows, connection))
        return frozenset(_insert_with_orm(rows, connection))


def _insert_with_orm(rows: Sequence[Payload], connection: BaseDatabaseWrapper) -> set[str]:
    """The portable path (a backend with no ``ON CONFLICT ... RETURNING``): existing ids left out."""
    ids = [row.pk for row in rows]
    existing = {
        str(pk) for pk in Payload.objects.using(connection.alias).filter(pk__in=ids).values_list("pk", flat=True)
    }
    fresh = [row for row in rows if str(row.pk) not in existing]
    Payload.objects.using(connection.alias).bulk_create(fresh)
    return {str(row.pk) for row in fresh}


def insert_rows(rows: Sequence[Payload], connection: BaseDatabaseWrapper) -> set[str]:
    """One ``INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id``; the ids (as strings) it inserted.

    Text and numbers are passed as they are; every other column (dates, the UUID) goes
    through its field's own conversion, the one the ORM applies, so a row inserted here
    reads back exactly as one the ORM inserted.
    """
    inserted: set[str] = set()
    quote = connection.ops.quote_name
    head = f"INSERT INTO {quote(Payload._meta.db_table)} ({', '.join(quote(column) for column in COLUMNS)}) VALUES "
    tail = f" ON CONFLICT ({quote('id')}) DO NOTHING RETURNING {quote('id')}"
    one = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    for start in range(0, len(rows), MAX_GROUP_ROWS):
        chunk = rows[start : start + MAX_GROUP_ROWS]
        params: list[Any] = []
        for row in chunk:
            for field, converted in _PLAN:
                value = getattr(row, field.attname)
                params.append(field.get_db_prep_value(value, connection, prepared=False) if converted else value)
        with connection.cursor() as cursor:
            cursor.execute(head + ", ".join([one] * len(chunk)) + tail, params)
            inserted.update(str(uuid.UUID(str(pk))) for (pk,) in cursor.fetchall())
    return inserted


def supports_raw_insert(connection: BaseDatabaseWrapper) -> bool:
    """Whether the backend has ``INSERT ... ON CONFLICT DO NOTHING RETURNING``."""
    if connection.vendor == "postgresql":
        return True
    if connection.vendor == "sqlite":
        import sqlite3

        return sqlite3.sqlite_version_info >= SQLITE_RETURNING
    return False


#: Per column: its field, and whether its value needs the field's conversion.
_PLAN: tuple[tuple[Field[Any, Any], bool], ...] = tuple(
    (field, not isinstance(field, (CharField, TextField, IntegerField))) for field in _FIELDS
)


def _connection() -> BaseDatabaseWrapper:
    return connections[router.db_for_write(Payload)]


def _saved(rows: list[Payload], alias: str) -> list[Payload]:
    """Mark ``rows`` as loaded from the database (they are, now)."""
    for row in rows:
        row._state.adding = False
        row._state.db = alias
    return rows


#: The process's group committer.
committer = GroupCommit()
