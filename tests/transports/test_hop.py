"""What crosses with an envelope besides it: the attempt's trace headers and number."""

from __future__ import annotations

from typing import Any

import pytest
from celery.app.task import Context

from silo_router import tracing
from silo_router.envelope import seal
from silo_router.transports import Hop, delivering, transport_for
from silo_router.transports.base import ATTEMPT_HEADER, REPLAY_HEADER
from silo_router.transports.celery import RECEIVE_TASK, hop_of
from silo_router.transports.http import HttpTransport

from ..celery_app import app as suite_app
from ..sentry_capture import Captured, CaptureSentry
from ..tracing.crossing.support import published
from .conftest import make_envelope
from .servers import Piece, ScriptedServer, http_answer

pytestmark = pytest.mark.django_db(transaction=True)

TRACE = "0af7651916cd43dd8448eb211c80319c"
SENTRY_TRACE = f"{TRACE}-b7ad6b7169203331-1"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"


@pytest.fixture(params=["stdlib-on", "integrations-off"])
def captured(request: pytest.FixtureRequest, capture_sentry: CaptureSentry) -> Captured:
    """sentry-sdk with its default integrations (http.client among them), or with none; every trace sampled."""
    integrations = "defaults" if request.param == "stdlib-on" else "none"
    return capture_sentry(scrubbed=False, integrations=integrations, traces_sample_rate=1.0)


def test_hop_headers_are_lower_case_and_leave_out_what_is_unset() -> None:
    hop = Hop(trace={"sentry-trace": SENTRY_TRACE, "x-other": "kept out"}, attempt=3)
    assert hop.headers() == {"sentry-trace": SENTRY_TRACE, ATTEMPT_HEADER: "3"}
    assert Hop(attempt=1, replays=2).headers() == {ATTEMPT_HEADER: "1", REPLAY_HEADER: "2"}
    assert Hop().headers() == {}


def test_a_hop_is_read_from_headers_of_any_case_and_garbled_values_are_left_out() -> None:
    hop = Hop.from_headers(
        {
            "Sentry-Trace": SENTRY_TRACE,
            "TRACEPARENT": TRACEPARENT,
            "baggage": "sentry-trace_id=x\r\nX-Injected: 1",  # a header split: left out
            "tracestate": "é=1",  # not ASCII: left out
            "X-Silo-Router-Attempt": " 7 ",
            "x-silo-router-replay": "twice",  # not a number: left out
        }
    )
    assert hop == Hop(trace={"sentry-trace": SENTRY_TRACE, "traceparent": TRACEPARENT}, attempt=7)
    assert Hop.from_headers({"sentry-trace": "x" * 9000, ATTEMPT_HEADER: "-1"}) == Hop()
    assert Hop.from_headers(None) == Hop()


def test_the_attempt_number_is_the_one_control_is_making(captured: Captured) -> None:
    assert Hop.current().attempt is None
    with tracing.flow("control", "attempt", new_trace=True) as span, delivering(attempt=4, replays=1):
        hop = Hop.current()
    assert (hop.attempt, hop.replays) == (4, 1)
    assert hop.trace["sentry-trace"].startswith(f"{span.trace_id}-")
    assert Hop.current().attempt is None


def test_the_http_request_carries_each_trace_header_once(captured: Captured) -> None:
    """sentry-sdk's http.client integration writes its own sentry-trace; the attempt's then stays out."""
    receipt = b'{"outcome": "handled", "response": null}\n'
    with ScriptedServer([Piece(http_answer("200 OK", b" " + receipt))]) as server:
        with tracing.flow("control", "attempt", new_trace=True) as attempt, delivering(attempt=2):
            attempt_headers = tracing.propagation_headers()
            HttpTransport("us", {"URL": server.url}).deliver(seal(make_envelope()), timeout=5.0, wait=True)
        server.wait_for_connections(1)
    (head,) = server.heads
    headers = [line.partition(b":") for line in head[1:]]
    named = {name.strip().lower().decode(): value.strip().decode() for name, _, value in headers}
    assert [name.strip().lower() for name, _, _ in headers].count(b"sentry-trace") == 1
    assert [name.strip().lower() for name, _, _ in headers].count(b"baggage") == 1
    assert named[ATTEMPT_HEADER] == "2"
    trace_id, span_id = named["sentry-trace"].split("-")[:2]
    assert trace_id == attempt.trace_id
    spans = {span.span_id: span for span in captured.spans()}
    if span_id == attempt_headers["sentry-trace"].split("-")[1]:
        assert "http.client" not in {span.op for span in spans.values()}  # no integration: the attempt's own
    else:
        assert spans[span_id].op == "http.client"
        assert spans[span_id].parent_span_id == attempt_headers["sentry-trace"].split("-")[1]


def test_the_celery_message_carries_the_hop_in_its_headers(captured: Captured, settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "REGIONS": {"us": {"TRANSPORT": "celery"}}}
    eager = suite_app.conf.task_always_eager
    suite_app.conf.update(task_always_eager=False)
    try:
        with published() as messages, tracing.flow("control", "attempt", new_trace=True) as attempt:
            with delivering(attempt=6):
                transport_for("us").deliver(seal(make_envelope(event_id="EvHop")), timeout=5.0, wait=False)
    finally:
        suite_app.conf.update(task_always_eager=eager)
        with suite_app.connection_for_write() as connection:
            connection.default_channel.queue_purge("silo_router.region.us")
    (message,) = [m for m in messages if m["task"] == RECEIVE_TASK]
    assert message["headers"][ATTEMPT_HEADER] == "6"
    assert message["headers"]["sentry-trace"].startswith(f"{attempt.trace_id}-")
    # The region worker reads it back from its request, as Celery 5 builds it.
    assert hop_of(Context(message["headers"])).attempt == 6


def test_a_region_worker_reads_the_hop_from_the_request_or_from_its_nested_headers() -> None:
    """Celery keeps a message's own headers as request attributes; sentry-sdk nests a copy in ``headers``."""
    top_level = Context({"sentry-trace": SENTRY_TRACE, ATTEMPT_HEADER: "2", "task": RECEIVE_TASK})
    nested = Context({"headers": {"sentry-trace": SENTRY_TRACE, "traceparent": TRACEPARENT, ATTEMPT_HEADER: "2"}})
    assert hop_of(top_level) == Hop(trace={"sentry-trace": SENTRY_TRACE}, attempt=2)
    assert hop_of(nested) == Hop(trace={"sentry-trace": SENTRY_TRACE, "traceparent": TRACEPARENT}, attempt=2)
    assert hop_of(Context({})) == Hop()  # a message from a control of an older release
