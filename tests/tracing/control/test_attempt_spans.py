"""Delivery attempts as Sentry receives them: in the request's trace, or a trace of their own, linked."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from silo_router import signing
from silo_router.control import delivery, rerouting, tasks
from silo_router.control.models import Payload, PayloadAttempt, RegionCircuit
from silo_router.region.handlers import slack
from silo_router.tracing import metrics

from ...sentry_capture import Captured, Span
from ...slack_signing import event_callback, post_slack

pytestmark = pytest.mark.django_db(transaction=True)

REQUEST = "silo_router.control.request"
ATTEMPT = "silo_router.control.attempt"


def post_event(client: Client, event_id: str) -> str:
    """Post an app_mention for the us workspace; return its payload's id."""
    body = json.dumps(event_callback(event_id=event_id)).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    return str(Payload.objects.get(idempotency_key=f"slack:event:{event_id}").pk)


def parent_of(captured: Captured, span: Span) -> Span:
    (parent,) = [other for other in captured.spans() if other.span_id == span.parent_span_id]
    return parent


@pytest.fixture
def handled() -> list[str]:
    seen: list[str] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        seen.append("handled")

    return seen


@pytest.fixture
def undelivered(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The request's wake-up message is lost (the broker dropped it); ``.undo()`` restores the broker."""
    monkeypatch.setattr(tasks.deliver_payloads, "apply_async", lambda *args, **kwargs: None)
    return monkeypatch


def test_an_attempt_is_a_child_of_the_deliver_task_in_the_requests_trace(
    client: Client, installations: Any, captured: Captured, handled: list[str]
) -> None:
    payload_id = post_event(client, "EvChild")
    assert handled == ["handled"]
    request = captured.one(REQUEST)
    attempt = captured.one(ATTEMPT)
    assert attempt.trace_id == request.trace_id
    task = parent_of(captured, attempt)
    assert task.op == "queue.process"  # Celery's integration: the wake-up task, continuing the request's trace
    assert task.description == "silo_router.control.deliver_batch"
    assert attempt["provider"] == "slack"
    assert attempt["kind"] == "event_callback:app_mention"
    assert attempt["region"] == "us"
    assert attempt["envelope_id"] == attempt["payload_id"] == payload_id
    assert attempt["attempt"] == 1
    assert (attempt["retry"], attempt["replay"], attempt["late"]) == (False, False, False)
    assert attempt["outcome"] == "delivered"
    assert attempt["receipt"] == "handled"
    assert attempt["circuit"] == "closed"
    assert attempt.tags["silo_router.outcome"] == "delivered"
    assert attempt.tags["silo_router.circuit"] == "closed"
    assert "silo_router.envelope_id" not in attempt.tags  # ids are data, not tags
    assert attempt.data["messaging.operation.type"] == "send"
    assert attempt.data["messaging.destination.name"] == "us"
    assert attempt.data["messaging.message.id"] == payload_id
    assert attempt.links == ()
    assert "silo_router.region.receive" in {s.op for s in captured.spans() if s.parent_span_id == attempt.span_id}

    (row,) = PayloadAttempt.objects.filter(payload_id=payload_id)
    assert (row.number, row.outcome, row.receipt) == (1, "delivered", "handled")
    assert (row.trace_id, row.span_id) == (attempt.trace_id, attempt.span_id)
    (counted,) = captured.metrics(metrics.ATTEMPTS)
    assert counted["type"] == "counter"
    assert counted["attributes"] == {"outcome": "delivered", "region": "us"}


def test_a_retry_in_the_requests_trace_stays_a_child_there(
    client: Client, installations: Any, captured: Captured, settings: Any
) -> None:
    # A backoff shorter than the early-claim allowance: the eager retry may claim the row at once.
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RETRY_JITTER": 0, "DELIVERY_BACKOFF": 0.1}
    calls: list[int] = []

    @slack.event("app_mention")
    def flaky(request: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the region's database blinked")

    payload_id = post_event(client, "EvRetry")
    request = captured.one(REQUEST)
    first, second = sorted(captured.all(ATTEMPT), key=lambda span: span["attempt"])
    assert {first.trace_id, second.trace_id} == {request.trace_id}
    assert first["outcome"] == "retry"
    assert first.status == "internal_error"
    assert first["retry_in_s"] > 0
    assert first["error"]
    assert (second["attempt"], second["retry"], second["outcome"]) == (2, True, "delivered")
    assert second.links == ()
    outcomes = sorted(PayloadAttempt.objects.filter(payload_id=payload_id).values_list("number", "outcome"))
    assert outcomes == [(1, "retry"), (2, "delivered")]


def test_a_held_payload_gets_an_attempt_span_with_the_circuit_state(
    client: Client, installations: Any, captured: Captured, handled: list[str]
) -> None:
    RegionCircuit.objects.create(
        region="us", state="open", retry_at=timezone.now() + datetime.timedelta(seconds=60), last_error="down"
    )
    payload_id = post_event(client, "EvHeld")
    assert handled == []
    request = captured.one(REQUEST)
    attempt = captured.one(ATTEMPT)
    assert attempt.trace_id == request.trace_id
    assert attempt["outcome"] == "held"
    assert attempt["circuit"] == "open"
    assert 50 < attempt["retry_in_s"] <= 60
    assert attempt["attempt"] == 1  # the attempt it would have been: not spent
    assert attempt["error"] == "held: the region's circuit is open"
    (row,) = PayloadAttempt.objects.filter(payload_id=payload_id)
    assert (row.number, row.outcome) == (1, "held")
    assert Payload.objects.get(pk=payload_id).attempts == 0
    assert captured.metrics(metrics.ATTEMPTS)[0]["attributes"] == {"outcome": "held", "region": "us"}

    # The region recovers: the held payload goes out seconds later, as a trace of its own.
    RegionCircuit.objects.filter(region="us").update(state="closed", retry_at=None)
    Payload.objects.filter(pk=payload_id).update(next_attempt_at=timezone.now())
    assert delivery.sweep()["republished"] == 1
    assert handled == ["handled"]
    released = next(span for span in captured.all(ATTEMPT) if span["outcome"] == "delivered")
    assert released.is_root and released.trace_id != request.trace_id
    assert (released["attempt"], released["late"], released["circuit"]) == (1, True, "closed")
    assert [link["trace_id"] for link in released.links] == [request.trace_id]


def test_a_sweep_redelivery_is_a_new_trace_linked_to_the_requests(
    client: Client, installations: Any, captured: Captured, handled: list[str], undelivered: pytest.MonkeyPatch
) -> None:
    payload_id = post_event(client, "EvSwept")
    assert handled == []
    long_ago = timezone.now() - datetime.timedelta(minutes=5)
    Payload.objects.filter(pk=payload_id).update(created_at=long_ago, enqueued_at=long_ago)
    undelivered.undo()  # the broker is back; the sweeper finds the payload whose message was lost

    assert delivery.sweep()["republished"] == 1
    assert handled == ["handled"]
    request = captured.one(REQUEST)
    sweep = captured.one("silo_router.control.sweep")
    assert sweep["republished"] == 1
    attempt = captured.one(ATTEMPT)
    assert attempt.is_root  # a transaction of its own...
    assert attempt.trace_id not in (request.trace_id, sweep.trace_id)  # ...in a trace of its own
    (link,) = attempt.links
    assert link["trace_id"] == request.trace_id
    assert link["attributes"] == {"sentry.link.type": "silo_router.caused_by"}
    assert link["sampled"] is True
    assert attempt.data["silo_router.caused_by"] == request.trace_id  # searchable, unlike the link
    assert attempt["late"] is True
    assert attempt["outcome"] == "delivered"
    region = [span for span in captured.spans() if span.op == "silo_router.region.receive"]
    assert [span.trace_id for span in region] == [attempt.trace_id]
    (row,) = PayloadAttempt.objects.filter(payload_id=payload_id)
    assert row.trace_id == attempt.trace_id
    assert Payload.objects.get(pk=payload_id).trace_id == request.trace_id


def test_a_replay_is_a_new_trace_that_says_so(
    client: Client, installations: Any, captured: Captured, handled: list[str]
) -> None:
    payload_id = post_event(client, "EvReplayed")
    request = captured.one(REQUEST)
    Payload.objects.filter(pk=payload_id).update(state="failed")
    result = rerouting.replay([payload_id])
    assert result.replayed == 1
    replay = captured.one("silo_router.control.replay")
    assert (replay["requested"], replay["replayed"]) == (1, 1)
    second = next(span for span in captured.all(ATTEMPT) if span.get("replay"))
    assert second.trace_id != request.trace_id
    assert (second["replays"], second["attempt"], second["outcome"]) == (1, 1, "delivered")
    assert second["receipt"] == "duplicate"  # the region had handled it: no second effect
    assert [link["trace_id"] for link in second.links] == [request.trace_id]
    assert handled == ["handled"]
    assert sorted(PayloadAttempt.objects.filter(payload_id=payload_id).values_list("replay", "number")) == [
        (0, 1),
        (1, 1),
    ]


def test_a_message_for_a_payload_no_longer_pending_leaves_a_span(
    client: Client, installations: Any, captured: Captured, handled: list[str]
) -> None:
    payload_id = post_event(client, "EvTwiceSent")
    assert delivery.deliver(payload_id) == "not_pending"
    late = next(span for span in captured.all(ATTEMPT) if span["outcome"] == "not_pending")
    assert late["state"] == "delivered"
    assert late["payload_id"] == payload_id
    assert PayloadAttempt.objects.filter(payload_id=payload_id).count() == 1  # not an attempt on the payload


@pytest.mark.filterwarnings("ignore::celery.exceptions.AlwaysEagerIgnored")  # send_task goes to the memory broker
def test_a_region_confirmation_settles_the_envelope(
    client: Client, installations: Any, captured: Captured, settings: Any
) -> None:
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "REGIONS": {**settings.SILO_ROUTER["REGIONS"], "us": {"TRANSPORT": "celery"}},
    }
    payload_id = post_event(client, "EvQueued")
    assert captured.one(ATTEMPT)["outcome"] == "queued"
    key = settings.SILO_ROUTER["SIGNING_KEYS"]["k1"]
    signature = signing.sign(signing.confirmation_message(payload_id, "handled", ""), key_id="k1", key=key)
    confirm_delivery = tasks.confirm_delivery.apply  # as a control worker runs it
    assert confirm_delivery((payload_id, "handled", "", signature)).get() == "delivered"
    confirm = captured.one("silo_router.control.confirm")
    assert confirm["outcome"] == "delivered"
    assert confirm["receipt"] == "handled"
    assert confirm.data["messaging.operation.type"] == "settle"
    assert confirm.data["messaging.message.id"] == payload_id
    (row,) = PayloadAttempt.objects.filter(payload_id=payload_id)
    assert (row.outcome, row.receipt) == ("queued", "handled")
    assert row.confirmed_at is not None

    with pytest.raises(Exception, match="signature"):
        confirm_delivery((payload_id, "failed", "", signature)).get()  # a signature for another message
    refused = [span for span in captured.all("silo_router.control.confirm") if span.get("rejected")]
    assert refused[0].status == "internal_error"


def test_old_attempts_are_pruned_by_the_sweep(client: Client, installations: Any, handled: list[str]) -> None:
    payload_id = post_event(client, "EvOld")
    PayloadAttempt.objects.filter(payload_id=payload_id).update(started_at=timezone.now() - datetime.timedelta(days=15))
    assert delivery.sweep()["pruned_attempts"] == 1
    assert not PayloadAttempt.objects.filter(payload_id=payload_id).exists()
    assert Payload.objects.filter(pk=payload_id).exists()


def test_a_retry_outside_the_requests_trace_is_linked_and_names_the_attempt_it_retries(
    client: Client, installations: Any, captured: Captured, settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RETRY_JITTER": 0, "DELIVERY_BACKOFF": 30.0}
    calls: list[int] = []

    @slack.event("app_mention")
    def flaky(request: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the region's database blinked")

    payload_id = post_event(client, "EvLaterRetry")
    request = captured.one(REQUEST)
    (first,) = [span for span in captured.all(ATTEMPT) if span["outcome"] == "retry"]
    assert first["retry_in_s"] == 30.0
    # Celery's countdown is not honoured in eager mode: the early message finds nothing due.
    assert [span["outcome"] for span in captured.all(ATTEMPT) if span.span_id != first.span_id] == ["not_claimed"]
    Payload.objects.filter(pk=payload_id).update(next_attempt_at=timezone.now())

    assert delivery.deliver(payload_id) == "delivered"  # a worker that did not continue the request's trace
    (second,) = [span for span in captured.all(ATTEMPT) if span.get("attempt") == 2]
    assert second.is_root and second.trace_id != request.trace_id
    assert (second["retry"], second["retry_of"], second["late"]) == (True, first.span_id, True)
    assert [link["trace_id"] for link in second.links] == [request.trace_id]


def test_token_rotation_is_a_span_with_its_count(captured: Captured) -> None:
    assert tasks.rotate_tokens.apply().get() == 0  # as a worker runs it
    rotation = captured.one("silo_router.control.rotate_tokens")
    assert (rotation["rotated"], rotation["provider"]) == (0, "slack")
    assert parent_of(captured, rotation).op == "queue.process"


def test_a_region_that_recovers_releases_its_held_payloads_in_a_span(
    client: Client, installations: Any, captured: Captured, handled: list[str], undelivered: pytest.MonkeyPatch
) -> None:
    payload_id = post_event(client, "EvReleased")
    Payload.objects.filter(pk=payload_id).update(enqueued_at=None)  # held: no message outstanding
    RegionCircuit.objects.create(region="us", state="half_open", retry_at=timezone.now())
    undelivered.undo()
    delivery.note_region_up("us")
    region_up = captured.one("silo_router.control.region_up")
    assert (region_up["region"], region_up["released"], region_up["drain"]) == ("us", 1, True)
    sweep = captured.one("silo_router.control.sweep")
    assert sweep.parent_span_id == region_up.span_id
    assert sweep["republished"] == 1
    assert handled == ["handled"]
