"""A handler's Slack call through the proxy shows in the handler's trace."""

from __future__ import annotations

import uuid

import pytest

from example_project.fake_slack import FakeSlack
from silo_router import tracing

from ..sentry_capture import Captured, CaptureSentry
from .conftest import ProxyClient

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def captured(capture_sentry: CaptureSentry) -> Captured:
    """sentry-sdk with its default integrations and the library's sampler, without README's scrubbing hooks."""
    return capture_sentry(scrubbed=False)


def test_the_proxy_continues_the_callers_trace(
    proxied: FakeSlack, proxy_client: ProxyClient, captured: Captured
) -> None:
    trace_id = uuid.uuid4().hex
    incoming = {"sentry-trace": f"{trace_id}-{uuid.uuid4().hex[:16]}-1"}
    with tracing.flow("region", "handler", "a handler", carrier=incoming):
        proxy_client("us").auth_test()
    spans = {span.op: span for span in captured.spans()}
    assert {"silo_router.region.handler", "silo_router.control.proxy"} <= set(spans)
    assert spans["silo_router.region.handler"].trace_id == trace_id
    assert spans["silo_router.control.proxy"].trace_id == trace_id
    assert spans["silo_router.control.proxy"]["region"] == "us"
    assert spans["silo_router.control.proxy"]["method"] == "auth.test"
