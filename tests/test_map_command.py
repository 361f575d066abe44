"""``manage.py silo_router_map``: a workspace mapped from the shell routes like one mapped in the admin."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from silo_router.control.models import Integration, OrganizationMapping
from silo_router.control.resolver import ModelResolver, Target
from silo_router.providers.base import InboundRequest, RoutingKeys

pytestmark = pytest.mark.django_db


def inbound(team: str | None, enterprise: str | None = None) -> InboundRequest:
    return InboundRequest(
        provider="slack",
        type="block_actions",
        name="x",
        payload={},
        routing=RoutingKeys(team_id=team, enterprise_id=enterprise, app_id="A0APP0001"),
        idempotency_key="k",
    )


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("silo_router_map", *args, stdout=out)
    return out.getvalue()


def test_a_mapped_workspace_routes_to_its_organizations_region_and_a_second_run_changes_nothing() -> None:
    resolver = ModelResolver()
    assert resolver.resolve(inbound("T0NEW0001")).targets == ()  # cached as unmapped
    said = run("T0NEW0001", "--organization", "acme", "--region", "eu", "--organization-id", "42")
    assert said.strip() == "slack:T0NEW0001 -> acme (region eu): mapped"
    assert resolver.resolve(inbound("T0NEW0001")).targets == (Target("eu", ("42",)),)
    assert run("T0NEW0001", "--organization", "acme").strip() == "slack:T0NEW0001 -> acme (region eu): already mapped"
    assert Integration.objects.count() == 1 and OrganizationMapping.objects.count() == 1


def test_an_org_wide_install_is_mapped_by_its_enterprise_id() -> None:
    run("E0GRID001", "--organization", "initech", "--region", "us")
    integration = Integration.objects.get(external_id="E0GRID001")
    assert integration.is_enterprise_install and integration.enterprise_id == "E0GRID001"
    assert ModelResolver().resolve(inbound(None, "E0GRID001")).targets == (Target("us", ("initech",)),)


def test_a_second_workspace_joins_an_existing_organization_without_naming_its_region() -> None:
    run("T0ONE0001", "--organization", "acme", "--region", "us")
    run("T0TWO0001", "--organization", "acme", "--enterprise", "E0GRID001")
    assert Integration.objects.get(external_id="T0TWO0001").enterprise_id == "E0GRID001"
    assert ModelResolver().resolve(inbound("T0TWO0001")).targets == (Target("us", ("acme",)),)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["T0NEW0001", "--organization", "acme", "--region", "mars"],
            "'mars' is not a region in SILO_ROUTER['REGIONS']. Valid regions: eu, us.",
        ),
        (["T0NEW0001", "--organization", "acme"], "organization 'acme' does not exist yet: give its --region"),
        (
            ["t0-lower", "--organization", "acme", "--region", "us"],
            "'t0-lower' is not a Slack team (T...) or enterprise (E...) id",
        ),
        (
            ["T0NEW0001", "--organization", "acme", "--region", "us", "--provider", "jira"],
            "'jira' is not a registered provider. Valid providers: slack.",
        ),
        (["T0NEW0001"], "give the installation's id and --organization (or --list)"),
    ],
)
def test_a_mistake_is_refused_with_what_is_valid_and_writes_nothing(args: list[str], message: str) -> None:
    with pytest.raises(CommandError) as refused:
        run(*args)
    assert message in str(refused.value)
    assert not Integration.objects.exists() and not OrganizationMapping.objects.exists()


def test_an_existing_organization_is_not_moved_to_another_region() -> None:
    run("T0ONE0001", "--organization", "acme", "--region", "us")
    with pytest.raises(CommandError, match="organization 'acme' is in region 'us', not 'eu'"):
        run("T0TWO0001", "--organization", "acme", "--region", "eu")
    assert not Integration.objects.filter(external_id="T0TWO0001").exists()


def test_remove_unmaps_and_list_shows_every_installation() -> None:
    run("T0ONE0001", "--organization", "acme", "--region", "us")
    run("T0ONE0001", "--organization", "initech", "--region", "eu")
    assert run("--list").strip() == "slack:T0ONE0001 -> acme (us), initech (eu)"
    assert run("T0ONE0001", "--organization", "acme", "--remove").strip() == "slack:T0ONE0001 -> acme: removed"
    assert ModelResolver().resolve(inbound("T0ONE0001")).targets == (Target("eu", ("initech",)),)
    with pytest.raises(CommandError, match="is not mapped to 'acme'"):
        run("T0ONE0001", "--organization", "acme", "--remove")
