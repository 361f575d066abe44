"""With opentelemetry-api alone (the ``[otel]`` extra: no SDK, no provider) nothing is traced and nothing fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_spans_are_no_ops_and_cost_little_without_the_sdk() -> None:
    """In a process of its own, where the SDK cannot be imported; the cost is printed (``-s``), not asserted."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.tracing.otel.no_sdk_cost", "5000"],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    print(result.stdout)
    assert result.returncode == 0, result.stderr
    assert "no-op spans, no errors" in result.stdout


WITHOUT_OPENTELEMETRY = """
import sys
sys.modules["opentelemetry"] = None  # not installed at all
import django
django.setup()
from silo_router import tracing
from silo_router.tracing import metrics, registry
assert [backend.name for backend in registry.BACKENDS] == ["sentry"], registry.BACKENDS
assert not registry.otel_enabled()
with tracing.flow("region", "receive", carrier={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}) as span:
    assert span is tracing.NO_SPAN and tracing.propagation_headers() == {}
metrics.count(metrics.ATTEMPTS, outcome="delivered")
print("without opentelemetry: fine")
"""


def test_the_library_works_without_opentelemetry_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_OPENTELEMETRY],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "without opentelemetry: fine" in result.stdout
