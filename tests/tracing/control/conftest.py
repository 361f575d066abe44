"""Capture what sentry-sdk emits (transactions and trace metrics) for the control silo's tracing tests."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope as SentryEnvelope
from sentry_sdk.integrations import Integration
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.transport import Transport

from silo_router import tracing


class CapturingTransport(Transport):
    """Keeps what sentry-sdk would send (transactions, trace metrics), instead of sending it."""

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.transactions: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.raw: list[bytes] = []

    def capture_envelope(self, envelope: SentryEnvelope) -> None:
        for item in envelope.items:
            raw = item.get_bytes()
            self.raw.append(raw)
            if item.type == "transaction":
                self.transactions.append(json.loads(raw))
            elif item.type == "trace_metric":
                self.metrics.extend(json.loads(raw)["items"])


@dataclasses.dataclass(frozen=True)
class CapturedSpan:
    """A span as Sentry received it, root spans (transactions) and child spans alike."""

    op: str
    description: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    data: dict[str, Any]
    tags: dict[str, Any]
    links: list[dict[str, Any]]
    status: str | None
    is_root: bool

    def __getitem__(self, name: str) -> Any:
        """The attribute ``silo_router.<name>`` (or a full name) from the span's data."""
        return self.data[name if "." in name else f"silo_router.{name}"]

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name if "." in name else f"silo_router.{name}", default)


class Captured:
    """What one test made sentry-sdk send."""

    def __init__(self, transport: CapturingTransport) -> None:
        self.transport = transport

    def flush(self) -> None:
        sentry_sdk.flush()

    @property
    def transactions(self) -> list[dict[str, Any]]:
        self.flush()
        return self.transport.transactions

    def spans(self) -> list[CapturedSpan]:
        found = []
        for event in self.transactions:
            trace = event["contexts"]["trace"]
            found.append(
                _span(trace, tags=event.get("tags") or {}, description=event.get("transaction", ""), root=True)
            )
            found.extend(
                _span(span, tags=span.get("tags") or {}, description=span.get("description", ""))
                for span in event.get("spans", ())
            )
        return found

    def ops(self) -> set[str]:
        return {span.op for span in self.spans()}

    def one(self, op: str) -> CapturedSpan:
        matching = self.all(op)
        assert len(matching) == 1, f"{len(matching)} spans {op}: {[s.description for s in matching]}"
        return matching[0]

    def all(self, op: str) -> list[CapturedSpan]:
        return [span for span in self.spans() if span.op == op]

    def metrics(self, name: str) -> list[dict[str, Any]]:
        """The metric items named ``name``, with the library's attributes (not sentry-sdk's own) as plain values."""
        self.flush()
        return [
            {**item, "attributes": {key: value["value"] for key, value in item["attributes"].items() if "." not in key}}
            for item in self.transport.metrics
            if item["name"] == name
        ]

    def everything(self) -> str:
        """Every byte sent, as text, to search for secrets."""
        self.flush()
        return b"\n".join(self.transport.raw).decode("utf-8", "replace")


def _span(raw: dict[str, Any], *, tags: dict[str, Any], description: str, root: bool = False) -> CapturedSpan:
    return CapturedSpan(
        op=raw.get("op", ""),
        description=description,
        trace_id=raw["trace_id"],
        span_id=raw["span_id"],
        parent_span_id=raw.get("parent_span_id"),
        data=raw.get("data") or {},
        tags=tags,
        links=raw.get("links") or [],
        status=raw.get("status"),
        is_root=root,
    )


Capture = Callable[..., Captured]


@pytest.fixture
def capture() -> Iterator[Capture]:
    """``capture()``: sentry-sdk initialised as README recommends (Django's and Celery's
    integrations, the library's sampler), sending to a capturing transport.

    README's scrubbing hooks are left out on purpose: what the library writes into
    spans must be free of capabilities by itself.
    """

    def start(integrations: Sequence[Integration] | None = None) -> Captured:
        transport = CapturingTransport()
        sentry_sdk.init(
            dsn="https://key@sentry.invalid/1",
            transport=transport,
            traces_sampler=tracing.traces_sampler,
            integrations=[DjangoIntegration(), CeleryIntegration()] if integrations is None else list(integrations),
            default_integrations=False,
        )
        return Captured(transport)

    yield start
    sentry_sdk.get_client().close()
    sentry_sdk.init()


@pytest.fixture
def captured(capture: Capture) -> Captured:
    """sentry-sdk initialised as README recommends, with a capturing transport."""
    return capture()
