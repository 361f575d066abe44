"""Whether spans are written follows sentry-sdk's clients and OpenTelemetry's provider as they come and go.

With no back end active, a span is one cheap check; the check must still see a client
initialised after the first request, a client bound to one isolation scope only (a
thread serving another silo), and a tracer provider set later.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import sentry_sdk

from silo_router import tracing
from silo_router.tracing import capture, registry
from tests.sentry_capture import CaptureSentry, sentry_options

ROOT = Path(__file__).resolve().parents[2]

#: The sentry-sdk back end (OpenTelemetry's may be on in this process: its provider is set once and for good).
SENTRY = next(backend for backend in registry.BACKENDS if backend.name == "sentry")


def sentry_traces() -> bool:
    """Write one flow with a stage; whether sentry-sdk saw them (they carry its propagation header)."""
    with tracing.flow("control", "request", "slack request", new_trace=True):
        with tracing.stage("control", "verify", "slack"):
            return "sentry-trace" in tracing.propagation_headers()


def test_without_a_client_sentry_traces_nothing() -> None:
    assert not SENTRY.active()
    assert not sentry_traces()


def test_a_client_initialised_after_untraced_requests_traces_the_next_one(capture_sentry: CaptureSentry) -> None:
    assert not sentry_traces()
    captured = capture_sentry(scrubbed=True, integrations="none", traces_sample_rate=1.0)
    assert SENTRY.active() and tracing.active()
    assert sentry_traces()
    assert {"silo_router.control.request", "silo_router.control.verify"} <= captured.ops()


def test_a_client_of_one_isolation_scope_traces_there_only() -> None:
    client = sentry_sdk.Client(**sentry_options(capture.CaptureTransport(None), scrubbed=True, integrations="none"))
    try:
        with sentry_sdk.isolation_scope() as scope:
            scope.set_client(client)
            assert SENTRY.active()
            assert sentry_traces()
        assert not SENTRY.active()
    finally:
        client.close()


def test_a_client_of_the_current_scope_traces_there_only() -> None:
    client = sentry_sdk.Client(**sentry_options(capture.CaptureTransport(None), scrubbed=True, integrations="none"))
    try:
        with sentry_sdk.new_scope() as scope:
            scope.set_client(client)
            assert SENTRY.active()
            assert sentry_traces()
        assert not SENTRY.active()
    finally:
        client.close()


PROVIDER_SET_LATER = """
import django
django.setup()
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from silo_router import tracing
for _ in range(3):
    assert not tracing.active()
    with tracing.stage("control", "verify") as span:
        assert span is tracing.NO_SPAN
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
assert tracing.active()
with tracing.stage("control", "verify") as span:
    assert span
assert [each.name for each in exporter.get_finished_spans()] == ["silo_router.control.verify"]
print("provider set later: traced")
"""


def test_a_tracer_provider_set_after_untraced_requests_traces_the_next_one() -> None:
    """In a process of its own: a global tracer provider can be set only once."""
    environment = {key: value for key, value in os.environ.items() if key != "OTEL_PYTHON_TRACER_PROVIDER"}
    result = subprocess.run(
        [sys.executable, "-c", PROVIDER_SET_LATER],
        cwd=ROOT,
        env={**environment, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "provider set later: traced" in result.stdout
