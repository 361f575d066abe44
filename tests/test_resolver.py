"""The model-backed resolver: precedence, hints, fan-out, and its per-process cache."""

from __future__ import annotations

from typing import Any

import pytest

from silo_router.control.models import Integration, OrganizationMapping
from silo_router.control.resolver import ModelResolver, Target
from silo_router.providers.base import InboundRequest, RoutingKeys

pytestmark = pytest.mark.django_db


def inbound(
    team: str | None = None, enterprise: str | None = None, *, type: str = "block_actions", hint: str | None = None
) -> InboundRequest:
    return InboundRequest(
        provider="slack",
        type=type,
        name="x",
        payload={},
        routing=RoutingKeys(team_id=team, enterprise_id=enterprise, app_id="A0APP0001"),
        idempotency_key="k",
        organization_hint=hint,
    )


def test_workspace_install_beats_org_wide_and_hint_narrows(installations: Any) -> None:
    resolver = ModelResolver()
    assert resolver.resolve(inbound("T0US00001", "E0ENT0001")).targets == (Target("us", ("101",)),)
    assert resolver.resolve(inbound(None, "E0ENT0001")).targets == (Target("eu", ("201",)),)
    assert resolver.resolve(inbound("T0BOTH001", hint="initech")).targets == (Target("eu", ("202",)),)
    assert resolver.resolve(inbound("T0BOTH001", hint="not-ours")).targets == (Target("us", ("101",)),)
    both = resolver.resolve(inbound("T0BOTH001", type="event_callback")).targets
    assert both == (Target("us", ("101",)), Target("eu", ("202",)))
    assert resolver.resolve(inbound("T0NOBODY1")).targets == ()
    assert resolver.resolve(inbound()).targets == ()


def test_cache_saves_queries_and_is_cleared_by_changes(installations: Any, django_assert_num_queries: Any) -> None:
    resolver = ModelResolver()
    resolver.resolve(inbound("T0US00001"))
    with django_assert_num_queries(0):
        for _ in range(10):
            assert resolver.resolve(inbound("T0US00001")).targets == (Target("us", ("101",)),)
    moved = OrganizationMapping.objects.create(organization_id="102", slug="acme-eu", region="eu")
    Integration.objects.get(external_id="T0US00001").organizations.set([moved])
    assert resolver.resolve(inbound("T0US00001")).targets == (Target("eu", ("102",)),)


def test_cache_can_be_turned_off(installations: Any, settings: Any, django_assert_num_queries: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RESOLVER_CACHE_SECONDS": 0}
    resolver = ModelResolver()
    resolver.resolve(inbound("T0US00001"))
    with django_assert_num_queries(2):
        resolver.resolve(inbound("T0US00001"))
