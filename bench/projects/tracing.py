"""The tracing back ends of the overhead benchmark, each as a user would switch it on, never reaching a network.

``BENCH_TRACING`` picks one per server (``settings_silo_traced``):

  off       sentry-sdk not initialised, ``SILO_ROUTER["OPENTELEMETRY"] = False``
  otel_api  opentelemetry-api installed and on (the default), no SDK configured: every
            span is OpenTelemetry's no-op span
  sentry    ``sentry_sdk.init`` as the README recommends (DjangoIntegration,
            CeleryIntegration, the library's ``traces_sampler`` and scrubbers): every
            Slack request is sampled. The transport is sentry-sdk's own HTTP transport
            (its queue, background thread, serialisation and gzip) with the network call
            left out: each envelope is counted and dropped.
  sentry_unscrubbed
            the same without the library's ``before_send`` and ``before_send_transaction``:
            not a set-up to deploy (capabilities would reach Sentry), only to show what
            the scrubbing costs
  otel      the OpenTelemetry SDK: a ``TracerProvider`` with a ``BatchSpanProcessor``
            whose exporter counts and drops the spans, and a ``MeterProvider`` with an
            in-memory reader for the library's metrics

When a server process exits it writes what its back end handled to
``<counts dir>/<pid>.json``, so the benchmark can check that tracing really was on for
every request.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MODES = ("off", "otel_api", "sentry", "sentry_unscrubbed", "otel")
#: A DSN that names no server; the transport never sends anything anyway.
NO_SERVER_DSN = "https://public@sentry.invalid/1"

_counts: Counter[str] = Counter()
_lock = threading.Lock()


def count(**increments: int) -> None:
    """Add to this process's counts."""
    with _lock:
        _counts.update(increments)


def _write_counts(directory: Path, mode: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    with _lock:
        counts = dict(_counts)
    (directory / f"{os.getpid()}.json").write_text(json.dumps({"mode": mode, **counts}))


def setup(mode: str, counts_dir: Path) -> bool:
    """Switch tracing ``mode`` on in this process; the value for ``SILO_ROUTER["OPENTELEMETRY"]``."""
    if mode not in MODES:
        raise ValueError(f"BENCH_TRACING={mode!r}: one of {', '.join(MODES)}")
    # Registered first, so it runs last: after sentry-sdk and the OpenTelemetry SDK flushed at exit.
    atexit.register(_write_counts, counts_dir, mode)
    if mode in ("sentry", "sentry_unscrubbed"):
        _init_sentry(scrubbed=mode == "sentry")
    elif mode == "otel":
        _init_otel_sdk()
    return mode in ("otel_api", "otel")


def _init_sentry(*, scrubbed: bool) -> None:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration

    from silo_router import tracing

    sentry_sdk.init(
        dsn=NO_SERVER_DSN,
        transport=_sentry_transport(),
        integrations=[DjangoIntegration(**_options("BENCH_SENTRY_DJANGO")), CeleryIntegration()],
        traces_sampler=tracing.traces_sampler,
        before_send=tracing.before_send if scrubbed else None,
        before_send_transaction=tracing.before_send_transaction if scrubbed else None,
        **_options("BENCH_SENTRY_OPTIONS"),
    )


def _options(variable: str) -> dict[str, Any]:
    """Options from ``name=value,...`` in environment ``variable`` (0/1 are booleans, other values strings),
    for measuring what one option of ``DjangoIntegration`` or ``sentry_sdk.init`` costs."""
    found: dict[str, Any] = {}
    for pair in filter(None, (part.strip() for part in os.environ.get(variable, "").split(","))):
        name, _, value = pair.partition("=")
        found[name.strip()] = {"0": False, "1": True}.get(value.strip(), value.strip())
    return found


def _sentry_transport() -> type[Any]:
    from sentry_sdk.transport import HttpTransport

    class NetworklessTransport(HttpTransport):  # type: ignore[misc]
        """sentry-sdk's HTTP transport up to the request, which it counts and drops."""

        def _send_request(self, body: bytes, headers: Any, endpoint_type: Any, envelope: Any = None) -> None:
            transactions = spans = requests = 0
            for item in envelope.items if envelope is not None else ():
                if item.type == "transaction":
                    children = item.payload.json.get("spans") or ()
                    transactions += 1
                    spans += 1 + len(children)
                    requests += any(child.get("op") == "silo_router.control.request" for child in children)
            count(
                envelopes=1, body_bytes=len(body), transactions=transactions, spans=spans, request_transactions=requests
            )

        def record_lost_event(self, reason: str, *args: Any, **kwargs: Any) -> None:
            count(**{f"lost_{reason}": int(kwargs.get("quantity", 1))})
            super().record_lost_event(reason, *args, **kwargs)

    return NetworklessTransport


def _init_otel_sdk() -> None:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class CountingExporter(SpanExporter):
        """Counts the spans it is given (and the request spans among them), then drops them."""

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            requests = sum(1 for span in spans if span.name == "silo_router.control.request")
            count(spans=len(spans), request_spans=requests)
            return SpanExportResult.SUCCESS

    resource = Resource.create({"service.name": "silo-router-bench-control"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(CountingExporter()))
    trace.set_tracer_provider(provider)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[InMemoryMetricReader()]))


def read_counts(counts_dir: Path) -> dict[str, int]:
    """The counts every process of one server wrote, summed (``processes``: how many wrote)."""
    total: Counter[str] = Counter()
    for path in sorted(counts_dir.glob("*.json")):
        data = json.loads(path.read_text())
        data.pop("mode", None)
        total.update({key: int(value) for key, value in data.items()})
        total["processes"] += 1
    return dict(total)
