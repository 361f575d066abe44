"""Durable delivery: claims, leases, retries, circuit breakers, ordering, replay, sweeping."""

from __future__ import annotations

import datetime
import threading
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from silo_router.control import circuits, delivery
from silo_router.control.models import Payload, RegionCircuit
from silo_router.envelope import Envelope
from silo_router.transports import DeliveryError
from silo_router.transports.http import HttpTransport

from .conftest import RegionServer

pytestmark = pytest.mark.django_db(transaction=True)


def make(n: int = 1, *, region: str = "us", key: str = "k", integration: str | None = None) -> list[str]:
    envelopes = [
        Envelope(
            id=Envelope.make_id(f"{key}-{i}", region),
            idempotency_key=f"{key}-{i}",
            provider="slack",
            kind="event_callback:app_mention",
            region=region,
            body="{}",
            headers={},
            strategy="async",
            integration_id=integration,
        )
        for i in range(n)
    ]
    return [str(p.pk) for p in delivery.store(envelopes, kind_type="event_callback")]


def state(payload_id: str) -> Payload:
    return Payload.objects.get(pk=payload_id)


def swept(counts: dict[str, int]) -> tuple[int, int]:
    """(expired leases, republished payloads) of one sweep."""
    return counts["expired_leases"], counts["republished"]


def test_backoff_schedule(settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RETRY_JITTER": 0, "DELIVERY_MAX_BACKOFF": 20}
    assert [delivery.backoff(n) for n in (1, 2, 3, 4, 5, 6)] == [2, 4, 8, 16, 20, 20]
    assert delivery.backoff(1, slow=True) == 6
    assert delivery.backoff(1, retry_after=45) == 45
    assert delivery.backoff(1, retry_after=10_000) == 600  # RETRY_AFTER_MAX
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RETRY_JITTER": 0.25}
    delays = {delivery.backoff(3) for _ in range(50)}
    assert min(delays) >= 6 and max(delays) <= 10 and len(delays) > 1


def test_a_row_is_claimed_once(http_regions: RegionServer, published: list[Any]) -> None:
    (pid,) = make()
    first = delivery.claim(pid)
    assert first is not None and first.state == "in_flight" and first.attempts == 1 and first.lease_until
    assert delivery.claim(pid) is None


def test_concurrent_claims_have_one_winner(http_regions: RegionServer, published: list[Any]) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serializes writers; the compare-and-set is exercised by test_a_row_is_claimed_once")
    (pid,) = make()
    winners: list[bool] = []
    barrier = threading.Barrier(8)

    def race() -> None:
        barrier.wait()
        winners.append(delivery.claim(pid) is not None)
        connection.close()

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert winners.count(True) == 1


def test_no_transaction_is_open_while_the_region_is_called(
    http_regions: RegionServer, published: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    original = HttpTransport.deliver

    def spy(self: HttpTransport, sealed: Any, *, timeout: float, wait: bool) -> Any:
        raw = connection.connection
        in_tx = connection.in_atomic_block or bool(getattr(raw, "in_transaction", False))
        info = getattr(raw, "info", None)
        if info is not None and hasattr(info, "transaction_status"):
            in_tx = in_tx or info.transaction_status != 0  # psycopg: 0 is IDLE
        seen.append(in_tx)
        return original(self, sealed, timeout=timeout, wait=wait)

    monkeypatch.setattr(HttpTransport, "deliver", spy)
    for pid in make(3):
        assert delivery.deliver(pid) == "delivered"
    assert seen == [False, False, False]


def test_terminal_answer_goes_straight_to_failed(http_regions: RegionServer, published: list[Any]) -> None:
    (pid,) = make()
    http_regions.script[pid] = [(400, {"error": "malformed_envelope"}, {})]
    assert delivery.deliver(pid) == "failed"
    row = state(pid)
    assert (row.state, row.attempts, row.last_error) == ("failed", 1, "http_400: malformed_envelope")
    assert RegionCircuit.objects.filter(region="us", state="open").count() == 0


def test_retry_after_is_honoured(http_regions: RegionServer, published: list[Any]) -> None:
    (pid,) = make()
    http_regions.script[pid] = [(503, {"error": "busy"}, {"Retry-After": "120"})]
    before = timezone.now()
    assert delivery.deliver(pid) == "pending"
    row = state(pid)
    assert row.next_attempt_at is not None
    assert row.next_attempt_at - before >= datetime.timedelta(seconds=119)
    assert published[-1][1]["countdown"] >= 119  # the fast path is scheduled too


def test_exhausted_payload_is_kept_as_failed_and_replay_delivers_it(
    http_regions: RegionServer, published: list[Any], settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "DELIVERY_MAX_ATTEMPTS": 3}
    (pid,) = make()
    http_regions.script[pid] = [(500, {"error": "handler_failed"}, {})]
    for _ in range(3):
        Payload.objects.filter(pk=pid).update(next_attempt_at=None)
        delivery.deliver(pid)
    row = state(pid)
    assert (row.state, row.attempts) == ("failed", 3)
    # A poison payload says nothing about the region: its circuit stays closed.
    assert not RegionCircuit.objects.filter(region="us").exclude(state="closed").exists()
    http_regions.script[pid] = [(200, {"outcome": "handled", "response": None}, {})]
    assert delivery.replay([pid]) == 1
    assert published[-1][0] == pid
    assert delivery.deliver(pid) == "delivered"
    row = state(pid)
    assert (row.state, row.replays, row.attempts) == ("delivered", 1, 1)


def test_lease_of_a_dead_worker_expires_and_the_sweeper_republishes(
    http_regions: RegionServer, published: list[Any], settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SWEEP_GRACE": 0}
    (pid,) = make()
    assert delivery.claim(pid) is not None  # a worker claims it ... and dies
    Payload.objects.filter(pk=pid).update(lease_until=timezone.now() - datetime.timedelta(seconds=1))
    assert swept(delivery.sweep()) == (1, 1)
    assert published[-1][0] == pid
    assert delivery.deliver(pid) == "delivered"
    assert state(pid).attempts == 2


def test_sweeper_finds_payloads_whose_publish_was_lost(
    http_regions: RegionServer, published: list[Any], settings: Any
) -> None:
    ids = make(3)  # stored, never published (a crash between commit and publish)
    assert swept(delivery.sweep()) == (0, 0)  # within the grace period
    old = timezone.now() - datetime.timedelta(seconds=60)
    Payload.objects.filter(pk__in=ids).update(created_at=old, enqueued_at=old)
    assert delivery.sweep()["republished"] == 3
    assert {p for p, _ in published} == set(ids)
    assert delivery.sweep()["republished"] == 0  # just published: not again until the grace passes


def test_circuit_opens_holds_without_spending_attempts_and_probes(
    http_regions: RegionServer, published: list[Any], settings: Any
) -> None:
    ids = make(5, region="eu")  # nothing listens for eu
    for pid in ids[:3]:
        assert delivery.deliver(pid) == "pending"
    circuit = RegionCircuit.objects.get(region="eu")
    assert (circuit.state, circuit.failures) == ("open", 3)
    assert delivery.deliver(ids[3]) == "held"
    assert state(ids[3]).attempts == 0
    assert state(ids[3]).next_attempt_at == circuit.retry_at
    # Time passes: one probe goes through; it fails, so the circuit reopens for twice as long.
    RegionCircuit.objects.filter(region="eu").update(retry_at=timezone.now())
    assert delivery.deliver(ids[4]) == "pending"
    circuit.refresh_from_db()
    assert circuit.state == "open" and circuit.openings == 2
    assert circuit.retry_at - timezone.now() > datetime.timedelta(seconds=50)


def test_recovery_closes_the_circuit_and_drains_at_a_bounded_rate(
    http_regions: RegionServer, published: list[Any], settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SWEEP_BATCH": 2, "SWEEP_GRACE": 0}
    ids = make(6)
    RegionCircuit.objects.create(region="us", state="open", failures=5, openings=1, retry_at=timezone.now())
    past = timezone.now() - datetime.timedelta(seconds=5)
    Payload.objects.filter(pk__in=ids).update(next_attempt_at=past, enqueued_at=past)
    assert delivery.deliver(ids[0]) == "delivered"  # the probe
    assert RegionCircuit.objects.get(region="us").state == "closed"
    assert len(published) == 2  # the recovery sweep drained SWEEP_BATCH, not everything


def test_one_region_down_does_not_hold_back_another(http_regions: RegionServer, published: list[Any]) -> None:
    down = make(4, region="eu", key="eu")
    up = make(4, region="us", key="us")
    for a, b in zip(down, up, strict=True):
        delivery.deliver(a)
        assert delivery.deliver(b) == "delivered"
    assert RegionCircuit.objects.get(region="eu").state == "open"
    assert all(state(pid).state == "delivered" for pid in up)


def test_strict_order_delivers_one_at_a_time_per_key(
    http_regions: RegionServer, published: list[Any], settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "ORDERING": {"slack.event_callback": "strict"}}
    first, second, third = make(3, integration="7")
    other = make(1, key="other", integration="8")[0]
    assert state(first).ordering_key == "us|7"
    assert delivery.deliver(second) == "not_claimed"  # blocked behind the head of its key
    assert delivery.deliver(other) == "delivered"  # another key is not blocked
    assert delivery.deliver(first) == "delivered"
    assert published[-1][0] == second  # delivering the head wakes the next one
    Payload.objects.filter(pk=second).update(next_attempt_at=None)
    assert delivery.deliver(second) == "delivered"
    assert http_regions.received == [other, first, second]
    assert state(third).state == "pending"


def test_duplicate_store_is_not_an_error(http_regions: RegionServer, published: list[Any]) -> None:
    ids = make(2)
    assert make(2) == []
    assert Payload.objects.filter(pk__in=ids).count() == 2


def test_circuit_functions_directly() -> None:
    assert circuits.allow("nowhere").allowed
    circuits.record_failure("nowhere", "boom", probe=False)
    assert RegionCircuit.objects.get(region="nowhere").failures == 1
    assert circuits.record_success("nowhere") is False  # closed all along: nothing to drain
    assert RegionCircuit.objects.get(region="nowhere").failures == 0
    RegionCircuit.objects.filter(region="nowhere").update(state="open")
    assert circuits.record_success("nowhere") is True  # a recovery
    assert circuits.record_success("nowhere") is False


def test_delivery_error_region_fault_defaults() -> None:
    assert DeliveryError("x", retryable=True).region_fault
    assert not DeliveryError("x", retryable=False).region_fault
    assert not DeliveryError("x", retryable=True, region_fault=False).region_fault


def test_sweeper_sends_nothing_to_an_open_circuit_until_its_probe_is_due(
    http_regions: RegionServer, published: list[Any]
) -> None:
    ids = make(4, region="eu")
    RegionCircuit.objects.create(
        region="eu", state="open", failures=5, retry_at=timezone.now() + datetime.timedelta(seconds=60)
    )
    for pid in ids:
        assert delivery.deliver(pid) == "held"
    assert Payload.objects.filter(pk__in=ids, enqueued_at__isnull=True, attempts=0).count() == 4
    Payload.objects.filter(pk__in=ids).update(next_attempt_at=timezone.now())
    assert delivery.sweep()["republished"] == 0
    RegionCircuit.objects.filter(region="eu").update(retry_at=timezone.now())
    assert delivery.sweep()["republished"] == 1  # one message: the probe


def test_a_scheduled_retry_is_not_mistaken_for_a_lost_message(http_regions: RegionServer, published: list[Any]) -> None:
    (pid,) = make()
    http_regions.script[pid] = [(503, {"error": "busy"}, {"Retry-After": "40"})]
    assert delivery.deliver(pid) == "pending"
    row = state(pid)
    assert row.enqueued_at is not None and row.next_attempt_at is not None
    assert row.enqueued_at >= row.next_attempt_at - datetime.timedelta(seconds=1)
    Payload.objects.filter(pk=pid).update(next_attempt_at=timezone.now())  # due, message about to fire
    assert delivery.sweep()["republished"] == 0


@pytest.fixture
def celery_eu(settings: Any) -> None:
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "REGIONS": {**settings.SILO_ROUTER["REGIONS"], "eu": {"TRANSPORT": "celery"}},
        "SWEEP_GRACE": 0,
    }


@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")  # send_task goes to the memory broker
def test_queued_envelope_stays_leased_until_the_region_confirms(celery_eu: None, published: list[Any]) -> None:
    from silo_router import signing
    from silo_router.control.tasks import confirm_delivery

    handled, failed = make(2, region="eu")
    for pid in (handled, failed):
        assert delivery.deliver(pid) == "queued"
        row = state(pid)
        assert (row.state, row.lease_owner) == ("in_flight", "queued:eu")
    key = settings_key()
    good = signing.sign(signing.confirmation_message(handled, "handled", ""), key_id="k1", key=key)
    assert confirm_delivery(handled, "handled", "", good) == "delivered"
    with pytest.raises(Exception, match="signature"):
        confirm_delivery(failed, "handled", "", good)  # a signature for another message
    bad = signing.sign(signing.confirmation_message(failed, "failed", "ValueError"), key_id="k1", key=key)
    assert confirm_delivery(failed, "failed", "ValueError", bad) == "failed"
    assert state(failed).last_error == "region failed: ValueError"


@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")
def test_a_lost_queued_message_is_sent_again_after_its_lease(celery_eu: None, published: list[Any]) -> None:
    (pid,) = make(1, region="eu")
    assert delivery.deliver(pid) == "queued"
    Payload.objects.filter(pk=pid).update(lease_until=timezone.now() - datetime.timedelta(seconds=1))
    assert swept(delivery.sweep()) == (1, 1)
    assert state(pid).state == "pending"


def settings_key() -> str:
    from django.conf import settings

    return str(settings.SILO_ROUTER["SIGNING_KEYS"]["k1"])


def test_a_worker_whose_lease_expired_cannot_undo_the_next_claim(
    http_regions: RegionServer, published: list[Any]
) -> None:
    (pid,) = make()
    slow_worker = delivery.claim(pid)
    assert slow_worker is not None
    Payload.objects.filter(pk=pid).update(lease_until=timezone.now() - datetime.timedelta(seconds=1))
    delivery.sweep()
    Payload.objects.filter(pk=pid).update(state="in_flight", lease_owner="another-worker")  # claimed again
    assert delivery.record_failure(slow_worker, DeliveryError("timeout", retryable=True)) == "superseded"
    row = state(pid)
    assert (row.state, row.lease_owner) == ("in_flight", "another-worker")


def test_payloads_held_during_a_probe_are_released_when_it_succeeds(
    http_regions: RegionServer, published: list[Any], settings: Any
) -> None:
    probe, *held = make(4)
    RegionCircuit.objects.create(region="us", state="open", failures=5, retry_at=timezone.now())
    assert circuits.allow("us").probe  # someone else's probe is now in flight ...
    for pid in held:
        assert delivery.deliver(pid) == "held"  # ... so these wait, parked until the probe's lease ends
    assert all(state(pid).next_attempt_at > timezone.now() + datetime.timedelta(seconds=30) for pid in held)
    RegionCircuit.objects.filter(region="us").update(state="open", retry_at=timezone.now())
    assert delivery.deliver(probe) == "delivered"  # the probe succeeds
    assert {p for p, _ in published} == set(held)  # released and published at once, not 40 s later


def test_an_unused_probe_is_handed_back_without_reopening(http_regions: RegionServer, published: list[Any]) -> None:
    (pid,) = make()
    Payload.objects.filter(pk=pid).update(next_attempt_at=timezone.now() + datetime.timedelta(minutes=5))
    RegionCircuit.objects.create(region="us", state="open", failures=5, openings=1, retry_at=timezone.now())
    assert delivery.deliver(pid) == "not_claimed"  # won the probe, but the payload was not due
    circuit = RegionCircuit.objects.get(region="us")
    assert (circuit.state, circuit.openings) == ("open", 1)
    assert circuit.retry_at is not None and circuit.retry_at <= timezone.now()
