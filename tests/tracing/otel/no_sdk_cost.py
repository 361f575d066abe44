"""The library with opentelemetry-api alone: no SDK, no tracer provider. No-op spans, no errors, little cost.

``python -m tests.tracing.otel.no_sdk_cost [ROUNDS]`` checks that the spans are no-ops and that
nothing fails, then prints what a span costs on that path next to the setting's off
switch and the API's own no-op span (what the back end would cost without its check).
The figures are printed, never asserted.
"""

from __future__ import annotations

import os
import sys
import timeit

sys.modules["opentelemetry.sdk"] = None  # type: ignore[assignment]  # as with the [otel] extra alone

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from django.test import override_settings  # noqa: E402
from opentelemetry import trace  # noqa: E402

from silo_router import tracing  # noqa: E402
from silo_router.tracing import links, registry  # noqa: E402

CARRIER = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
NOTIFICATION = "5b2f0c1e9d8a4b7c8e6f1a2b3c4d5e6f"
DEFAULT_ROUNDS = 50_000


def check() -> None:
    """Every call works and yields the no-op span."""
    assert registry.otel_installed() and registry.otel_enabled(), "the API is installed and the setting allows it"
    assert not tracing.active(), "no tracer provider set: the back end is off"
    with tracing.flow("control", "request", span_kind="server", provider="slack") as span:
        assert span is tracing.NO_SPAN
        span.set(kind="event_callback:app_mention", attempt=1)
        span.set_attributes(tracing.names.messaging(tracing.names.CREATE, destination="us", message_id="m"))
        span.link(links.to_notification(NOTIFICATION), links.from_headers(CARRIER))
        span.fail("rejected")
        with tracing.stage("control", "verify") as stage:
            assert stage is tracing.NO_SPAN
        assert tracing.propagation_headers() == {}
    with tracing.flow("region", "receive", carrier=CARRIER, span_kind="consumer") as span:
        assert span is tracing.NO_SPAN
    with tracing.flow("region", "notification", trace_id=NOTIFICATION, links=[links.from_headers(CARRIER)]) as span:
        assert span is tracing.NO_SPAN and span.trace_id is None
    try:
        with tracing.stage("region", "handler"):
            raise KeyError("raised inside a span")
    except KeyError:
        pass
    else:
        raise AssertionError("the exception was swallowed")
    try:
        import silo_router.tracing.otel_sampling  # noqa: F401
    except ImportError as exc:
        assert "opentelemetry-sdk" in str(exc), exc
    else:
        raise AssertionError("the sampler imported without the SDK")


def nanoseconds_per_span(body: str, rounds: int, setup: str = "pass") -> float:
    timer = timeit.Timer(body, setup=setup, globals={"tracing": tracing, "trace": trace})
    return min(timer.repeat(repeat=5, number=rounds)) / rounds * 1e9


def measure(rounds: int) -> dict[str, float]:
    stage = 'with tracing.stage("control", "verify"):\n    pass'
    figures = {"API alone, no provider (the back end's check)": nanoseconds_per_span(stage, rounds)}
    with override_settings(SILO_ROUTER={**django.conf.settings.SILO_ROUTER, "OPENTELEMETRY": False}):
        assert not registry.otel_enabled()
        figures["SILO_ROUTER['OPENTELEMETRY'] = False"] = nanoseconds_per_span(stage, rounds)
    figures["the API's no-op span itself (no check)"] = nanoseconds_per_span(
        'with tracer.start_as_current_span("silo_router.control.verify"):\n    pass',
        rounds,
        setup='tracer = trace.get_tracer("silo_router")',
    )
    return figures


def main(rounds: int = DEFAULT_ROUNDS) -> None:
    check()
    print(f"opentelemetry-api alone: no-op spans, no errors. Cost of one stage(), best of 5 x {rounds}:")
    for label, figure in measure(rounds).items():
        print(f"  {figure:8.0f} ns  {label}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ROUNDS)
