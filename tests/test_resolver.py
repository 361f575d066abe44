"""The model-backed resolver: precedence, hints, fan-out, and its per-process cache."""

from __future__ import annotations

import dataclasses
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


def test_cache_stays_bounded_by_ten_thousand_unknown_team_ids(installations: Any, settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RESOLVER_CACHE_SIZE": 500}
    resolver = ModelResolver()
    for number in range(10_000):
        assert resolver.resolve(inbound(f"T0X{number:07d}")).targets == ()
    assert resolver.cache_size() <= 500
    # Known installations still resolve (and are remembered) after the flood.
    assert resolver.resolve(inbound("T0US00001")).targets == (Target("us", ("101",)),)
    assert resolver.cache_size() <= 500


def test_an_enterprise_install_routes_to_the_org_wide_integration(installations: Any) -> None:
    """Slack's authorizations[0] says which install an event is for; Bolt authorizes that one."""
    resolver = ModelResolver()
    workspace = InboundRequest(
        provider="slack",
        type="event_callback",
        name="app_mention",
        payload={},
        routing=RoutingKeys(team_id="T0US00001", enterprise_id="E0ENT0001", app_id="A0APP0001"),
        idempotency_key="k1",
    )
    org_wide = dataclasses.replace(
        workspace,
        routing=dataclasses.replace(workspace.routing, is_enterprise_install=True),
        idempotency_key="k2",
    )
    assert resolver.resolve(workspace).targets == (Target("us", ("101",)),)
    assert resolver.resolve(org_wide).targets == (Target("eu", ("201",)),)


def test_organizations_in_a_region_not_in_regions_are_dropped_with_a_reason(installations: Any) -> None:
    mars = OrganizationMapping.objects.create(organization_id="901", slug="mars-base", region="mars")
    Integration.objects.create(provider="slack", external_id="T0MARS001").organizations.add(mars)
    resolution = ModelResolver().resolve(inbound("T0MARS001"))
    assert resolution.targets == ()
    assert "mars" in resolution.reason and "REGIONS" in resolution.reason

    both = Integration.objects.create(provider="slack", external_id="T0MIXED01")
    both.organizations.add(mars, installations["acme"])
    mixed = ModelResolver().resolve(inbound("T0MIXED01", type="event_callback"))
    assert mixed.targets == (Target("us", ("101",)),)


def test_an_integration_naming_an_unregistered_provider_is_explained(installations: Any) -> None:
    Integration.objects.create(provider="slakc", external_id="T0TYPO001").organizations.add(installations["acme"])
    resolution = ModelResolver().resolve(inbound("T0TYPO001"))
    assert resolution.targets == ()
    assert "slakc" in resolution.reason and "PROVIDERS" in resolution.reason


@pytest.mark.parametrize("size", [0, -5, 1.5, "100", True, None])
def test_a_resolver_cache_size_that_is_not_a_positive_whole_number_is_refused(settings: Any, size: Any) -> None:
    from silo_router.checks import check_settings

    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RESOLVER_CACHE_SIZE": size}
    assert "silo_router.E022" in {message.id for message in check_settings()}


def test_the_default_resolver_cache_size_passes_the_checks() -> None:
    from silo_router.checks import check_settings

    assert "silo_router.E022" not in {message.id for message in check_settings()}
