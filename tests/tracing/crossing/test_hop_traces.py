"""One trace across the hop: the region's run is the child of the attempt that carried it.

Over every transport (local, http on loopback, celery with a real worker and eagerly),
with sentry-sdk's integrations on and off on each side, what sentry-sdk emits holds one
trace from control's request through the attempt, the region's receive and handler
spans to the handler's after-receipt work.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from silo_router import signing, tracing
from silo_router.envelope import SealedEnvelope, seal
from silo_router.region.handlers import slack
from silo_router.region.models import ProcessedEnvelope

from ...sentry_capture import Captured
from .conftest import SIDES
from .support import (
    ATTEMPT,
    HANDLER,
    RECEIVE,
    Crossing,
    assert_child_of,
    click_envelope,
    give_up_at_once,
    of_trace,
    path_to,
)

pytestmark = pytest.mark.django_db(transaction=True)

README_SIDES = pytest.mark.parametrize("sides", [SIDES[0]], indirect=True, ids=lambda sides: sides.id)
REPLY_PROBE = "silo_router.region.reply_probe"
NOTIFICATION = "0f8e3c5a2b7d4e619a0c3b5d7e9f1a2b"


def register_click_handler(*, fail: bool = False) -> list[str]:
    """The click's handler; it leaves after-receipt work that opens a span of its own."""
    ran: list[str] = []

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        ran.append(request.envelope.id)
        request.after_commit(reply)
        if fail:
            raise RuntimeError("resolving failed")

    def reply() -> None:
        with tracing.stage("region", "reply_probe", "a reply after the receipt"):
            pass

    return ran


@pytest.mark.parametrize("sides", SIDES, indirect=True, ids=lambda sides: sides.id)
def test_the_region_run_is_the_child_of_the_attempt_in_one_trace(crossing: Crossing, captured: Captured) -> None:
    register_click_handler()
    sent = crossing.send(click_envelope())
    assert _outcome(sent.answer) == "handled"

    (reply,) = [span for span in captured.wait_for(REPLY_PROBE) if span.trace_id == sent.trace_id]
    # The after-receipt work is a transaction of its own: on a Celery worker it may be sent
    # before the task's transaction, which holds the receive span, has ended.
    captured.wait_for(RECEIVE)
    spans = captured.spans()
    (attempt,) = of_trace(spans, sent.trace_id, ATTEMPT)
    (receive,) = of_trace(spans, sent.trace_id, RECEIVE)
    (handler,) = of_trace(spans, sent.trace_id, HANDLER)
    assert attempt.parent_span_id == sent.request_span_id
    assert_child_of(spans, receive, ATTEMPT)
    assert handler.parent_span_id == receive.span_id
    assert path_to(spans, reply, HANDLER) == ["silo_router.region.after_receipt", HANDLER]
    ours = [span for span in spans if span.op.startswith("silo_router.")]
    assert {span.trace_id for span in ours} == {sent.trace_id}


@README_SIDES
def test_the_receive_span_names_the_envelope_and_the_attempt(crossing: Crossing, captured: Captured) -> None:
    register_click_handler()
    sent = crossing.send(click_envelope(notification_id=NOTIFICATION), attempt=3, replays=1)
    assert _outcome(sent.answer) == "handled"

    spans = captured.wait_for(RECEIVE)
    (receive,) = of_trace(spans, sent.trace_id, RECEIVE)
    envelope_id = sent.envelope.id
    assert {key: receive.data.get(f"silo_router.{key}") for key in _UNIFORM} == {
        "provider": "slack",
        "kind": "block_actions:resolve_dialog",
        "region": "us",
        "envelope_id": envelope_id,
        "installation": "7",
        "notification_id": NOTIFICATION,
        "attempt": 3,
        "outcome": "handled",
    }
    assert (receive.data["silo_router.dedupe"], receive.data["silo_router.replay"]) == ("first", True)
    assert receive.data["silo_router.replays"] == 1
    assert _messaging(receive) == ("silo_router", "receive", "us", envelope_id)
    assert receive.tags["silo_router.outcome"] == "handled"
    assert "silo_router.envelope_id" not in receive.tags  # ids are data, not tags

    (handler,) = of_trace(captured.spans(), sent.trace_id, HANDLER)
    assert _messaging(handler) == ("silo_router", "process", "us", envelope_id)
    assert handler.data["silo_router.handler"].endswith("register_click_handler.<locals>.resolve")
    assert handler.data["silo_router.outcome"] == "ok"
    # OpenTelemetry's messaging conventions: the process span links to the creation context.
    (link,) = handler.links
    assert (link["trace_id"], link["span_id"]) == (sent.trace_id, sent.request_span_id)
    assert link["attributes"] == {"sentry.link.type": "silo_router.caused_by"}
    assert handler.data["silo_router.caused_by"] == sent.trace_id


@README_SIDES
def test_a_second_delivery_of_an_envelope_says_it_is_a_duplicate(crossing: Crossing, captured: Captured) -> None:
    ran = register_click_handler()
    envelope = click_envelope(key="slack:click:twice")
    first = crossing.send(envelope, attempt=1)
    second = crossing.send(envelope, attempt=2)
    assert (_outcome(first.answer), _outcome(second.answer)) == ("handled", "duplicate")
    assert ran == [envelope.id]

    (receive,) = of_trace(captured.wait_for(RECEIVE, count=2), second.trace_id, RECEIVE)
    assert receive.data["silo_router.dedupe"] == "duplicate"
    assert (receive.data["silo_router.outcome"], receive.data["silo_router.attempt"]) == ("duplicate", 2)
    assert not of_trace(captured.spans(), second.trace_id, HANDLER)


@README_SIDES
def test_a_rejected_envelope_has_a_receive_span_with_the_reason(crossing: Crossing, captured: Captured) -> None:
    register_click_handler()
    sealed = seal(click_envelope(key="slack:click:forged"))
    forged = SealedEnvelope(body=sealed.body, signature=signing.sign(sealed.body, key_id="k1", key="x" * 40))
    sent = crossing.send(click_envelope(key="slack:click:forged"), attempt=4, sealed=forged)
    assert "signature_mismatch" in str(_outcome(sent.answer))
    assert not ProcessedEnvelope.objects.exists()

    captured.wait_for(RECEIVE)
    spans = captured.spans()
    (receive,) = of_trace(spans, sent.trace_id, RECEIVE)
    assert_child_of(spans, receive, ATTEMPT)
    assert (receive.data["silo_router.outcome"], receive.data["silo_router.reason"]) == (
        "rejected",
        "signature_mismatch",
    )
    assert receive.status == "internal_error"
    assert receive.data["silo_router.attempt"] == 4
    assert "silo_router.envelope_id" not in receive.data  # nothing is read from an envelope that was refused
    assert "messaging.message.id" not in receive.data


@README_SIDES
def test_a_failing_handler_marks_the_handler_and_the_receive_span(
    crossing: Crossing, captured: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    give_up_at_once(monkeypatch)
    register_click_handler(fail=True)
    sent = crossing.send(click_envelope(key="slack:click:fails"))
    assert _outcome(sent.answer) != "handled"

    captured.wait_for(HANDLER)
    spans = captured.spans()
    (handler,) = of_trace(spans, sent.trace_id, HANDLER)
    (receive,) = of_trace(spans, sent.trace_id, RECEIVE)
    assert (handler.data["silo_router.outcome"], handler.data["silo_router.error"]) == ("raised", "RuntimeError")
    assert handler.status == "internal_error"
    assert (receive.data["silo_router.outcome"], receive.data["silo_router.error"]) == ("failed", "RuntimeError")
    assert receive.status == "internal_error"
    assert not of_trace(spans, sent.trace_id, REPLY_PROBE)  # nothing committed: no reply


_UNIFORM = ("provider", "kind", "region", "envelope_id", "installation", "notification_id", "attempt", "outcome")


def _outcome(answer: Any) -> Any:
    """``handled``, ``duplicate``... from a receipt, a Celery task's result, or the error it was."""
    if isinstance(answer, dict):
        return answer.get("outcome") if answer.get("outcome") != "rejected" else answer.get("reason")
    return getattr(answer, "outcome", None) or getattr(answer, "reason", None) or answer


def _messaging(span: dict[str, Any]) -> tuple[Any, ...]:
    found = span.data
    return tuple(
        found.get(f"messaging.{key}") for key in ("system", "operation.type", "destination.name", "message.id")
    )


@pytest.mark.parametrize("crossing", ["local"], indirect=True)
@README_SIDES
def test_an_attempt_inside_a_transaction_runs_the_region_inline_under_it(
    crossing: Crossing, captured: Captured
) -> None:
    """The local transport calls the receiver on the caller's thread inside a database transaction."""
    register_click_handler()
    with transaction.atomic():
        sent = crossing.send(click_envelope(key="slack:click:inline"))
    assert _outcome(sent.answer) == "handled"
    spans = captured.spans()
    (attempt,) = of_trace(spans, sent.trace_id, ATTEMPT)
    (receive,) = of_trace(spans, sent.trace_id, RECEIVE)
    assert receive.parent_span_id == attempt.span_id


@pytest.mark.parametrize("crossing", ["celery-worker"], indirect=True)
@pytest.mark.parametrize("sides", [SIDES[0], SIDES[2]], indirect=True, ids=lambda sides: sides.id)
def test_a_region_workers_retry_stays_in_the_trace_and_says_so(crossing: Crossing, captured: Captured) -> None:
    runs: list[int] = []

    @slack.action("resolve_dialog")
    def flaky(request: Any) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("the first run fails")

    sent = crossing.send(click_envelope(key="slack:click:retried"), attempt=3)
    assert _outcome(sent.answer) == "handled"
    captured.wait_for(RECEIVE, count=2)
    spans = captured.spans()
    receives = of_trace(spans, sent.trace_id, RECEIVE)
    retries = {span.data["silo_router.outcome"]: span.data.get("silo_router.region_retry") for span in receives}
    assert retries == {"failed": None, "handled": 1}
    assert {span.data["silo_router.attempt"] for span in receives} == {3}  # one control attempt, retried by the region
