"""Fixtures for the installation store tests."""

from __future__ import annotations

from typing import Any

import pytest

from silo_router.control.models import OrganizationMapping
from silo_router.control.slack.store import DjangoInstallationStore


@pytest.fixture
def store() -> DjangoInstallationStore:
    return DjangoInstallationStore()


@pytest.fixture
def acme(db: None) -> OrganizationMapping:
    return OrganizationMapping.objects.create(organization_id="101", slug="acme", region="us")


@pytest.fixture
def globex(db: None) -> OrganizationMapping:
    return OrganizationMapping.objects.create(organization_id="201", slug="globex", region="eu")


@pytest.fixture
def oauth_app(settings: Any) -> None:
    """A multi-workspace app: no single BOT_TOKEN, OAuth credentials set."""
    slack = {k: v for k, v in settings.SILO_ROUTER["SLACK"].items() if k != "BOT_TOKEN"}
    slack.update({"CLIENT_ID": "111.222", "CLIENT_SECRET": "tests-client-secret"})
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": slack}
