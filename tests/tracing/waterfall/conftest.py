"""sentry-sdk initialised as the README recommends, with the library's capture transport."""

from __future__ import annotations

from pathlib import Path

import pytest
import sentry_sdk

from silo_router.tracing import capture

from ...sentry_capture import CaptureSentry, sentry_options


def init_capturing(transport: capture.CaptureTransport, *, scrubbed: bool = True) -> None:
    """``sentry_sdk.init`` with the library's sampler (and scrubbers), sending to ``transport``."""
    sentry_sdk.init(**sentry_options(transport, scrubbed=scrubbed))


def stop_capturing() -> None:
    """Close the client :func:`init_capturing` started (it flushes); no client is left on."""
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


@pytest.fixture
def capture_dir(tmp_path: Path) -> Path:
    return tmp_path / "sentry"


@pytest.fixture
def captured(capture_sentry: CaptureSentry, capture_dir: Path) -> capture.CaptureTransport:
    """A capture transport keeping envelopes in memory and in ``capture_dir``."""
    return capture_sentry(scrubbed=True, directory=capture_dir).transport
