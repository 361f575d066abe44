"""Every query the sweeper, a claim and retention make on payloads is served by an index.

The statements are the real ones, captured while the functions run; each is then
explained by the database itself (SQLite's EXPLAIN QUERY PLAN, PostgreSQL's EXPLAIN with
sequential scans discouraged, so that a usable index shows). A query fails the test when
it reads the whole payload table, or walks a whole index that is not a partial one.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from silo_router.control import delivery, followups, retention
from silo_router.control.models import Payload

from .test_prune import DAY, stored

pytestmark = pytest.mark.django_db

TABLE = Payload._meta.db_table
PARTIAL = {index.name for index in Payload._meta.indexes if index.condition is not None}


@contextlib.contextmanager
def statements() -> Iterator[list[tuple[str, Any]]]:
    """Every statement on the payload table run inside the block, with its parameters."""
    seen: list[tuple[str, Any]] = []

    def record(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if TABLE in sql and not many and sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
            seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield seen


def plan_of(sql: str, params: Any) -> list[str] | list[dict[str, Any]]:
    """SQLite: the lines of ``EXPLAIN QUERY PLAN``; PostgreSQL: every node of ``EXPLAIN``, sequential
    scans discouraged so that a usable index shows."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            return [str(row[-1]) for row in cursor.fetchall()]
        cursor.execute("SET enable_seqscan = off")
        try:
            cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
            (plan,) = cursor.fetchone()
        finally:
            cursor.execute("RESET enable_seqscan")
    plan = json.loads(plan) if isinstance(plan, str) else plan
    nodes: list[dict[str, Any]] = []

    def walk(node: dict[str, Any]) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return nodes


def full_reads(sql: str, params: Any) -> list[str]:
    """The parts of the plan of ``sql`` that read all of the payload table or of one of its full indexes."""
    bad = []
    for part in plan_of(sql, params):
        if isinstance(part, str):
            if part.startswith(f"SCAN {TABLE}"):
                index = part.split(" INDEX ")[-1].split(" ")[0] if " INDEX " in part else None
                if index not in PARTIAL:
                    bad.append(part)
            continue
        kind = part.get("Node Type", "")
        if part.get("Relation Name") == TABLE or kind == "Bitmap Index Scan":
            if kind == "Seq Scan":
                bad.append(f"Seq Scan on {TABLE}")
            elif "Index Name" in part and "Index Cond" not in part and part["Index Name"] not in PARTIAL:
                bad.append(f"{kind} of the whole {part['Index Name']}")
    return bad


def assert_indexed(seen: list[tuple[str, Any]]) -> None:
    assert seen, "no statement on the payload table was captured"
    problems = {sql: bad for sql, params in seen if (bad := full_reads(sql, params))}
    assert problems == {}


@pytest.fixture
def rows() -> dict[str, str]:
    now = timezone.now()
    made = {
        "due": stored("due", state="pending", age=datetime.timedelta(minutes=5)),
        "leased": stored("leased", state="in_flight", age=DAY, attempted_ago=DAY),
        "old-delivered": stored("old-delivered", state="delivered", age=9 * DAY, delivered_ago=8 * DAY, attempts=1),
        "delivered": stored("delivered", state="delivered", age=DAY, delivered_ago=DAY),
        "old-failed": stored("old-failed", state="failed", age=40 * DAY, attempted_ago=40 * DAY),
        "old-unroutable": stored("old-unroutable", state="unroutable", age=40 * DAY),
    }
    Payload.objects.filter(pk=made["leased"]).update(lease_owner="gone", lease_until=now - DAY)
    Payload.objects.filter(pk=made["due"]).update(enqueued_at=now - DAY, loading_check_at=now - DAY)
    return made


def test_the_sweeper_reads_only_active_rows(rows: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "enqueue", lambda targets, **kwargs: len(list(targets)))
    monkeypatch.setattr(followups, "check", lambda payload_id: None)
    with statements() as seen:
        delivery.sweep()
        delivery.note_region_up("us")
    assert_indexed(seen)


def test_a_claim_and_the_strict_order_checks_use_indexes(rows: dict[str, str]) -> None:
    Payload.objects.filter(pk=rows["due"]).update(ordering_key="us|7", next_attempt_at=None)
    with statements() as seen:
        claimed = delivery.claim(rows["due"])
        assert claimed is not None
        delivery.mark_delivered(claimed, receipt=delivery.Receipt(outcome=delivery.Outcome.HANDLED))
    assert_indexed(seen)


def test_the_batch_claim_shape_uses_the_pending_index(rows: dict[str, str]) -> None:
    """``state = 'pending' AND region = ? AND due ORDER BY created_at LIMIT n``, as a batch claim selects."""
    due = (
        Payload.objects.filter(state=Payload.State.PENDING, region="us")
        .filter(delivery.Q(next_attempt_at__isnull=True) | delivery.Q(next_attempt_at__lte=timezone.now()))
        .order_by("created_at")
        .values_list("pk", flat=True)[:100]
    )
    sql, params = due.query.sql_with_params()
    assert full_reads(sql, params) == []


def test_retention_uses_indexes(rows: dict[str, str], settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "BODY_RETENTION": 3600}
    with statements() as seen:
        retention.prune(dry_run=True)
        result = retention.prune()
    assert (result.rows["delivered"], result.rows["failed"], result.rows["unroutable"]) == (1, 1, 1)
    assert result.rows["bodies"] == 1
    assert_indexed(seen)


def test_a_full_read_is_caught() -> None:
    """The check itself: a query on a column no index covers is reported."""
    assert full_reads(f'SELECT "id" FROM "{TABLE}" WHERE "last_error" = %s', ["x"]) != []


def region_history_reads(sql: str, params: Any) -> list[str]:
    """Plan parts that read every row of a region (its delivered history too) through the region index."""
    bad = []
    for part in plan_of(sql, params):
        if isinstance(part, str):
            if part.endswith("_payload_region (region=?)"):
                bad.append(part)
        elif part.get("Index Name") == "silo_router_payload_region" and "state" not in part.get("Index Cond", ""):
            bad.append(f"{part['Node Type']} on {part['Index Name']}: {part.get('Index Cond', '')}")
    return bad


def test_a_drain_reads_only_the_active_rows_of_its_region(
    rows: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each chunk of a backlog calls ``drain`` again: it must not read the region's history each time."""
    monkeypatch.setattr(delivery, "send_task", lambda *args, **kwargs: None)
    with statements() as seen:
        delivery.drain("us")
    assert_indexed(seen)
    assert {sql: bad for sql, params in seen if (bad := region_history_reads(sql, params))} == {}
