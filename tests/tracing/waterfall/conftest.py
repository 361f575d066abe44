"""sentry-sdk initialised as the README recommends, with the library's capture transport."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sentry_sdk

from silo_router import tracing
from silo_router.tracing import capture


def init_capturing(transport: capture.CaptureTransport, *, scrubbed: bool = True) -> None:
    """``sentry_sdk.init`` with the library's sampler (and scrubbers), sending to ``transport``."""
    scrubbers = (
        {"before_send": tracing.before_send, "before_send_transaction": tracing.before_send_transaction}
        if scrubbed
        else {}
    )
    sentry_sdk.init(dsn=capture.CAPTURE_DSN, transport=transport, traces_sampler=tracing.traces_sampler, **scrubbers)


@pytest.fixture
def capture_dir(tmp_path: Path) -> Path:
    return tmp_path / "sentry"


@pytest.fixture
def captured(capture_dir: Path) -> Iterator[capture.CaptureTransport]:
    """A capture transport keeping envelopes in memory and in ``capture_dir``."""
    transport = capture.CaptureTransport(capture_dir)
    init_capturing(transport)
    yield transport
    sentry_sdk.get_client().close()
    sentry_sdk.init()
