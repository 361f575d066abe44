"""The waterfall of flows that sentry-sdk really emitted: rows, depth, offsets, the deadline line, links."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sentry_sdk
from django.test import Client

from silo_router import tracing
from silo_router.region.handlers import slack
from silo_router.tracing import capture, links, waterfall

from ...slack_signing import block_actions, event_callback, interactive_body, post_slack

pytestmark = pytest.mark.django_db

TRIGGER_ID = "7418529630.1234567890.0a1b2c3d4e5f60718293a4b5c6d7e8f9"
RESPONSE_URL = "https://hooks.slack.com/actions/T0US00001/7418529630/OnlyForThisClickXyZ0123"


def only_trace(transport: capture.CaptureTransport) -> capture.Trace:
    sentry_sdk.flush()
    [trace] = capture.traces(transport).values()
    return trace


def mention_flow(client: Client, transport: capture.CaptureTransport) -> capture.Trace:
    """An app_mention through control, the in-process delivery and the region's handler."""

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        with tracing.stage("region", "work", "the handler's own work"):
            pass

    body = json.dumps(event_callback(event_id="EvWaterfall")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    return only_trace(transport)


#: Where a row's bar starts: after the start and duration columns.
BAR_START = 9 + 1 + 8 + 2


def test_rows_follow_the_flow_in_tree_order_with_offsets_from_the_first_span(
    client: Client, installations: Any, captured: capture.CaptureTransport
) -> None:
    trace = mention_flow(client, captured)
    drawn = waterfall.build(trace)
    rows = drawn.rows

    assert rows[0].op == "silo_router.control.request" and rows[0].depth == 0 and rows[0].offset_ms == 0.0
    by_id = {row.span.span_id: (index, row) for index, row in enumerate(rows) if row.span and not row.is_link}
    for index, row in enumerate(rows):
        assert row.span is not None
        if row.is_link:  # the handler's link to the request that created the envelope, under the handler
            assert rows[index - 1].op == "silo_router.region.handler" or rows[index - 1].is_link
            continue
        assert row.offset_ms == pytest.approx((row.span.start - trace.start) * 1000)
        assert row.duration_ms == pytest.approx(row.span.duration_ms)
        shown_parent = by_id.get(row.span.parent_span_id or "")
        if shown_parent is None:
            continue
        parent_index, parent = shown_parent
        assert parent_index < index and row.depth == parent.depth + 1
        # Tree order: the rows between a span and its child are that span's other descendants.
        assert all(between.depth > parent.depth for between in rows[parent_index + 1 : index])
        assert row.offset_ms >= parent.offset_ms

    ops = [row.op for row in rows]
    flow = [
        "silo_router.control.request",
        "silo_router.control.verify",
        "silo_router.control.classify",
        "silo_router.control.resolve",
        "silo_router.control.store",
        "silo_router.control.attempt",
        "silo_router.region.receive",
        "silo_router.region.handler",
        "silo_router.region.work",
    ]
    assert [op for op in ops if op in flow] == flow
    depth = {row.op: row.depth for row in rows}
    assert depth["silo_router.control.verify"] == 1
    assert depth["silo_router.control.attempt"] < depth["silo_router.region.receive"]
    assert depth["silo_router.region.receive"] < depth["silo_router.region.handler"] < depth["silo_router.region.work"]
    assert "db" not in ops and drawn.hidden > 0 and "db" in drawn.hidden_ops
    everything = waterfall.build(trace, hide=())
    assert len(everything.rows) == len(rows) + drawn.hidden and everything.hidden == 0


def test_the_deadline_line_is_slacks_3_seconds_after_controls_arrival(
    client: Client, installations: Any, captured: capture.CaptureTransport
) -> None:
    drawn = waterfall.build(mention_flow(client, captured))
    [request] = drawn.spans("silo_router.control.request")
    assert drawn.deadline_ms == waterfall.DEFAULT_DEADLINE_MS
    assert drawn.deadline_at_ms == pytest.approx(request.offset_ms + 3000.0)
    assert drawn.past_deadline == []  # an in-process flow takes milliseconds
    assert "Slack's deadline, 3000 ms after control's arrival" in drawn.render()


def test_spans_that_end_past_the_line_are_marked(
    client: Client, installations: Any, captured: capture.CaptureTransport
) -> None:
    trace = mention_flow(client, captured)
    [request] = trace.find("silo_router.control.request")
    [handler] = trace.find("silo_router.region.handler")
    # A window that closes when the region's handler starts: what ends after that missed it.
    window = (handler.start - request.start) * 1000
    drawn = waterfall.build(trace, deadline_ms=window)

    assert drawn.deadline_at_ms == pytest.approx((handler.start - trace.start) * 1000)
    line = drawn.deadline_at_ms
    assert line is not None
    past = {row.span.span_id for row in drawn.past_deadline if row.span}
    assert past == {row.span.span_id for row in drawn.rows if row.span and row.end_ms > line}
    marked = {row.op for row in drawn.past_deadline}
    assert {"silo_router.control.request", "silo_router.region.handler", "silo_router.region.work"} <= marked
    assert not {"silo_router.control.verify", "silo_router.control.classify", "silo_router.control.store"} & marked

    text = drawn.render(width=60)
    lines = text.splitlines()
    assert f"! = ends past it ({len(drawn.past_deadline)} spans)" in lines[1]
    rows = lines[3 : 3 + len(drawn.rows)]
    column = lines[2].index("|", BAR_START)  # the axis shows where the line is
    assert BAR_START < column < BAR_START + 60
    for row, drawn_row in zip(rows, drawn.rows, strict=True):
        assert row[column] in "|+"  # the line runs through every row, "+" where a bar crosses it
        assert ("#" in row[column + 1 : BAR_START + 60] or row[column] == "+") == drawn_row.past_deadline
        assert row[BAR_START + 60 + 1] == ("!" if drawn_row.past_deadline else " ")
        assert drawn_row.op in row


def test_the_window_the_request_span_records_is_the_line(captured: capture.CaptureTransport) -> None:
    with tracing.flow("control", "request", "slack request", deadline_ms=50):
        with tracing.stage("control", "verify", "slack"):
            pass
    drawn = waterfall.build(only_trace(captured))
    assert drawn.deadline_ms == 50.0
    assert drawn.deadline_at_ms == pytest.approx(drawn.rows[0].offset_ms + 50.0)
    assert "Slack's deadline, 50 ms after control's arrival" in drawn.render()


def test_a_trace_without_a_control_request_has_no_line(captured: capture.CaptureTransport) -> None:
    with tracing.flow("control", "sweep", "sweep"):
        pass
    drawn = waterfall.build(only_trace(captured))
    assert drawn.deadline_at_ms is None and drawn.past_deadline == []
    assert "no deadline line" in drawn.render()


def test_links_to_other_traces_get_a_row(captured: capture.CaptureTransport) -> None:
    cause = links.Link("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", True)
    notification = "0af7651916cd43dd8448eb211c80319c"
    with tracing.flow("control", "attempt", "deliver late", new_trace=True, links=[cause]):
        with tracing.stage("control", "store", "the click", links=[links.to_notification(notification)]):
            pass
    drawn = waterfall.build(only_trace(captured))

    assert [(row.depth, row.op, row.linked_trace_id, row.link_type) for row in drawn.rows] == [
        (0, "silo_router.control.attempt", None, None),
        (1, "link", cause.trace_id, "silo_router.caused_by"),
        (1, "silo_router.control.store", None, None),
        (2, "link", notification, "silo_router.notification"),
    ]
    text = drawn.render()
    assert f"-> linked to trace {cause.trace_id} (silo_router.caused_by)" in text
    assert f"-> linked to trace {notification} (silo_router.notification)" in text


def test_a_link_inside_the_trace_names_the_span(captured: capture.CaptureTransport) -> None:
    with tracing.flow("control", "request", "slack request") as request:
        headers = tracing.propagation_headers()
    with tracing.flow("region", "handler", "mention", carrier=headers, links=[links.from_headers(headers)]):
        pass
    drawn = waterfall.build(only_trace(captured))
    [link] = drawn.links
    [request_row] = drawn.spans("silo_router.control.request")
    assert request_row.span is not None and link.linked_trace_id == request.trace_id
    assert link.linked_span_id == request_row.span.span_id
    assert f"-> linked to span {link.linked_span_id} of this trace (silo_router.caused_by)" in drawn.render()


def test_children_of_hidden_spans_move_up(captured: capture.CaptureTransport) -> None:
    with tracing.flow("region", "receive", "slack"):
        with sentry_sdk.start_span(op="db", name="SAVEPOINT"):
            with tracing.stage("region", "handler", "mention"):
                pass
    trace = only_trace(captured)
    assert [(row.depth, row.op) for row in waterfall.build(trace).rows] == [
        (0, "silo_router.region.receive"),
        (1, "silo_router.region.handler"),
    ]
    assert [(row.depth, row.op) for row in waterfall.build(trace, hide=()).rows] == [
        (0, "silo_router.region.receive"),
        (1, "db"),
        (2, "silo_router.region.handler"),
    ]


def test_no_capability_reaches_the_capture_or_the_waterfall(
    client: Client, installations: Any, captured: capture.CaptureTransport
) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        with tracing.stage("region", "work", "resolve the issue"):
            pass

    payload = block_actions(trigger_id=TRIGGER_ID, response_url=RESPONSE_URL)
    assert post_slack(client, interactive_body(payload)).status_code == 200
    trace = only_trace(captured)
    assert trace.find("silo_router.region.work")
    text = waterfall.build(trace, hide=()).render()
    emitted = b"".join(each.envelope.serialize() for each in capture.captured(captured))
    for capability in (TRIGGER_ID, RESPONSE_URL, "7418529630"):
        assert capability not in text
        assert capability.encode() not in emitted
