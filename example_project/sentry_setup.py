"""Sentry for the example project, initialised from settings as the README recommends.

``SENTRY_DSN`` sends events to a real Sentry. ``SILO_DEMO_SENTRY_CAPTURE_DIR`` (the demo
and the end-to-end tests set it) instead keeps every envelope sentry-sdk would send in a
file of that directory, one file per envelope and many processes to one directory,
through the library's :class:`silo_router.tracing.capture.CaptureTransport`: the demo
draws its waterfalls from them, the tests read what Sentry would have got, and
``manage.py silo_router_trace <dir>`` prints them. With both set, the capture wins and
nothing is sent.
"""

from __future__ import annotations

import os

import sentry_sdk
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration

from silo_router import tracing
from silo_router.tracing.capture import CAPTURE_DSN, CaptureTransport

#: Where captured envelopes go when no real DSN is wanted.
CAPTURE_DIR_ENV = "SILO_DEMO_SENTRY_CAPTURE_DIR"


def init_sentry() -> None:
    """``sentry_sdk.init`` with the library's sampler and scrubbers, if a DSN or a capture dir is set."""
    capture_dir = os.environ.get(CAPTURE_DIR_ENV, "")
    dsn = os.environ.get("SENTRY_DSN", "")
    if not (capture_dir or dsn):
        return
    sentry_sdk.init(
        dsn=CAPTURE_DSN if capture_dir else dsn,
        transport=CaptureTransport(capture_dir, memory=False) if capture_dir else None,
        integrations=[DjangoIntegration(), CeleryIntegration()],
        traces_sampler=tracing.traces_sampler,
        before_send=tracing.before_send,
        before_send_transaction=tracing.before_send_transaction,
    )
