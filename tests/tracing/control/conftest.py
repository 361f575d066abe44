"""The control silo's tracing tests read what sentry-sdk emits through ``tests/sentry_capture.py``."""

from __future__ import annotations

import pytest
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.django import DjangoIntegration

from ...sentry_capture import Captured, CaptureSentry


@pytest.fixture
def captured(capture_sentry: CaptureSentry) -> Captured:
    """sentry-sdk with Django's and Celery's integrations (and no defaults) and the library's sampler.

    README's scrubbing hooks are left out on purpose: what the library writes into
    spans must be free of capabilities by itself.
    """
    return capture_sentry(scrubbed=False, integrations=[DjangoIntegration(), CeleryIntegration()])
