"""The OpenTelemetry SDK for these tests: one global tracer provider, a fresh SDK provider per test.

OpenTelemetry lets a process set its global tracer provider once, so the session sets
a switchboard: it hands each span to the SDK provider the running test installed (an
``InMemorySpanExporter`` behind a ``SimpleSpanProcessor``), and to a no-op tracer
between tests, so the rest of the suite runs as if no SDK were set up.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Sampler

from example_project.fake_slack import FakeSlack

from ...sentry_capture import Captured, CaptureSentry


class Switchboard(trace.TracerProvider):
    """The global tracer provider of the test session: the running test's SDK provider, or none."""

    def __init__(self) -> None:
        self.current: TracerProvider | None = None

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> trace.Tracer:
        return SwitchedTracer(self, (instrumenting_module_name, instrumenting_library_version, schema_url, attributes))


class SwitchedTracer(trace.Tracer):
    """A tracer that asks the switchboard, at each span, which provider records it."""

    def __init__(self, board: Switchboard, identity: tuple[Any, ...]) -> None:
        self.board = board
        self.identity = identity

    def _tracer(self) -> trace.Tracer:
        provider = self.board.current
        return trace.NoOpTracer() if provider is None else provider.get_tracer(*self.identity)

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        return self._tracer().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._tracer().start_as_current_span(*args, **kwargs)


class Exported:
    """What the SDK exported during one test, with the questions the tests ask of it."""

    def __init__(self, exporter: InMemorySpanExporter, provider: TracerProvider) -> None:
        self.exporter = exporter
        self.provider = provider

    @property
    def spans(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.spans if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"{len(found)} spans named {name}: {sorted(span.name for span in self.spans)}"
        return found[0]

    def by_id(self, span_id: int) -> ReadableSpan | None:
        return next((span for span in self.spans if span.context is not None and span.context.span_id == span_id), None)

    def parent_of(self, span: ReadableSpan) -> ReadableSpan | None:
        return None if span.parent is None else self.by_id(span.parent.span_id)

    def ancestors(self, span: ReadableSpan) -> list[str]:
        """The names of ``span``'s exported ancestors, nearest first."""
        found: list[str] = []
        parent = self.parent_of(span)
        while parent is not None:
            found.append(parent.name)
            parent = self.parent_of(parent)
        return found


@pytest.fixture(scope="session")
def switchboard() -> Switchboard:
    """Set once: the process's global tracer provider."""
    current = trace.get_tracer_provider()
    if isinstance(current, Switchboard):
        return current
    board = Switchboard()
    trace.set_tracer_provider(board)
    assert trace.get_tracer_provider() is board, f"a global tracer provider was already set: {current!r}"
    return board


def install(board: Switchboard, sampler: Sampler | None = None) -> Exported:
    """A fresh SDK provider with an in-memory exporter, recording from now on."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    board.current = provider
    return Exported(exporter, provider)


@pytest.fixture
def otel(switchboard: Switchboard) -> Iterator[Exported]:
    """The spans the OpenTelemetry SDK exports during this test."""
    exported = install(switchboard)
    try:
        yield exported
    finally:
        switchboard.current = None
        exported.provider.shutdown()


def hex_id(value: int, digits: int) -> str:
    """An OpenTelemetry id as the hex digits Sentry and ``traceparent`` write."""
    return format(value, f"0{digits}x")


def exported_text(span: ReadableSpan) -> list[str]:
    """Every string an exported span carries: name, attributes, events, links and status."""
    texts = [span.name, span.status.description or ""]
    mappings: list[Any] = [span.attributes or {}]
    mappings += [event.attributes or {} for event in span.events]
    mappings += [link.attributes or {} for link in span.links]
    texts += [event.name for event in span.events]
    for mapping in mappings:
        for key, value in mapping.items():
            texts.append(key)
            texts.extend(str(each) for each in (value if isinstance(value, tuple) else (value,)))
    return texts


@pytest.fixture
def sentry(capture_sentry: CaptureSentry) -> Captured:
    """sentry-sdk initialised as README recommends (its scrubbing hooks on), sending to a capture transport."""
    return capture_sentry(scrubbed=True)


@pytest.fixture
def fake_slack(settings: Any) -> Iterator[FakeSlack]:
    """A fake Slack on loopback that the region's replies go to."""
    with FakeSlack(signing_secret=settings.SLACK_SIGNING_SECRET, bot_token="xoxb-tests") as server:
        settings.SILO_ROUTER = {
            **settings.SILO_ROUTER,
            "SLACK": {**settings.SILO_ROUTER["SLACK"], "API_URL": server.api_url},
            "REDACTED_URL_PREFIXES": [f"{server.base_url}/response/"],
        }
        yield server
