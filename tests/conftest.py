"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from silo_router.control.models import Integration, OrganizationMapping
from silo_router.control.options import options
from silo_router.plugins import clear_caches
from silo_router.region.handlers import slack

from . import celery_app  # noqa: F401  (configures the eager Celery app)


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    """Each test starts with no cached plugins, fresh options and no leftover handlers."""
    clear_caches()
    options.invalidate()
    before = dict(slack._handlers)
    yield
    slack._handlers.clear()
    slack._handlers.update(before)
    options.invalidate()


@pytest.fixture
def installations(db: None) -> dict[str, OrganizationMapping]:
    """Workspaces: T0US00001 in us, T0EU00001 in eu, T0BOTH001 in both; E0ENT0001 org-wide in eu."""
    acme = OrganizationMapping.objects.create(organization_id="101", slug="acme", region="us")
    globex = OrganizationMapping.objects.create(organization_id="201", slug="globex", region="eu")
    initech = OrganizationMapping.objects.create(organization_id="202", slug="initech", region="eu")
    Integration.objects.create(provider="slack", external_id="T0US00001").organizations.add(acme)
    Integration.objects.create(provider="slack", external_id="T0EU00001").organizations.add(globex)
    both = Integration.objects.create(provider="slack", external_id="T0BOTH001")
    both.organizations.add(acme, initech)
    Integration.objects.create(provider="slack", external_id="E0ENT0001", enterprise_id="E0ENT0001").organizations.add(
        globex
    )
    return {"acme": acme, "globex": globex, "initech": initech}
