"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from silo_router.control.models import Integration, OrganizationMapping
from silo_router.control.options import options
from silo_router.plugins import clear_caches
from silo_router.region.handlers import slack

from . import celery_app  # noqa: F401  (configures the eager Celery app)
from .sentry_capture import capture_sentry  # noqa: F401  (a fixture for every test)
from .servers import PostgresServer, RedisServer


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    """Each test starts with no cached plugins, fresh options and no leftover handlers."""
    clear_caches()
    options.invalidate()
    before = slack.registered()
    yield
    slack.restore(before)
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


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix: None) -> Iterator[None]:
    """With ``SILO_TEST_DB=postgres`` the suite runs on a throwaway PostgreSQL cluster."""
    if os.environ.get("SILO_TEST_DB") != "postgres":
        yield
        return
    from django.conf import settings
    from django.db import connections

    server = PostgresServer().start()
    settings.DATABASES["default"].update(server.database_settings())
    connections["default"].close()
    del connections["default"]  # the next use builds a PostgreSQL connection from the new settings
    try:
        yield
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A Redis of the suite's own (skipped where not installed; a failure under CI=true)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()
