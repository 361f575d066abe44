"""Batches: one statement claims many rows, one transport call sends them, a backlog drains in chunks."""

from __future__ import annotations

import datetime
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from silo_router.control import delivery, tasks
from silo_router.control.models import Payload, PayloadAttempt, RegionCircuit
from silo_router.envelope import Envelope, Outcome, SealedEnvelope
from silo_router.region.handlers import slack
from silo_router.transports import BatchResult, NotSent, Receipt, Transport

from ..transports.conftest import make_envelope
from .test_delivery import make, state

pytestmark = pytest.mark.django_db(transaction=True)


def stored(count: int, *, tag: str, region: str = "us") -> list[str]:
    """``count`` real ``app_mention`` payloads for ``region``, oldest first."""
    return in_order([make_envelope(event_id=f"Ev{tag}{i:04d}", region=region) for i in range(count)])


def in_order(envelopes: Sequence[Envelope]) -> list[str]:
    """Store ``envelopes`` with a distinct, increasing ``created_at`` each; their ids."""
    ids = [str(p.pk) for p in delivery.store(envelopes)]
    base = timezone.now() - datetime.timedelta(minutes=5)
    for i, pid in enumerate(ids):  # a distinct, increasing created_at: "oldest first" is well defined
        Payload.objects.filter(pk=pid).update(created_at=base + datetime.timedelta(milliseconds=i))
    return ids


@pytest.fixture
def mentions() -> list[str]:
    """An ``app_mention`` handler recording the event ids it ran for."""
    seen: list[str] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        seen.append(request.payload["event_id"])

    return seen


@pytest.fixture
def drained(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str], dict[str, Any]]]:
    """Record the drain messages published instead of running them: (region, ids, options)."""
    sent: list[tuple[str, list[str], dict[str, Any]]] = []

    def record(args: tuple[str, list[str]], **options: Any) -> None:
        sent.append((args[0], list(args[1]), options))

    monkeypatch.setattr(tasks.drain_payloads, "apply_async", record)
    return sent


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the one-payload delivery messages published instead of running them."""
    sent: list[str] = []
    monkeypatch.setattr(tasks.deliver_payload, "apply_async", lambda args, **options: sent.append(args[0]))
    return sent


class CountingTransport(Transport):
    """A region that handles everything, counting its ``deliver_many`` calls."""

    batches: list[int] = []

    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        return Receipt(outcome=Outcome.HANDLED)

    def deliver_many(
        self, sealed_envelopes: Sequence[SealedEnvelope], *, timeout: float, wait: bool
    ) -> list[BatchResult]:
        CountingTransport.batches.append(len(sealed_envelopes))
        return super().deliver_many(sealed_envelopes, timeout=timeout, wait=wait)


class HalfSentTransport(Transport):
    """A batch that ran out of time after its first envelope."""

    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        raise AssertionError("only deliver_many is used")

    def deliver_many(
        self, sealed_envelopes: Sequence[SealedEnvelope], *, timeout: float, wait: bool
    ) -> list[BatchResult]:
        return [Receipt(outcome=Outcome.HANDLED), *(NotSent() for _ in sealed_envelopes[1:])]


@pytest.fixture
def counting(settings: Any) -> list[int]:
    CountingTransport.batches = []
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "REGIONS": {**settings.SILO_ROUTER["REGIONS"], "us": {"TRANSPORT": f"{__name__}.CountingTransport"}},
    }
    return CountingTransport.batches


# -- claim_batch ---------------------------------------------------------------------------------


def test_a_batch_claim_takes_due_rows_once_with_leases_and_counts_attempts() -> None:
    ids = make(5)
    claimed = delivery.claim_batch(ids=ids, limit=10)
    assert sorted(str(p.pk) for p in claimed) == sorted(ids)
    for payload in claimed:
        assert (payload.state, payload.attempts) == ("in_flight", 1)
        assert payload.lease_owner == delivery.worker_id() and payload.lease_until > timezone.now()
    assert delivery.claim_batch(ids=ids, limit=10) == []
    assert delivery.claim(ids[0]) is None


def test_a_batch_claim_takes_only_due_rows_and_leaves_strict_order_rows(settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "ORDERING": {"slack.event_callback": "strict"}}
    ordered = make(2, key="ordered", integration="7")
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "ORDERING": {}}
    later, now = make(2, key="unordered")
    Payload.objects.filter(pk=later).update(next_attempt_at=timezone.now() + datetime.timedelta(minutes=1))
    claimed = delivery.claim_batch(ids=[*ordered, later, now], limit=10)
    assert [str(p.pk) for p in claimed] == [now]
    assert state(later).state == state(ordered[0]).state == "pending"
    assert state(ordered[0]).attempts == 0


def test_a_batch_claim_takes_the_oldest_of_a_region_up_to_its_limit() -> None:
    us = stored(5, tag="Limit")
    stored(3, tag="Other", region="eu")
    claimed = delivery.claim_batch(region="us", limit=3)
    assert [str(p.pk) for p in claimed] == us[:3]
    assert [str(p.pk) for p in delivery.claim_batch(region="us", limit=10)] == us[3:]


def test_concurrent_batch_claims_never_share_a_row() -> None:
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serializes writers; PostgreSQL's SKIP LOCKED is what this races")
    ids = set(make(120))
    taken: list[list[str]] = []
    barrier = threading.Barrier(6)
    lock = threading.Lock()

    def claimer() -> None:
        barrier.wait()
        try:
            while batch := delivery.claim_batch(region="us", limit=7):
                with lock:
                    taken.append([str(p.pk) for p in batch])
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [pid for batch in taken for pid in batch]
    assert len(every) == len(set(every)) == len(ids)  # each row once, none left
    assert set(every) == ids
    assert Payload.objects.filter(pk__in=ids, attempts=1, state="in_flight").count() == len(ids)


# -- deliver_batch ---------------------------------------------------------------------------------


def test_a_batch_message_is_claimed_and_sent_in_one_call(counting: list[int]) -> None:
    ids = stored(4, tag="One")
    assert tasks.deliver_payloads(ids) == {"delivered": 4}
    assert counting == [4]
    assert all(state(pid).state == "delivered" for pid in ids)
    rows = PayloadAttempt.objects.filter(payload_id__in=ids)
    assert sorted((str(r.payload_id), r.number, r.outcome) for r in rows) == sorted(
        (pid, 1, "delivered") for pid in ids
    )
    assert tasks.deliver_payloads(ids) == {"not_pending": 4}  # a duplicate message changes nothing
    assert counting == [4]


def test_a_handler_failure_in_a_batch_retries_that_payload_only(published: list[str], settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RETRY_JITTER": 0}

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        if request.payload["event_id"].endswith("0001"):
            raise ValueError("poison")

    ids = stored(3, tag="Poison")
    assert delivery.deliver_batch(ids) == {"delivered": 2, "pending": 1}
    assert [state(pid).state for pid in ids] == ["delivered", "pending", "delivered"]
    failed = state(ids[1])
    assert (failed.attempts, failed.last_error) == (1, "ValueError in the event_callback:app_mention handler")
    assert published == [ids[1]]  # its retry is scheduled
    assert not RegionCircuit.objects.filter(region="us").exclude(state="closed").exists()


def mark_woken(ids: Sequence[str], *, woken: bool = True) -> None:
    """Mark rows as named by a message that still waits in the queue (a stored row is), or as not."""
    Payload.objects.filter(pk__in=ids).update(enqueued_at=timezone.now() if woken else None)


def test_a_batch_takes_with_its_own_rows_those_whose_messages_still_wait(counting: list[int]) -> None:
    us = stored(4, tag="Ahead")
    eu = stored(1, tag="AheadEu", region="eu")
    not_woken = stored(1, tag="AheadQuiet")
    not_due = stored(1, tag="AheadLater")
    mark_woken([*us, *eu, *not_due])
    mark_woken(not_woken, woken=False)  # e.g. put back by a batch that ran out of time: the sweeper's
    Payload.objects.filter(pk__in=not_due).update(next_attempt_at=timezone.now() + datetime.timedelta(minutes=5))

    assert tasks.deliver_payloads([us[2]]) == {"delivered": 4}
    assert counting == [4]  # one call: its own row and the three woken ones of its region
    assert all(state(pid).state == "delivered" for pid in us)
    assert [state(pid).state for pid in (*eu, *not_woken, *not_due)] == ["pending"] * 3
    # The messages of the rows taken ahead come later and find nothing to do.
    assert tasks.deliver_payloads([us[0]]) == {"not_pending": 1}
    assert tasks.deliver_payloads([us[3]]) == {"not_pending": 1}
    assert counting == [4]
    attempts = PayloadAttempt.objects.filter(payload_id__in=us)
    assert sorted((str(a.payload_id), a.number, a.outcome) for a in attempts) == sorted(
        (pid, 1, "delivered") for pid in us
    )


def test_a_batch_never_takes_ahead_a_synchronous_row_its_request_is_about_to_claim(counting: list[int]) -> None:
    """An options load stored while the provider waits: its request claims it; a worker's batch must
    not take it in between (the request would answer the fallback and the worker deliver it later)."""
    us = stored(2, tag="SyncAhead")
    sync = stored(2, tag="SyncOwn")
    mark_woken([*us, *sync])
    Payload.objects.filter(pk__in=sync).update(strategy="sync")
    Payload.objects.filter(pk=sync[1]).update(attempts=1)  # tried once and retried: any worker's now

    assert tasks.deliver_payloads([us[0]]) == {"delivered": 3}
    assert [state(pid).state for pid in us] == ["delivered", "delivered"]
    assert [state(pid).state for pid in sync] == ["pending", "delivered"]
    assert counting == [3]


def test_a_full_batch_takes_no_rows_ahead(counting: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A drain chunk names as many rows as a batch takes: it claims by id alone (no scan of the backlog)."""
    monkeypatch.setattr(delivery, "TAKE_AHEAD", 2)
    ids = stored(3, tag="Full")
    mark_woken(ids)
    with CaptureQueriesContext(connection) as queries:
        assert tasks.deliver_payloads(ids[1:]) == {"delivered": 2}
    claims = [q["sql"] for q in queries.captured_queries if q["sql"].startswith(("UPDATE", "WITH"))]
    assert claims and not any("IS NOT NULL AND" in sql for sql in claims)  # the ahead condition
    assert [state(pid).state for pid in ids] == ["pending", "delivered", "delivered"]


def test_a_retry_is_not_taken_ahead_before_its_backoff_ends(counting: list[int]) -> None:
    fresh, retrying = stored(1, tag="Fresh"), stored(1, tag="Retrying")
    # Within the second a message may arrive early by (clock skew): still not taken ahead.
    soon = timezone.now() + datetime.timedelta(milliseconds=500)
    Payload.objects.filter(pk__in=retrying).update(attempts=1, next_attempt_at=soon)
    mark_woken([*fresh, *retrying])
    assert tasks.deliver_payloads(fresh) == {"delivered": 1}
    assert (state(retrying[0]).state, state(retrying[0]).attempts) == ("pending", 1)
    assert tasks.deliver_payloads(retrying) == {"delivered": 1}  # its own message may take it early
    assert counting == [1, 1]


def test_a_batchs_own_rows_come_first_when_more_are_woken_than_it_takes(
    counting: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "TAKE_AHEAD", 3)
    ids = stored(5, tag="Crowd")
    mark_woken(ids)
    assert tasks.deliver_payloads([ids[4]]) == {"delivered": 3}
    assert [state(pid).state for pid in ids] == ["delivered", "delivered", "pending", "pending", "delivered"]
    assert tasks.deliver_payloads([ids[2]]) == {"delivered": 2}  # the rest, with the next message
    assert counting == [3, 2]


def test_an_open_circuit_holds_each_payload_of_a_batch_without_spending_attempts(counting: list[int]) -> None:
    ids = stored(3, tag="Held")
    retry_at = timezone.now() + datetime.timedelta(minutes=1)
    RegionCircuit.objects.create(region="us", state="open", failures=5, retry_at=retry_at)
    assert delivery.deliver_batch(ids) == {"held": 3}
    assert counting == []
    assert all((state(pid).state, state(pid).attempts) == ("pending", 0) for pid in ids)
    assert Payload.objects.filter(pk__in=ids, enqueued_at__isnull=True, next_attempt_at=retry_at).count() == 3


def test_strict_order_payloads_of_a_batch_go_one_at_a_time_in_order(
    mentions: list[str], published: list[str], settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "ORDERING": {"slack.event_callback": "strict"}}
    envelopes = [make_envelope(event_id=f"EvStrict{i}").replace(integration_id="7") for i in range(3)]
    ids = in_order(envelopes)
    outcomes = delivery.deliver_batch(list(reversed(ids)))  # the newest first: they must wait for the oldest
    assert outcomes == {"not_claimed": 2, "delivered": 1}
    assert mentions == ["EvStrict0"]
    assert published == [ids[1]]  # the head's delivery wakes the next one


def test_payloads_a_batch_never_sent_are_put_back_without_spending_an_attempt(settings: Any) -> None:
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "REGIONS": {**settings.SILO_ROUTER["REGIONS"], "us": {"TRANSPORT": f"{__name__}.HalfSentTransport"}},
    }
    first, *rest = stored(3, tag="Half")
    assert delivery.deliver_batch([first, *rest]) == {"delivered": 1, "not_sent": 2}
    assert state(first).state == "delivered"
    for pid in rest:
        row = state(pid)
        assert (row.state, row.attempts, row.lease_owner, row.enqueued_at) == ("pending", 0, "", None)
    assert not PayloadAttempt.objects.filter(payload_id__in=rest).exists()  # no attempt was made


# -- draining a backlog ------------------------------------------------------------------------------


def backlog(count: int, *, region: str = "us") -> list[str]:
    """``count`` payloads held behind ``region``'s open circuit (no message outstanding)."""
    ids = stored(count, tag=f"Backlog{region}", region=region)
    Payload.objects.filter(pk__in=ids).update(enqueued_at=None, next_attempt_at=timezone.now())
    return ids


def test_a_recovery_publishes_the_backlog_in_bounded_chunks(
    drained: list[tuple[str, list[str], dict[str, Any]]], published: list[str], settings: Any
) -> None:
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "REGIONS": {**settings.SILO_ROUTER["REGIONS"], "us": {"TRANSPORT": "local", "DELIVERY_QUEUE": "deliver.us"}},
    }
    ids = backlog(250)
    RegionCircuit.objects.create(region="us", state="open", failures=5, retry_at=timezone.now())
    delivery.note_region_up("us")
    chunk, outstanding = delivery.DRAIN_CHUNK, delivery.DRAIN_OUTSTANDING
    assert [(region, len(chunk_ids)) for region, chunk_ids, _ in drained] == [("us", chunk)] * outstanding
    assert [pid for _, chunk_ids, _ in drained for pid in chunk_ids] == ids[: chunk * outstanding]  # oldest first
    assert all(options["queue"] == "deliver.us" for _, _, options in drained)
    assert published == []  # no message per row
    assert delivery.drain("us") == 0  # as many chunks outstanding as allowed: nothing more yet


def test_each_chunk_publishes_the_next_until_the_backlog_is_empty(
    drained: list[tuple[str, list[str], dict[str, Any]]], counting: list[int]
) -> None:
    ids = backlog(230)
    assert delivery.sweep(regions=["us"], expire=False)["republished"] == 200
    done = 0
    while done < len(drained):  # a worker taking the chunks in order
        region, chunk_ids, _ = drained[done]
        delivery.drain_chunk(region, chunk_ids)
        done += 1
    assert [len(chunk_ids) for _, chunk_ids, _ in drained] == [100, 100, 30]
    assert counting == [100, 100, 30]
    assert Payload.objects.filter(pk__in=ids, state="delivered").count() == 230


def test_the_sweeper_sends_a_few_due_rows_one_by_one_and_a_backlog_in_chunks(
    drained: list[tuple[str, list[str], dict[str, Any]]], published: list[str], settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SWEEP_BATCH": 50}
    few = backlog(20, region="eu")
    many = backlog(150)
    counts = delivery.sweep()
    assert set(published) == set(few)
    assert [region for region, _, _ in drained] == ["us", "us"]
    assert {pid for _, chunk_ids, _ in drained for pid in chunk_ids} == set(many[:200])
    assert counts["republished"] == 20 + 150


def test_a_backlog_waits_while_its_circuit_is_open(drained: list[tuple[str, list[str], dict[str, Any]]]) -> None:
    backlog(150)
    RegionCircuit.objects.create(
        region="us", state="open", failures=5, retry_at=timezone.now() + datetime.timedelta(minutes=1)
    )
    assert delivery.drain("us") == 0
    assert delivery.sweep()["republished"] == 0
    assert drained == []


def test_another_regions_backlog_leaves_this_region_alone(
    drained: list[tuple[str, list[str], dict[str, Any]]], published: list[str]
) -> None:
    backlog(300, region="eu")
    fresh = backlog(3)
    delivery.sweep()
    assert set(published) == set(fresh)
    assert {region for region, _, _ in drained} == {"eu"}
    assert len(drained) == delivery.DRAIN_OUTSTANDING
