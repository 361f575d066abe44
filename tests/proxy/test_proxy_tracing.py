"""A handler's Slack call through the proxy shows in the handler's trace."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope as SentryEnvelope
from sentry_sdk.transport import Transport

from example_project.fake_slack import FakeSlack
from silo_router import tracing

from .conftest import ProxyClient

pytestmark = pytest.mark.django_db(transaction=True)


class CapturingTransport(Transport):
    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.transactions: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: SentryEnvelope) -> None:
        for item in envelope.items:
            if item.type == "transaction":
                self.transactions.append(json.loads(item.get_bytes()))


@pytest.fixture
def captured() -> Iterator[CapturingTransport]:
    transport = CapturingTransport()
    sentry_sdk.init(dsn="https://key@sentry.invalid/1", transport=transport, traces_sampler=tracing.traces_sampler)
    yield transport
    sentry_sdk.get_client().close()
    sentry_sdk.init()


def test_the_proxy_continues_the_callers_trace(
    proxied: FakeSlack, proxy_client: ProxyClient, captured: CapturingTransport
) -> None:
    trace_id = uuid.uuid4().hex
    incoming = {"sentry-trace": f"{trace_id}-{uuid.uuid4().hex[:16]}-1"}
    with tracing.flow("region", "handler", "a handler", carrier=incoming):
        proxy_client("us").auth_test()
    sentry_sdk.flush()
    spans = {
        span["op"]: span
        for transaction in captured.transactions
        for span in [transaction["contexts"]["trace"], *transaction.get("spans", ())]
    }
    assert {"silo_router.region.handler", "silo_router.control.proxy"} <= set(spans)
    assert spans["silo_router.region.handler"]["trace_id"] == trace_id
    assert spans["silo_router.control.proxy"]["trace_id"] == trace_id
    assert spans["silo_router.control.proxy"]["data"]["silo_router.region"] == "us"
    assert spans["silo_router.control.proxy"]["data"]["silo_router.method"] == "auth.test"
