"""Retention: old payloads deleted, old bodies dropped, in short batches.

Three kinds of rows go (``DELIVERED_RETENTION``, ``FAILED_RETENTION``):

- ``delivered``: delivered longer ago than ``DELIVERED_RETENTION``;
- ``failed``: created and last attempted longer ago than ``FAILED_RETENTION`` (a replay
  makes a row pending again, so a replayed row is judged by its new delivery);
- ``unroutable``: created longer ago than ``FAILED_RETENTION``.

A payload's attempts (its timeline) go with it. With ``BODY_RETENTION`` set, a delivered
payload's envelope is replaced after that many seconds by a stub that keeps everything
but the provider's body and headers (ids, kind, region, organizations, trace headers,
the control response) and says when the body was dropped. Such a row cannot be
replayed: :func:`body_dropped` names them, and replay refuses them.

Every batch is its own short transaction of at most ``PRUNE_BATCH`` rows, found through
an index (``silo_router_payload_state``, ``silo_router_payload_body``), then a pause as
long as the batch (at most ``MAX_PAUSE``) so that writers waiting for SQLite's lock get
it. No row is loaded into Python to be deleted (ids only), so no signal runs. On
PostgreSQL the batch's rows are locked with ``FOR UPDATE SKIP LOCKED``; on SQLite the
batch starts with a write, so it waits for the write lock instead of failing on it.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from silo_router import tracing
from silo_router.conf import conf

from .models import Payload, PayloadAttempt

logger = logging.getLogger("silo_router.retention")

State = Payload.State

#: A stored envelope is canonical JSON with sorted keys, so it begins with its body.
ENVELOPE_PREFIX = '{"body":'
#: The key a stub adds; it sorts before every envelope field, so a stub begins with it.
BODY_DROPPED_KEY = "body_dropped_at"
BODY_DROPPED_PREFIX = '{"' + BODY_DROPPED_KEY + '":'
#: What a stub no longer holds.
DROPPED_FIELDS = ("body", "headers")
#: Why a replay of a stub is refused.
BODY_DROPPED_REASON = "its body was dropped after BODY_RETENTION; there is nothing to send"

DELIVERED = "delivered"
FAILED = "failed"
UNROUTABLE = "unroutable"
BODIES = "bodies"
#: The longest pause between two batches of a run (each pause is as long as the batch before it).
MAX_PAUSE = 0.1
#: The categories, in the order a run prunes them (rows to delete before bodies to drop).
CATEGORIES = (DELIVERED, FAILED, UNROUTABLE, BODIES)


@dataclasses.dataclass
class Pruned:
    """What one run did (or, for a dry run, would do), per category."""

    rows: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    attempts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    batches: int = 0
    #: False when the run stopped at its time limit with rows left.
    finished: bool = True
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.rows,
            "attempts": sum(self.attempts.values()),
            "batches": self.batches,
            "finished": self.finished,
        }


def cutoffs(now: datetime.datetime | None = None) -> dict[str, datetime.datetime | None]:
    """Per category, the moment before which a row goes (``None``: bodies are kept)."""
    moment = now or timezone.now()
    body = conf.BODY_RETENTION
    return {
        DELIVERED: moment - datetime.timedelta(seconds=conf.DELIVERED_RETENTION),
        FAILED: moment - datetime.timedelta(seconds=conf.FAILED_RETENTION),
        UNROUTABLE: moment - datetime.timedelta(seconds=conf.FAILED_RETENTION),
        BODIES: moment - datetime.timedelta(seconds=body) if body is not None else None,
    }


def expired(category: str, cutoff: datetime.datetime) -> QuerySet[Payload]:
    """The rows of ``category`` to delete, oldest first.

    ``created_at < cutoff`` bounds the index range: a row cannot be delivered or attempted
    before it was created, so every expired row is in it.
    """
    rows = Payload.objects.filter(created_at__lt=cutoff)
    if category == DELIVERED:
        rows = rows.filter(state=State.DELIVERED, delivered_at__lt=cutoff)
    elif category == FAILED:
        rows = rows.filter(state=State.FAILED).filter(Q(last_attempt_at__isnull=True) | Q(last_attempt_at__lt=cutoff))
    elif category == UNROUTABLE:
        rows = rows.filter(state=State.UNROUTABLE)
    else:
        raise ValueError(f"no rows are deleted for {category!r}")
    return rows.order_by("created_at", "pk")


def delete_batch(category: str, cutoff: datetime.datetime, *, limit: int) -> tuple[int, int]:
    """Delete up to ``limit`` expired rows of ``category`` and their attempts, in one short
    transaction; return ``(payloads, attempts)`` deleted."""
    chosen = expired(category, cutoff).values("pk")[:limit]
    with transaction.atomic():
        if connection.vendor == "postgresql":
            ids = list(chosen.select_for_update(skip_locked=True).values_list("pk", flat=True))
            if not ids:
                return 0, 0
            attempts = PayloadAttempt.objects.filter(payload_id__in=ids)._raw_delete(connection.alias)
        else:
            # A write first: it takes SQLite's write lock (waiting for it) before anything is
            # read, so the ids read next are the ones it saw and nobody can change them.
            attempts = PayloadAttempt.objects.filter(payload_id__in=chosen)._raw_delete(connection.alias)
            ids = list(chosen.values_list("pk", flat=True))
            if not ids:
                return 0, attempts
        payloads = Payload.objects.filter(pk__in=ids)._raw_delete(connection.alias)
    return payloads, attempts


def _stub_candidates_sql(limit: int) -> tuple[str, list[Any]]:
    """Delivered rows that still hold their body, oldest delivery first.

    Raw SQL because the body test must be written as the index's own condition, with the
    pattern inline: SQLite uses a partial index only when the query repeats its terms.
    """
    table = connection.ops.quote_name(Payload._meta.db_table)
    lock = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    escape = " ESCAPE '\\'" if connection.vendor == "sqlite" else ""
    sql = (
        f'SELECT "id", "envelope" FROM {table} '
        f"WHERE \"state\" = 'delivered' AND \"envelope\" LIKE '{ENVELOPE_PREFIX}%%'{escape} "
        f'AND "delivered_at" < %s ORDER BY "delivered_at" LIMIT %s{lock}'
    )
    return sql, [limit]


def stub_of(raw: str, *, dropped_at: datetime.datetime) -> str:
    """The stub that replaces envelope ``raw``: everything but the body and headers, and when."""
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        data = {"corrupt": True}
    kept = {key: value for key, value in data.items() if key not in DROPPED_FIELDS}
    kept[BODY_DROPPED_KEY] = dropped_at.isoformat(timespec="seconds")
    return json.dumps(kept, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def drop_bodies_batch(cutoff: datetime.datetime, *, limit: int, now: datetime.datetime | None = None) -> int:
    """Replace the envelopes of up to ``limit`` rows delivered before ``cutoff`` with stubs; return how many."""
    moment = now or timezone.now()
    sql, params = _stub_candidates_sql(limit)
    adapted = connection.ops.adapt_datetimefield_value(cutoff)
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            _take_write_lock(cursor)
        cursor.execute(sql, [adapted, *params])
        rows = cursor.fetchall()
        if not rows:
            return 0
        stubs = [(stub_of(envelope, dropped_at=moment), pk) for pk, envelope in rows]
        table = connection.ops.quote_name(Payload._meta.db_table)
        cursor.executemany(f'UPDATE {table} SET "envelope" = %s WHERE "id" = %s', stubs)
    return len(rows)


def _take_write_lock(cursor: Any) -> None:
    """SQLite: make this transaction a writer before it reads (an update that changes nothing)."""
    table = connection.ops.quote_name(Payload._meta.db_table)
    cursor.execute(f'UPDATE {table} SET "id" = "id" WHERE "id" = %s', [""])


def count(category: str, cutoff: datetime.datetime | None) -> int:
    """How many rows a run would delete (or bodies it would drop) now."""
    if cutoff is None:
        return 0
    if category != BODIES:
        return expired(category, cutoff).count()
    table = connection.ops.quote_name(Payload._meta.db_table)
    escape = " ESCAPE '\\'" if connection.vendor == "sqlite" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*) FROM {table} WHERE \"state\" = 'delivered' "
            f'AND "envelope" LIKE \'{ENVELOPE_PREFIX}%%\'{escape} AND "delivered_at" < %s',
            [connection.ops.adapt_datetimefield_value(cutoff)],
        )
        (found,) = cursor.fetchone()
    return int(found)


def prune(
    *,
    now: datetime.datetime | None = None,
    batch_size: int | None = None,
    max_seconds: float | None = None,
    dry_run: bool = False,
) -> Pruned:
    """Delete expired payloads and drop old bodies, batch after batch, until none are left
    or ``max_seconds`` have passed (then ``finished`` is False; the next run goes on)."""
    limit = batch_size or conf.PRUNE_BATCH
    moments = cutoffs(now)
    result = Pruned(dry_run=dry_run)
    with tracing.stage("control", "prune", "retention", dry_run=dry_run) as span:
        if dry_run:
            for category, cutoff in moments.items():
                result.rows[category] = count(category, cutoff)
        else:
            _prune(result, moments, limit=limit, max_seconds=max_seconds, now=now)
        span.set(**result.as_dict())
    if not dry_run and any(result.rows.values()):
        logger.info(
            "retention: %s",
            ", ".join(f"{result.rows[c]} {c}" for c in CATEGORIES) + ("" if result.finished else " (more left)"),
        )
    return result


def _prune(
    result: Pruned,
    moments: Mapping[str, datetime.datetime | None],
    *,
    limit: int,
    max_seconds: float | None,
    now: datetime.datetime | None,
) -> None:
    deadline = time.monotonic() + max_seconds if max_seconds is not None else None
    for category in CATEGORIES:
        cutoff = moments[category]
        if cutoff is None:
            continue
        while True:
            if deadline is not None and time.monotonic() >= deadline:
                result.finished = False
                return
            began = time.monotonic()
            if category == BODIES:
                done, attempts = drop_bodies_batch(cutoff, limit=limit, now=now), 0
            else:
                done, attempts = delete_batch(category, cutoff, limit=limit)
            result.batches += 1
            result.rows[category] += done
            result.attempts[category] += attempts
            if done < limit:
                break
            # As long as the batch held the write lock, give it to others (SQLite's waiting
            # writers poll for it), so a long run never starves the request path.
            time.sleep(min(time.monotonic() - began, MAX_PAUSE))


def is_body_dropped(envelope: str) -> bool:
    """Whether a stored envelope is a stub (its body was dropped)."""
    return envelope.startswith(BODY_DROPPED_PREFIX)


def body_dropped(payload_ids: Iterable[str]) -> list[str]:
    """The payloads among ``payload_ids`` whose body was dropped (they cannot be replayed)."""
    ids = [str(pk) for pk in payload_ids]
    if not ids:
        return []
    rows = Payload.objects.filter(pk__in=ids, envelope__startswith=BODY_DROPPED_PREFIX).values_list("pk", flat=True)
    return [str(pk) for pk in rows]
