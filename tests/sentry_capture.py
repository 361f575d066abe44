"""What sentry-sdk emits in a test, kept by the library's :class:`~silo_router.tracing.capture.CaptureTransport`.

The ``capture_sentry`` fixture initialises sentry-sdk for one test and hands back a
:class:`Captured` reader. Each test says how sentry-sdk is set up:

- ``scrubbed=True``: README's ``before_send`` and ``before_send_transaction`` hooks run;
  ``scrubbed=False`` leaves them out, to show that the spans themselves carry no secret.
- ``integrations``: ``"defaults"`` (sentry-sdk's own, Django's and Celery's auto-enabled),
  ``"readme"`` (``DjangoIntegration`` and ``CeleryIntegration`` given, as README does),
  ``"none"`` (no integration at all), or a list (exactly those, without the defaults).

At the end of the test every client it started is closed and the global scope has no
client again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import pytest
import sentry_sdk
from sentry_sdk.integrations import Integration
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration

from silo_router import tracing
from silo_router.tracing import capture

#: How long work on other threads (a server's, a worker's) gets to emit its spans.
SPAN_WAIT = 30.0

Integrations = Literal["defaults", "readme", "none"] | Sequence[Integration]


def sentry_options(
    transport: capture.CaptureTransport,
    *,
    scrubbed: bool,
    integrations: Integrations = "defaults",
    traces_sample_rate: float | None = None,
) -> dict[str, Any]:
    """``sentry_sdk.init`` options sending to ``transport``, sampled by the library's ``traces_sampler``.

    ``traces_sample_rate`` replaces the library's sampler with sentry-sdk's own rate.
    """
    options: dict[str, Any] = {"dsn": capture.CAPTURE_DSN, "transport": transport}
    if traces_sample_rate is None:
        options["traces_sampler"] = tracing.traces_sampler
    else:
        options["traces_sample_rate"] = traces_sample_rate
    if scrubbed:
        options.update(before_send=tracing.before_send, before_send_transaction=tracing.before_send_transaction)
    if integrations == "readme":
        options["integrations"] = [DjangoIntegration(), CeleryIntegration()]
    elif integrations == "none":
        options.update(default_integrations=False, auto_enabling_integrations=False)
    elif not isinstance(integrations, str):
        options.update(integrations=list(integrations), default_integrations=False)
    return options


@dataclasses.dataclass(frozen=True)
class Span(capture.CapturedSpan):
    """A captured span whose ``silo_router.<name>`` data reads as ``span["name"]`` (a full name works too)."""

    def __getitem__(self, name: str) -> Any:
        return self.data[_attribute(name)]

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(_attribute(name), default)


def _attribute(name: str) -> str:
    return name if "." in name else f"silo_router.{name}"


def _as_span(span: capture.CapturedSpan) -> Span:
    return Span(**{field.name: getattr(span, field.name) for field in dataclasses.fields(capture.CapturedSpan)})


class Captured:
    """What sentry-sdk sent to one :class:`~silo_router.tracing.capture.CaptureTransport`, read back.

    Every reader flushes sentry-sdk first, so what a finished span sent is there.
    """

    def __init__(self, transport: capture.CaptureTransport) -> None:
        self.transport = transport

    def flush(self) -> None:
        sentry_sdk.flush()

    def items(self, type: str) -> list[dict[str, Any]]:
        """The payloads of every envelope item of ``type``."""
        self.flush()
        return capture.items(self.transport, type)

    def transactions(self) -> list[capture.CapturedTransaction]:
        """Every transaction sent, its spans read as :class:`Span`."""
        self.flush()
        return [
            dataclasses.replace(each, root=_as_span(each.root), spans=tuple(_as_span(span) for span in each.spans))
            for each in capture.transactions(self.transport)
        ]

    def transaction(self, op: str) -> capture.CapturedTransaction:
        """The first transaction whose root span is ``op``."""
        return next(each for each in self.transactions() if each.root.op == op)

    def spans(self) -> list[Span]:
        """Every span sent: each transaction's root span and its children."""
        self.flush()
        return [_as_span(span) for each in capture.transactions(self.transport) for span in each.all_spans]

    def ops(self) -> set[str]:
        return {span.op for span in self.spans()}

    def all(self, op: str) -> list[Span]:
        return [span for span in self.spans() if span.op == op]

    def one(self, op: str) -> Span:
        matching = self.all(op)
        assert len(matching) == 1, f"{len(matching)} spans {op}: {[s.description for s in matching]}"
        return matching[0]

    def metrics(self, name: str) -> list[dict[str, Any]]:
        """The metric items named ``name``, with the library's attributes (not sentry-sdk's own) as plain values."""
        return [
            {**item, "attributes": {key: value["value"] for key, value in item["attributes"].items() if "." not in key}}
            for batch in self.items("trace_metric")
            for item in batch.get("items", ())
            if item["name"] == name
        ]

    def item_types(self) -> set[str]:
        self.flush()
        return {item.type for each in capture.captured(self.transport) for item in each.envelope.items if item.type}

    def serialized(self) -> list[bytes]:
        """Every envelope sent, as the bytes sentry-sdk would have posted."""
        self.flush()
        return [each.envelope.serialize() for each in capture.captured(self.transport)]

    def everything(self) -> str:
        """Every byte sent, as text, to search for secrets."""
        return b"\n".join(self.serialized()).decode("utf-8", "replace")

    def wait_for(self, op: str, *, count: int = 1) -> list[Span]:
        """Spans named ``op`` once ``count`` of them were sent (work on other threads ends later)."""
        deadline = time.monotonic() + SPAN_WAIT
        while True:
            found = self.all(op)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def wait_for_transaction(self, name: str) -> capture.CapturedTransaction:
        """The first transaction named ``name`` (a Celery task's name, say) once it was sent."""
        deadline = time.monotonic() + SPAN_WAIT
        while True:
            found = [each for each in self.transactions() if each.name == name]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"no transaction {name}"
            time.sleep(0.05)


CaptureSentry = Callable[..., Captured]


@pytest.fixture
def capture_sentry() -> Iterator[CaptureSentry]:
    """``capture_sentry(scrubbed=..., integrations=..., directory=None, traces_sample_rate=None)``:
    sentry-sdk initialised for this test, sending to a capture transport (kept in memory,
    and in ``directory`` when given)."""
    clients: list[Any] = []

    def start(
        *,
        scrubbed: bool,
        integrations: Integrations = "defaults",
        directory: str | Path | None = None,
        traces_sample_rate: float | None = None,
    ) -> Captured:
        transport = capture.CaptureTransport(directory)
        sentry_sdk.init(
            **sentry_options(
                transport, scrubbed=scrubbed, integrations=integrations, traces_sample_rate=traces_sample_rate
            )
        )
        clients.append(sentry_sdk.get_client())
        return Captured(transport)

    try:
        yield start
    finally:
        for client in clients:
            client.close()
        sentry_sdk.get_global_scope().set_client(None)
