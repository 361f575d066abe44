"""The capture transport keeps what sentry-sdk emits; the reader rebuilds traces, across processes too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sentry_sdk

from silo_router import tracing
from silo_router.tracing import capture, waterfall

from .conftest import init_capturing, stop_capturing

pytestmark = pytest.mark.django_db

REPO = Path(__file__).resolve().parents[3]

#: A control worker: a request and a delivery attempt; prints the attempt's propagation headers.
CONTROL_PROCESS = """
import json, sys
import sentry_sdk
from silo_router.tracing.capture import CAPTURE_DSN, CaptureTransport

sentry_sdk.init(dsn=CAPTURE_DSN, transport=CaptureTransport(sys.argv[1], memory=False), traces_sample_rate=1.0)
with sentry_sdk.start_transaction(op="silo_router.control.request", name="slack request"):
    with sentry_sdk.start_span(op="silo_router.control.attempt", name="deliver to us"):
        print(json.dumps({"sentry-trace": sentry_sdk.get_traceparent(), "baggage": sentry_sdk.get_baggage()}))
sentry_sdk.flush()
"""

#: A region: continues the trace from the headers it was given, runs a handler.
REGION_PROCESS = """
import json, sys
import sentry_sdk
from silo_router.tracing.capture import CAPTURE_DSN, CaptureTransport

sentry_sdk.init(dsn=CAPTURE_DSN, transport=CaptureTransport(sys.argv[1], memory=False), traces_sample_rate=1.0)
headers = json.loads(sys.argv[2])
transaction = sentry_sdk.continue_trace(headers, op="silo_router.region.receive", name="slack event_callback")
with sentry_sdk.start_transaction(transaction):
    with sentry_sdk.start_span(op="silo_router.region.handler", name="mention") as span:
        span.set_data("silo_router.region", "us")
sentry_sdk.flush()
"""


def run_process(code: str, *args: str) -> str:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=environment,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_transport_keeps_every_envelope_in_memory_and_one_file_each(
    captured: capture.CaptureTransport, capture_dir: Path
) -> None:
    with tracing.flow("control", "request", "slack request", kind="event_callback:app_mention"):
        with tracing.stage("control", "verify", "slack"):
            pass
    sentry_sdk.capture_exception(RuntimeError("the ticket service is down"))
    sentry_sdk.flush()

    files = sorted(capture_dir.iterdir())
    assert len(captured.envelopes) == len(files) == 2
    assert all(path.name.endswith(capture.SUFFIX) and path.name.startswith(f"{os.getpid()}-") for path in files)
    from_memory = [each.envelope.items[0].type for each in capture.captured(captured)]
    from_files = [each.envelope.items[0].type for each in capture.read_directory(capture_dir)]
    assert sorted(from_memory) == sorted(from_files) == ["event", "transaction"]
    [error] = capture.items(capture_dir, "event")
    assert error["exception"]["values"][0]["value"] == "the ticket service is down"

    [transaction] = capture.transactions(capture_dir)
    assert [span.op for span in transaction.all_spans] == ["silo_router.control.request", "silo_router.control.verify"]
    assert transaction.root.is_root and transaction.root.parent_span_id is None
    assert transaction.root.attribute("kind") == "event_callback:app_mention"
    assert transaction.spans[0].parent_span_id == transaction.root.span_id
    assert transaction.root.start <= transaction.spans[0].start <= transaction.spans[0].end <= transaction.root.end
    assert transaction.process == str(os.getpid())
    assert [t.event_id for t in capture.transactions(captured)] == [transaction.event_id]

    captured.clear()
    assert captured.envelopes == [] and len(list(capture_dir.iterdir())) == 2  # the files stay


def test_without_memory_only_files_are_kept(capture_dir: Path) -> None:
    transport = capture.CaptureTransport(capture_dir, memory=False)
    init_capturing(transport)
    try:
        with tracing.flow("region", "receive", "slack"):
            pass
        sentry_sdk.flush()
    finally:
        stop_capturing()
    assert transport.envelopes == []
    assert [t.root.op for t in capture.transactions(capture_dir)] == ["silo_router.region.receive"]


def test_the_reader_rebuilds_one_trace_from_several_processes(capture_dir: Path) -> None:
    headers = run_process(CONTROL_PROCESS, str(capture_dir)).strip()
    run_process(REGION_PROCESS, str(capture_dir), headers)

    found = capture.traces(capture_dir)
    [trace] = found.values()
    assert trace.trace_id == json.loads(headers)["sentry-trace"].split("-")[0]
    control, region = trace.transactions  # earliest first
    assert control.root.op == "silo_router.control.request"
    assert region.root.op == "silo_router.region.receive"
    assert control.process != region.process and control.source != region.source
    [attempt] = trace.find("silo_router.control.attempt")
    assert region.root.parent_span_id == attempt.span_id  # across the processes

    drawn = waterfall.build(trace)
    assert [(row.depth, row.op) for row in drawn.rows] == [
        (0, "silo_router.control.request"),
        (1, "silo_router.control.attempt"),
        (2, "silo_router.region.receive"),
        (3, "silo_router.region.handler"),
    ]
    assert drawn.transactions == 2 and drawn.processes == 2
    assert drawn.rows[0].process == f"control, pid {control.process}"
    assert drawn.rows[2].process == f"region us, pid {region.process}"


def test_a_file_that_is_not_an_envelope_is_named(capture_dir: Path) -> None:
    capture_dir.mkdir()
    (capture_dir / "1-x-000000.envelope").write_bytes(b"not an envelope\n{")
    with pytest.raises(capture.CaptureError, match="1-x-000000.envelope"):
        capture.traces(capture_dir)


def test_a_half_written_file_is_never_read(captured: capture.CaptureTransport, capture_dir: Path) -> None:
    (capture_dir / f".9-x-000000{capture.SUFFIX}.partial").write_bytes(b"{")
    with tracing.flow("control", "request", "slack request"):
        pass
    sentry_sdk.flush()
    assert [t.root.op for t in capture.transactions(capture_dir)] == ["silo_router.control.request"]
