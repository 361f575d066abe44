"""The region's confirmation (celery transport) joins the trace of the run it confirms."""

from __future__ import annotations

from typing import Any

import pytest

from silo_router import signing
from silo_router.envelope import SealedEnvelope, seal
from silo_router.region.handlers import slack
from silo_router.transports.base import ATTEMPT_HEADER
from silo_router.transports.celery import CONFIRM_TASK

from ...sentry_capture import Captured
from .conftest import SIDES
from .support import RECEIVE, Crossing, click_envelope, give_up_at_once, of_trace, path_to, published

pytestmark = pytest.mark.django_db(transaction=True)

CELERY = pytest.mark.parametrize("crossing", ["celery-worker", "celery-eager"], indirect=True)


def confirmations(messages: list[dict[str, Any]], *, count: int = 1) -> list[dict[str, Any]]:
    found = [message for message in messages if message["task"] == CONFIRM_TASK]
    assert len(found) == count, [message["task"] for message in messages]
    return found


@CELERY
@pytest.mark.parametrize("sides", SIDES, indirect=True, ids=lambda sides: sides.id)
def test_the_confirmation_carries_the_receive_spans_trace(crossing: Crossing, captured: Captured) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        pass

    with published() as messages:
        sent = crossing.send(click_envelope(key="slack:click:confirmed"), attempt=5)
        captured.wait_for(RECEIVE)
    (confirmation,) = confirmations(messages)
    spans = captured.spans()
    (receive,) = of_trace(spans, sent.trace_id, RECEIVE)
    trace_id, span_id = confirmation["headers"]["sentry-trace"].split("-")[:2]
    assert trace_id == sent.trace_id
    by_id = {span.span_id: span for span in spans}
    # The receive span itself, or sentry-sdk's queue.submit span under it when its Celery integration is on.
    assert span_id == receive.span_id or path_to(spans, by_id[span_id], RECEIVE) == [RECEIVE]
    assert confirmation["headers"][ATTEMPT_HEADER] == "5"


@pytest.mark.parametrize("crossing", ["celery-worker"], indirect=True)
@pytest.mark.parametrize("sides", [SIDES[0]], indirect=True, ids=lambda sides: sides.id)
def test_controls_confirm_task_runs_in_the_same_trace(crossing: Crossing, captured: Captured) -> None:
    """With sentry's Celery integration on, control's confirm task is a transaction of the same trace."""

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        pass

    sent = crossing.send(click_envelope(key="slack:click:settled"))
    confirm = captured.wait_for_transaction(CONFIRM_TASK)
    assert confirm.root.trace_id == sent.trace_id
    spans = captured.spans()
    assert RECEIVE in path_to(spans, confirm.root, RECEIVE)


@CELERY
@pytest.mark.parametrize("sides", [SIDES[1], SIDES[2]], indirect=True, ids=lambda sides: sides.id)
def test_a_rejected_envelopes_confirmation_joins_the_attempts_trace(crossing: Crossing, captured: Captured) -> None:
    sealed = seal(click_envelope(key="slack:click:refused"))
    forged = SealedEnvelope(body=sealed.body, signature=signing.sign(sealed.body, key_id="k1", key="x" * 40))
    with published() as messages:
        sent = crossing.send(click_envelope(key="slack:click:refused"), attempt=2, sealed=forged)
        captured.wait_for(RECEIVE)
    (confirmation,) = confirmations(messages)
    assert confirmation["body"][0][1:3] == ("rejected", "signature_mismatch")
    trace_id, span_id = confirmation["headers"]["sentry-trace"].split("-")[:2]
    (attempt,) = of_trace(captured.spans(), sent.trace_id, "silo_router.control.attempt")
    assert (trace_id, confirmation["headers"][ATTEMPT_HEADER]) == (sent.trace_id, "2")
    assert span_id in {attempt.span_id, *_children_of(captured, attempt.span_id)}


def _children_of(captured: Captured, span_id: str) -> set[str]:
    return {span.span_id for span in captured.spans() if span.parent_span_id == span_id}


@CELERY
@pytest.mark.parametrize("sides", [SIDES[0]], indirect=True, ids=lambda sides: sides.id)
def test_a_handler_that_failed_for_good_is_confirmed_failed_in_the_trace(
    crossing: Crossing, captured: Captured, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its last retry the region tells control "failed" at once, instead of leaving it to the lease."""
    give_up_at_once(monkeypatch)

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        raise RuntimeError("for good")

    with published() as messages:
        sent = crossing.send(click_envelope(key="slack:click:failed-for-good"))
        captured.wait_for(RECEIVE)
    (confirmation,) = confirmations(messages)
    assert confirmation["body"][0][1] == "failed"
    assert confirmation["headers"]["sentry-trace"].startswith(f"{sent.trace_id}-")
