"""``manage.py silo_router_trace <capture-dir>`` prints waterfalls of what was captured there."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from django.core.management import CommandError, call_command
from django.test import Client

from silo_router import tracing
from silo_router.region.handlers import slack
from silo_router.tracing import capture

from ...slack_signing import event_callback, post_slack
from .conftest import init_capturing, stop_capturing

#: A response_url: a capability, whatever span it ends up in.
RESPONSE_URL = "https://hooks.slack.com/actions/T0US00001/1234567890/NeverPrintThisOne0123"


def trace_command(*args: str) -> str:
    out = io.StringIO()
    call_command("silo_router_trace", *args, stdout=out)
    return out.getvalue()


def record_flows(capture_dir: Path, *, scrubbed: bool = True) -> list[str]:
    """Three traces in ``capture_dir``: a Slack request, a sweep, a region run; their trace ids, in order."""
    transport = capture.CaptureTransport(capture_dir, memory=False)
    init_capturing(transport, scrubbed=scrubbed)
    trace_ids = []
    try:
        for silo, stage, description in (
            ("control", "request", "slack request"),
            ("control", "sweep", "sweep"),
            ("region", "receive", f"slack reply to {RESPONSE_URL}"),
        ):
            with tracing.flow(silo, stage, description, new_trace=True) as span:
                with tracing.stage(silo, "step", "one step"):
                    pass
                trace_ids.append(str(span.trace_id))
        sentry_sdk.flush()
    finally:
        stop_capturing()
    return trace_ids


def test_prints_the_latest_trace_by_default(tmp_path: Path) -> None:
    request, sweep, receive = record_flows(tmp_path)
    out = trace_command(str(tmp_path))
    assert out.startswith(f"trace {receive}: 1 transaction, 2 spans")
    assert "silo_router.region.receive" in out and "silo_router.region.step  one step" in out
    assert request not in out and sweep not in out


def test_picks_traces_by_id_by_op_and_the_last_n(tmp_path: Path) -> None:
    request, sweep, receive = record_flows(tmp_path)

    by_id = trace_command(str(tmp_path), "--trace", request[:8])
    assert by_id.startswith(f"trace {request}:") and "| = Slack's deadline, 3000 ms after control's arrival" in by_id

    by_op = trace_command(str(tmp_path), "--op", "silo_router.control", "--last", "5")
    assert by_op.count("\ntrace ") + by_op.startswith("trace ") == 2
    assert request in by_op and sweep in by_op and receive not in by_op

    listed = trace_command(str(tmp_path), "--list", "--last", "3").splitlines()
    assert [line.split()[0] for line in listed] == [request, sweep, receive]
    assert "silo_router.control.sweep  sweep" in listed[1]


def test_refuses_what_it_cannot_draw(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="is not a directory"):
        trace_command(str(tmp_path / "missing"))
    with pytest.raises(CommandError, match="no trace in"):
        trace_command(str(tmp_path))
    record_flows(tmp_path)
    with pytest.raises(CommandError, match="no captured trace"):
        trace_command(str(tmp_path), "--trace", "ffffffffffff")
    with pytest.raises(CommandError, match="at least 6 digits"):
        trace_command(str(tmp_path), "--trace", "abc")
    with pytest.raises(CommandError, match="no trace in .* with a span of op silo_router.nothing"):
        trace_command(str(tmp_path), "--op", "silo_router.nothing")
    (tmp_path / "1-x-000000.envelope").write_bytes(b"garbage")
    with pytest.raises(CommandError, match="1-x-000000.envelope is not a sentry-sdk envelope"):
        trace_command(str(tmp_path))


def test_never_prints_a_capability_even_from_an_unscrubbed_capture(tmp_path: Path) -> None:
    record_flows(tmp_path, scrubbed=False)
    assert RESPONSE_URL.encode() in b"".join(path.read_bytes() for path in tmp_path.iterdir())  # captured raw
    out = trace_command(str(tmp_path), "--last", "3") + trace_command(str(tmp_path), "--list", "--last", "3")
    assert "silo_router.region.receive  slack reply to [redacted]" in out
    assert "1234567890" not in out and "NeverPrint" not in out


@pytest.mark.django_db
def test_prints_a_flow_through_control_and_the_region(
    client: Client, installations: Any, captured: capture.CaptureTransport, capture_dir: Path
) -> None:
    @slack.event("app_mention")
    def mention(request: Any) -> None:
        pass

    body = json.dumps(event_callback(event_id="EvTraceCommand")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    sentry_sdk.flush()
    out = trace_command(str(capture_dir), "--op", "silo_router.region.handler").splitlines()
    span_ops = [[word for word in line.split() if word.startswith("silo_router.")] for line in out]
    ops = [words[0] for words in span_ops if words]  # link rows name their type in brackets
    assert ops[0] == "silo_router.control.request"
    assert ops.index("silo_router.control.attempt") < ops.index("silo_router.region.receive")
    assert ops.index("silo_router.region.receive") < ops.index("silo_router.region.handler")
    assert "not shown: db" in out[-1]
