"""Group commit: concurrent requests of a process share a transaction, and each still gets only its own answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import IntegrityError, OperationalError, connection, transaction

from silo_router.control import delivery, ingest
from silo_router.control.models import Payload
from silo_router.envelope import Envelope

pytestmark = pytest.mark.django_db(transaction=True)

#: Threads that arrive while one group is being written.
FOLLOWERS = 5


def envelope(key: str, region: str = "us", **fields: Any) -> Envelope:
    return Envelope(
        id=Envelope.make_id(key, region),
        idempotency_key=key,
        provider="slack",
        kind="event_callback:app_mention",
        region=region,
        body='{"event": {"text": "caf\u00e9"}}',
        headers={"content-type": "application/json"},
        strategy="async",
        trace={"sentry-trace": "0123456789abcdef0123456789abcdef-0123456789abcdef-1"},
        **fields,
    )


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The number of callers in each group written, in order."""
    sizes: list[int] = []
    write = ingest._write

    def counting(group: list[Any], conn: Any) -> None:
        sizes.append(len(group))
        write(group, conn)

    monkeypatch.setattr(ingest, "_write", counting)
    yield sizes


class HeldFirstInsert:
    """Holds the first group's insert until ``release()``, so that others queue behind it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.go = threading.Event()
        self._first = True
        self._lock = threading.Lock()

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("INSERT"):
            with self._lock:
                first, self._first = self._first, False
            if first:
                self.started.set()
                self.go.wait(10)
        return execute(sql, params, many, context)


def store_in_threads(batches: list[list[Envelope]], hold: HeldFirstInsert) -> list[Any]:
    """Store each batch on its own thread; the first holds its group until the others wait behind it."""
    from django.db import connections

    results: list[Any] = [None] * len(batches)

    def run(index: int) -> None:
        try:
            with connections["default"].execute_wrapper(hold):
                results[index] = delivery.store(batches[index])
        except Exception as exc:
            results[index] = exc
        finally:
            connections.close_all()

    first = threading.Thread(target=run, args=(0,))
    first.start()
    assert hold.started.wait(10)
    others = [threading.Thread(target=run, args=(i,)) for i in range(1, len(batches))]
    for thread in others:
        thread.start()
    wait_until_queued(len(others))
    hold.go.set()
    for thread in [first, *others]:
        thread.join(20)
    return results


def wait_until_queued(count: int) -> None:
    import time

    deadline = time.monotonic() + 10
    while len(ingest.committer._queue) < count:
        assert time.monotonic() < deadline, "the followers never queued"
        time.sleep(0.005)


def test_requests_arriving_together_share_one_transaction(groups: list[int]) -> None:
    batches = [[envelope(f"together-{i}")] for i in range(1 + FOLLOWERS)]
    results = store_in_threads(batches, HeldFirstInsert())
    for batch, stored in zip(batches, results, strict=True):
        assert [str(row.pk) for row in stored] == [batch[0].id]  # each gets exactly its own row
    assert groups == [1, FOLLOWERS]  # the leader alone, then everyone who queued meanwhile
    assert Payload.objects.count() == 1 + FOLLOWERS


def test_a_lone_request_leads_its_own_group_at_once(groups: list[int]) -> None:
    (row,) = delivery.store([envelope("alone")])
    assert groups == [1]
    assert Payload.objects.get(pk=row.pk).state == "pending"


def test_a_row_the_database_refuses_fails_only_its_own_request(groups: list[int]) -> None:
    bad = Envelope.make_id("bad", "us")
    batches = [[envelope("first")], [envelope("good-1")], [envelope("bad")], [envelope("good-2")]]
    original = delivery._store

    def store_with_a_bad_row(envelopes: Any, **kwargs: Any) -> list[Payload]:
        if envelopes and envelopes[0].id == bad:  # a row that breaks a NOT NULL constraint
            rows = [Payload(id=bad, provider=None, kind="x", region="us", strategy="async", envelope="{}")]
            return ingest.committer.insert(rows)
        return original(envelopes, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(delivery, "_store", store_with_a_bad_row)
        results = store_in_threads(batches, HeldFirstInsert())
    assert isinstance(results[2], IntegrityError)
    assert [len(r) for i, r in enumerate(results) if i != 2] == [1, 1, 1]
    assert set(Payload.objects.values_list("idempotency_key", flat=True)) == {"first", "good-1", "good-2"}
    assert groups[:2] == [1, 3]  # the group was tried whole first, then caller by caller


def test_two_copies_of_one_request_in_a_group_insert_it_once(groups: list[int]) -> None:
    copy = envelope("copied")
    results = store_in_threads([[envelope("leader")], [copy], [copy]], HeldFirstInsert())
    assert sorted(len(r) for r in results[1:]) == [0, 1]  # one copy stored it, the other is a duplicate
    assert Payload.objects.filter(pk=copy.id).count() == 1


def test_an_outage_fails_every_request_of_the_group(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("INSERT"):
            raise OperationalError("disk I/O error")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse), pytest.raises(OperationalError):
        delivery.store([envelope("outage")])
    assert not Payload.objects.exists()


def test_rows_read_back_exactly_as_the_orms_own(groups: list[int]) -> None:
    (raw,) = delivery.store([envelope("raw", organization_ids=("o1", "o2"), integration_id="7")])
    fetched = Payload.objects.get(pk=raw.pk)
    orm = Payload.objects.create(
        **{f.attname: getattr(raw, f.attname) for f in Payload._meta.concrete_fields if f.attname != "id"}
    )
    orm.refresh_from_db()
    for field in Payload._meta.concrete_fields:
        if field.attname not in ("id", "created_at", "updated_at"):
            assert getattr(fetched, field.attname) == getattr(orm, field.attname), field.attname
    assert fetched.created_at == raw.created_at and fetched.created_at.tzinfo is not None
    assert Envelope.from_json(fetched.envelope).id == raw.pk


def test_inside_a_callers_transaction_its_transaction_decides(groups: list[int]) -> None:
    with transaction.atomic():
        (row,) = delivery.store([envelope("inside")])
        assert Payload.objects.filter(pk=row.pk).exists()
        transaction.set_rollback(True)
    assert not Payload.objects.exists()
    assert groups == []  # not through the group: on the caller's own connection
