"""Through control's own delivery code: a stored payload's attempt is the parent of the region's run."""

from __future__ import annotations

import time
from typing import Any

import pytest

from silo_router import tracing
from silo_router.control import delivery
from silo_router.control.models import Payload
from silo_router.region.handlers import slack

from ...sentry_capture import SPAN_WAIT, Captured
from .conftest import SIDES
from .support import ATTEMPT, HANDLER, RECEIVE, Crossing, assert_child_of, click_envelope, of_trace

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("crossing", ["local", "http", "celery-worker"], indirect=True)
@pytest.mark.parametrize("sides", [SIDES[0], SIDES[1]], indirect=True, ids=lambda sides: sides.id)
def test_a_workers_attempt_is_the_parent_of_the_regions_run(crossing: Crossing, captured: Captured) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        pass

    with tracing.flow("control", "request", "slack request", new_trace=True) as request:
        envelope = click_envelope(key="slack:click:stored").replace(trace=tracing.propagation_headers())
        (payload,) = delivery.store([envelope])
    delivery.deliver(str(payload.pk))

    deadline = time.monotonic() + SPAN_WAIT
    while Payload.objects.get(pk=payload.pk).state != Payload.State.DELIVERED:  # celery: once confirmed
        assert time.monotonic() < deadline, Payload.objects.get(pk=payload.pk).state
        time.sleep(0.05)
    captured.wait_for(HANDLER)
    spans = captured.spans()
    (receive,) = of_trace(spans, str(request.trace_id), RECEIVE)
    assert_child_of(spans, receive, ATTEMPT)
    assert of_trace(spans, str(request.trace_id), HANDLER)[0].parent_span_id == receive.span_id


@pytest.mark.parametrize("crossing", ["local", "http", "celery-worker"], indirect=True)
@pytest.mark.parametrize("sides", [SIDES[0]], indirect=True, ids=lambda sides: sides.id)
def test_in_a_batch_each_region_run_is_the_child_of_its_own_attempt(crossing: Crossing, captured: Captured) -> None:
    """Three payloads of three requests, delivered by one batch message: three traces, each whole.

    On the celery transport the envelopes go out one message each, and sentry-sdk's
    integration puts the current span's headers on each: that must be the envelope's
    own attempt, not the last one the batch opened.
    """

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        pass

    requests, ids = [], []
    for n in range(3):
        with tracing.flow("control", "request", "slack request", new_trace=True) as request:
            envelope = click_envelope(key=f"slack:click:batch-{n}").replace(trace=tracing.propagation_headers())
            (payload,) = delivery.store([envelope])
        requests.append(str(request.trace_id))
        ids.append(str(payload.pk))
    delivery.deliver_batch(ids)

    deadline = time.monotonic() + SPAN_WAIT
    while Payload.objects.filter(pk__in=ids, state=Payload.State.DELIVERED).count() < 3:
        assert time.monotonic() < deadline, list(Payload.objects.filter(pk__in=ids).values_list("state", flat=True))
        time.sleep(0.05)
    spans = captured.spans()
    for trace_id in requests:
        while not of_trace(captured.spans(), trace_id, HANDLER):
            assert time.monotonic() < deadline, f"no handler span in trace {trace_id}"
            time.sleep(0.05)
        spans = captured.spans()
        (receive,) = of_trace(spans, trace_id, RECEIVE)
        (attempt,) = of_trace(spans, trace_id, ATTEMPT)  # the trace's one attempt is the receive's ancestor
        assert_child_of(spans, receive, ATTEMPT)  # on celery, with sentry's publish span between
        assert of_trace(spans, trace_id, HANDLER)[0].parent_span_id == receive.span_id
