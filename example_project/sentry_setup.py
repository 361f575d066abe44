"""Sentry for the example project, initialised from settings as the README recommends.

``SENTRY_DSN`` sends events to a real Sentry. ``SILO_DEMO_SENTRY_CAPTURE_DIR`` (used by
the end-to-end tests) instead writes every envelope sentry-sdk would send to a file in
that directory, one file per envelope, so a test can read what Sentry would have got.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration
from sentry_sdk.transport import Transport

from silo_router import tracing

#: Where captured envelopes go when no real DSN is wanted.
CAPTURE_DIR_ENV = "SILO_DEMO_SENTRY_CAPTURE_DIR"
#: A DSN that names no server: with the file transport nothing is sent anywhere.
CAPTURE_DSN = "https://public@sentry.invalid/1"


class FileTransport(Transport):
    """A sentry-sdk transport that writes each envelope to ``<dir>/<pid>-<n>.envelope``."""

    def __init__(self, directory: Path, options: Any = None) -> None:
        super().__init__(options)
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._numbers = itertools.count()

    def capture_envelope(self, envelope: Envelope) -> None:
        path = self.directory / f"{os.getpid()}-{next(self._numbers)}.envelope"
        path.write_bytes(envelope.serialize())


def init_sentry() -> None:
    """``sentry_sdk.init`` with the library's sampler and scrubbers, if a DSN or a capture dir is set."""
    capture_dir = os.environ.get(CAPTURE_DIR_ENV, "")
    dsn = os.environ.get("SENTRY_DSN", "")
    if not (capture_dir or dsn):
        return
    sentry_sdk.init(
        dsn=dsn or CAPTURE_DSN,
        transport=FileTransport(Path(capture_dir)) if capture_dir else None,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        traces_sampler=tracing.traces_sampler,
        before_send=tracing.before_send,
        before_send_transaction=tracing.before_send_transaction,
    )
