"""One attempt, every outcome: what control does with unhandled receipts, its own failures,
fleet-wide holds, queued copies, the synchronous path and the Loading modal's follow-up."""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from example_project.fake_slack import FakeSlack
from silo_router.control import circuits, delivery
from silo_router.control.models import Option, Payload, RegionCircuit
from silo_router.control.options import CONTROL_RESPONSES_ENABLED, OptionStore
from silo_router.envelope import Envelope, SealedEnvelope
from silo_router.transports import DeliveryError, Receipt, Transport

from ..loading_modal import stored_with_loading_modal
from .conftest import RegionServer
from .test_delivery import make, state

pytestmark = pytest.mark.django_db(transaction=True)

UNHANDLED = (200, {"outcome": "unhandled", "response": None}, {})
HANDLED = (200, {"outcome": "handled", "response": None}, {})


def due(pid: str) -> None:
    Payload.objects.filter(pk=pid).update(next_attempt_at=None)


def hold_error(reason: str) -> DeliveryError:
    """What a transport raises for a fleet-wide fault (``hold=True``)."""
    error = DeliveryError(reason, retryable=False)
    error.hold = True  # type: ignore[attr-defined]
    return error


class ExplodingTransport(Transport):
    """A transport with a bug: it raises something that is not a DeliveryError."""

    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        raise RuntimeError("transport bug")


class RefusingTransport(Transport):
    """A region that refuses every envelope for a fleet-wide reason (``OPTIONS['REASON']``)."""

    calls = 0

    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        RefusingTransport.calls += 1
        raise hold_error(str(self.options["REASON"]))


# -- 1. "unhandled" keeps the payload alive ------------------------------------------------


def test_an_unhandled_receipt_keeps_the_payload_pending_then_failed_then_replayable(
    http_regions: RegionServer, published: list[Any], settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "DELIVERY_MAX_ATTEMPTS": 3}
    (pid,) = make()
    http_regions.script[pid] = [UNHANDLED]
    assert delivery.deliver(pid) == "pending"
    row = state(pid)
    assert (row.state, row.last_error) == ("pending", "no handler for event_callback:app_mention in region us")
    assert not RegionCircuit.objects.filter(region="us").exclude(state="closed").exists()  # not the region's fault
    for _ in range(2):
        due(pid)
        delivery.deliver(pid)
    assert (state(pid).state, state(pid).attempts) == ("failed", 3)
    http_regions.script[pid] = [HANDLED]  # the handler is deployed
    assert delivery.replay([pid]) == 1
    assert delivery.deliver(pid) == "delivered"


# -- 2. failures inside control are counted and end in failed -------------------------------


def _break_corrupt_row(settings: Any, pid: str) -> None:
    Payload.objects.filter(pk=pid).update(envelope="{not json")


def _break_region_removed(settings: Any, pid: str) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "REGIONS": {"eu": settings.SILO_ROUTER["REGIONS"]["eu"]}}


def _break_transport_without_url(settings: Any, pid: str) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "REGIONS": {"us": {"TRANSPORT": "http"}}}


def _break_signing_key(settings: Any, pid: str) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SIGNING_KEY_ID": "no-such-key"}


def _break_transport_bug(settings: Any, pid: str) -> None:
    path = f"{__name__}.ExplodingTransport"
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "REGIONS": {"us": {"TRANSPORT": path}}}


@pytest.mark.parametrize(
    ("breakage", "cause"),
    [
        (_break_corrupt_row, "EnvelopeRejected"),
        (_break_region_removed, "'us' is not in SILO_ROUTER['REGIONS']"),
        (_break_transport_without_url, "URL"),
        (_break_signing_key, "SIGNING_KEY_ID"),
        (_break_transport_bug, "RuntimeError: transport bug"),
    ],
)
def test_a_failure_inside_control_is_counted_and_reaches_failed_with_its_real_error(
    http_regions: RegionServer, published: list[Any], settings: Any, breakage: Any, cause: str
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "DELIVERY_MAX_ATTEMPTS": 3, "SWEEP_GRACE": 0}
    (pid,) = make()
    breakage(settings, pid)
    outcomes = []
    for _ in range(5):  # more rounds than attempts: it must stop at the cap, not loop
        due(pid)
        outcomes.append(delivery.deliver(pid))
        delivery.sweep()
    row = state(pid)
    assert (row.state, row.attempts) == ("failed", 3)
    assert cause in row.last_error and "lease expired" not in row.last_error
    assert outcomes[:3] == ["pending", "pending", "failed"]
    assert not RegionCircuit.objects.filter(region="us").exclude(state="closed").exists()
    assert http_regions.received == []


def test_an_expired_lease_at_the_cap_fails_and_keeps_the_real_error(
    http_regions: RegionServer, published: list[Any], settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "DELIVERY_MAX_ATTEMPTS": 3}
    (pid,) = make()
    Payload.objects.filter(pk=pid).update(attempts=2, last_error="http_500: handler_failed")
    assert delivery.claim(pid) is not None  # the third attempt ... and its worker dies
    Payload.objects.filter(pk=pid).update(lease_until=timezone.now() - datetime.timedelta(seconds=1))
    delivery.sweep()
    row = state(pid)
    assert (row.state, row.attempts, row.last_error) == ("failed", 3, "http_500: handler_failed")


def test_a_worker_killing_message_is_not_requeued_without_limit() -> None:
    from silo_router.control.tasks import deliver_payload, deliver_payloads

    for task in (deliver_payload, deliver_payloads):
        assert task.acks_late and not task.reject_on_worker_lost


# -- 4. the celery transport: bounded republishing, no flapping -----------------------------


@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")  # send_task goes to the memory broker
def test_queued_copies_are_bounded_while_the_regions_workers_are_down(published: list[Any], settings: Any) -> None:
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "REGIONS": {**settings.SILO_ROUTER["REGIONS"], "eu": {"TRANSPORT": "celery"}},
        "SWEEP_GRACE": 0,
        "DELIVERY_MAX_ATTEMPTS": 3,
    }
    (pid,) = make(1, region="eu")
    queued = 0
    for _ in range(6):  # nobody confirms: each copy's lease runs out
        due(pid)
        if delivery.deliver(pid) == "queued":
            queued += 1
        Payload.objects.filter(pk=pid, state="in_flight").update(
            lease_until=timezone.now() - datetime.timedelta(seconds=1)
        )
        delivery.sweep()
    row = state(pid)
    assert (queued, row.state, row.attempts) == (3, "failed", 3)
    assert "did not confirm" in row.last_error
    # A copy is handled at last: that is the truth, recorded once and for good.
    assert delivery.confirm(pid, outcome="handled") == "delivered"
    row = state(pid)
    assert row.state == "delivered" and "after it had been marked failed" in row.last_error
    assert delivery.confirm(pid, outcome="failed", reason="ValueError") == "stale"
    assert delivery.confirm(pid, outcome="rejected", reason="stale signature") == "stale"
    assert state(pid).state == "delivered"


@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")
def test_an_unhandled_confirmation_is_retried_not_delivered(published: list[Any], settings: Any) -> None:
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "REGIONS": {**settings.SILO_ROUTER["REGIONS"], "eu": {"TRANSPORT": "celery"}},
    }
    (pid,) = make(1, region="eu")
    assert delivery.deliver(pid) == "queued"
    assert delivery.confirm(pid, outcome="unhandled") == "pending"
    assert state(pid).last_error == "no handler for event_callback:app_mention in region eu"


# -- 5. store never acknowledges rows it did not insert -------------------------------------


def test_store_returns_only_the_rows_it_inserted_when_other_copies_commit_first(
    http_regions: RegionServer, published: list[Any]
) -> None:
    envelopes = [
        Envelope(
            id=Envelope.make_id(f"race-{i}", "us"),
            idempotency_key=f"race-{i}",
            provider="slack",
            kind="event_callback:app_mention",
            region="us",
            body="{}",
            headers={},
            strategy="async",
        )
        for i in range(4)
    ]
    delivery.store(envelopes[:1])  # the first copy is already stored
    inserting = threading.local()

    def another_copy_commits(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        # Just before this call's insert runs, two other copies commit their rows.
        if sql.lstrip().upper().startswith("INSERT") and not getattr(inserting, "on", False):
            inserting.on = True
            try:
                delivery.store(envelopes[1:2])
                delivery.store(envelopes[2:3])
            finally:
                inserting.on = False
        return execute(sql, params, many, context)

    with connection.execute_wrapper(another_copy_commits):
        inserted = delivery.store(envelopes)
    assert [str(p.pk) for p in inserted] == [envelopes[3].id]
    assert Payload.objects.count() == 4


# -- 7. the Loading modal's follow-up is durable ---------------------------------------------


@pytest.fixture
def fake(settings: Any) -> Iterator[FakeSlack]:
    with FakeSlack(signing_secret=settings.SLACK_SIGNING_SECRET, bot_token="xoxb-tests") as server:
        settings.SILO_ROUTER = {
            **settings.SILO_ROUTER,
            "SLACK": {**settings.SILO_ROUTER["SLACK"], "API_URL": server.api_url},
        }
        yield server


def _shown(fake: FakeSlack, view: Mapping[str, Any]) -> str:
    return str(fake.views[view["id"]])


def test_the_sweeper_checks_a_loading_modal_and_the_final_outcome_replaces_taking_longer(
    http_regions: RegionServer, published: list[Any], fake: FakeSlack, settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "LOADING_VIEW_TIMEOUT": 0}
    pid, view = stored_with_loading_modal(fake)
    stored = state(pid).envelope
    http_regions.script[pid] = [(503, {"error": "busy"}, {})]
    assert delivery.deliver(pid) == "pending"  # a retry is coming: the user is not told "failed"
    assert fake.calls("views.update") == []
    assert delivery.sweep()["loading_checks"] == 1  # no broker message needed: the row says it is due
    assert "longer than expected" in _shown(fake, view)
    assert delivery.sweep()["loading_checks"] == 0  # checked once
    first_hash = state(pid).loading_view_hash
    assert first_hash and first_hash != view["hash"]
    http_regions.script[pid] = [HANDLED]
    due(pid)
    assert delivery.deliver(pid) == "delivered"
    assert "longer than expected" not in _shown(fake, view)  # the user learns it is done
    assert [c.error for c in fake.calls("views.update")] == [None, None]
    assert state(pid).envelope == stored  # the hash lives in its own column


def test_a_final_failure_replaces_taking_longer(
    http_regions: RegionServer, published: list[Any], fake: FakeSlack, settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "LOADING_VIEW_TIMEOUT": 0, "DELIVERY_MAX_ATTEMPTS": 2}
    pid, view = stored_with_loading_modal(fake)
    http_regions.script[pid] = [(500, {"error": "handler_failed"}, {})]
    delivery.deliver(pid)
    delivery.sweep()
    assert "longer than expected" in _shown(fake, view)
    due(pid)
    assert delivery.deliver(pid) == "failed"
    assert "could not be completed" in _shown(fake, view)
    assert [c.error for c in fake.calls("views.update")] == [None, None]


# -- 8. the synchronous path shares the attempt ----------------------------------------------


def _sync_envelope(region: str = "us", key: str = "sync") -> Envelope:
    return Envelope(
        id=Envelope.make_id(key, region),
        idempotency_key=key,
        provider="slack",
        kind="view_submission:create_issue",
        region=region,
        body="{}",
        headers={},
        strategy="sync",
    )


def test_deliver_sync_returns_the_receipt(http_regions: RegionServer, published: list[Any]) -> None:
    envelope = _sync_envelope()
    http_regions.script[envelope.id] = [(200, {"outcome": "handled", "response": {"response_action": "clear"}}, {})]
    receipt = delivery.deliver_sync(envelope, budget=2.0, read_only=False)
    assert receipt is not None and receipt.response == {"response_action": "clear"}
    assert state(envelope.id).state == "delivered"


def test_deliver_sync_respects_an_open_circuit(http_regions: RegionServer, published: list[Any]) -> None:
    RegionCircuit.objects.create(region="us", state="open", retry_at=timezone.now() + datetime.timedelta(minutes=1))
    changes_state, read_only = _sync_envelope(key="a"), _sync_envelope(key="b")
    assert delivery.deliver_sync(changes_state, budget=2.0, read_only=False) is None
    assert delivery.deliver_sync(read_only, budget=2.0, read_only=True) is None
    assert http_regions.received == []
    assert (state(changes_state.id).state, state(changes_state.id).attempts) == ("pending", 0)  # sent later
    assert state(read_only.id).state == "failed"  # an options answer is useless later


def test_deliver_sync_feeds_the_circuit(http_regions: RegionServer, published: list[Any], settings: Any) -> None:
    for i in range(3):  # CIRCUIT_FAILURE_THRESHOLD in these tests; nothing listens for eu
        assert delivery.deliver_sync(_sync_envelope("eu", key=f"k{i}"), budget=2.0, read_only=False) is None
    assert RegionCircuit.objects.get(region="eu").state == "open"


def test_deliver_sync_never_delivers_a_row_it_did_not_claim(http_regions: RegionServer, published: list[Any]) -> None:
    envelope = _sync_envelope()
    delivery.store([envelope])
    worker = delivery.claim(envelope.id)  # a worker holds it
    assert worker is not None
    assert delivery.deliver_sync(envelope, budget=2.0, read_only=False) is None
    assert http_regions.received == []
    row = state(envelope.id)
    assert (row.state, row.lease_owner) == ("in_flight", worker.lease_owner)


def test_deliver_sync_with_no_budget_left_does_not_blame_the_region(
    http_regions: RegionServer, published: list[Any]
) -> None:
    envelope = _sync_envelope()
    assert delivery.deliver_sync(envelope, budget=0.0, read_only=False) is None
    assert http_regions.received == []
    assert state(envelope.id).state == "pending"
    assert not RegionCircuit.objects.filter(region="us", failures__gt=0).exists()


def test_publish_new_wakes_workers_for_the_stored_payloads(http_regions: RegionServer, published: list[Any]) -> None:
    ids = make(2)
    delivery.publish_new(list(Payload.objects.filter(pk__in=ids)))
    assert {pid for pid, _ in published} == set(ids)


# -- 12. fleet-wide faults hold -------------------------------------------------------------


@pytest.mark.parametrize(
    "reason",
    [
        "http_401: signature_mismatch",
        "http_403: wrong_region",
        "http_404: ingress has no route",
        "http_405: method not allowed",
        "unsupported_version: envelope version 2",
    ],
)
def test_a_fleet_wide_fault_holds_the_region_and_never_fails_the_payload(
    published: list[Any], settings: Any, caplog: pytest.LogCaptureFixture, reason: str
) -> None:
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "REGIONS": {"us": {"TRANSPORT": f"{__name__}.RefusingTransport", "REASON": reason}},
        "DELIVERY_MAX_ATTEMPTS": 2,
    }
    ids = make(3)
    with caplog.at_level(logging.ERROR, logger="silo_router.delivery"):
        assert delivery.deliver(ids[0]) == "held"
    circuit = RegionCircuit.objects.get(region="us")
    assert circuit.state == "open" and reason in circuit.last_error
    assert any(r.levelno == logging.ERROR and reason in r.getMessage() for r in caplog.records)
    assert delivery.deliver(ids[1]) == "held"  # the others wait behind the circuit
    RefusingTransport.calls = 0
    for _ in range(4):  # probes keep finding the fault: more rounds than attempts
        RegionCircuit.objects.filter(region="us").update(retry_at=timezone.now())
        due(ids[0])
        assert delivery.deliver(ids[0]) == "held"
    assert RefusingTransport.calls == 4
    rows = Payload.objects.filter(pk__in=ids)
    assert {(r.state, r.attempts) for r in rows} == {("pending", 0)}


# -- races ----------------------------------------------------------------------------------


def test_concurrent_failures_open_the_circuit_once(settings: Any) -> None:
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serializes writers; PostgreSQL shows the race")
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "CIRCUIT_FAILURE_THRESHOLD": 1}
    barrier = threading.Barrier(8)

    def fail() -> None:
        barrier.wait()
        circuits.record_failure("us", "connection refused", probe=False)
        connection.close()

    threads = [threading.Thread(target=fail) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    circuit = RegionCircuit.objects.get(region="us")
    assert (circuit.state, circuit.failures, circuit.openings) == ("open", 8, 1)


def test_a_success_on_a_closed_circuit_does_not_drain_inline(
    http_regions: RegionServer, published: list[Any], settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SWEEP_GRACE": 0}
    lost = make(4, key="lost")  # their messages were lost: the sweeper's job, at its rate
    old = timezone.now() - datetime.timedelta(minutes=5)
    Payload.objects.filter(pk__in=lost).update(enqueued_at=old)
    RegionCircuit.objects.create(region="us", state="closed", failures=2)
    (pid,) = make(1, key="now")
    assert delivery.deliver(pid) == "delivered"
    assert published == []
    assert RegionCircuit.objects.get(region="us").failures == 0


def test_worker_ids_are_unique_per_thread_and_fit_the_column() -> None:
    seen: list[str] = []

    def record() -> None:
        seen.append(delivery.worker_id())

    threads = [threading.Thread(target=record) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    width = Payload._meta.get_field("lease_owner").max_length
    assert len(set(seen)) == 20 and all(len(w) <= width for w in seen)
    assert delivery.worker_id() == delivery.worker_id()  # stable within a thread


def test_the_first_options_read_of_a_process_waits_for_the_first_load() -> None:
    Option.objects.update_or_create(key=CONTROL_RESPONSES_ENABLED, defaults={"value": True})
    store = OptionStore()
    store._lock.acquire()  # another thread is doing the first load right now
    seen: list[Any] = []
    reader = threading.Thread(target=lambda: (seen.append(store.get(CONTROL_RESPONSES_ENABLED)), connection.close()))
    reader.start()
    reader.join(timeout=0.2)
    store._lock.release()
    reader.join()
    assert seen == [True]  # not the default (False)


def test_a_predecessor_that_becomes_active_after_the_check_is_not_overtaken(settings: Any) -> None:
    """The strict-order check is part of the claiming statement, not only a query before it."""
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "ORDERING": {"slack.event_callback": "strict"}}
    first, second = make(2, key="ord", integration="7")
    Payload.objects.filter(pk=first).update(state=Payload.State.DELIVERED)
    checked: list[bool] = []
    original = delivery._has_predecessor

    def check_then_reopen(*args: Any) -> bool:
        # Between the check and the claim, the first payload is replayed (active again).
        checked.append(original(*args))
        Payload.objects.filter(pk=first).update(state=Payload.State.PENDING)
        return checked[-1]

    delivery._has_predecessor = check_then_reopen  # type: ignore[assignment]
    try:
        assert delivery.claim(second) is None
    finally:
        delivery._has_predecessor = original  # type: ignore[assignment]
    assert checked == [False]
    assert Payload.objects.get(pk=second).state == Payload.State.PENDING
