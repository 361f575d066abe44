"""Unroutable payloads: kept, counted on their own, and routed again by replay once mapped."""

from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from silo_router.control import rerouting
from silo_router.control.models import Integration, OrganizationMapping, Payload
from silo_router.region.handlers import slack

from .slack_signing import block_actions, interactive_body, post_slack

pytestmark = pytest.mark.django_db


@pytest.fixture
def handled(installations: Any) -> list[tuple[str, str | None]]:
    seen: list[tuple[str, str | None]] = []

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        seen.append((request.envelope.region, request.organization_id))

    return seen


def click_from_unknown_workspace(client: Client, team_id: str = "T0NEW0001") -> Payload:
    assert post_slack(client, interactive_body(block_actions(team_id=team_id))).status_code == 200
    return Payload.objects.get(state="unroutable")


def map_workspace(team_id: str = "T0NEW0001", region: str = "eu") -> None:
    org = OrganizationMapping.objects.create(organization_id="301", slug="newco", region=region)
    Integration.objects.create(provider="slack", external_id=team_id).organizations.add(org)


def test_replay_routes_an_unroutable_payload_once_its_mapping_exists(client: Client, handled: list[Any]) -> None:
    kept = click_from_unknown_workspace(client)
    map_workspace()
    result = rerouting.replay([str(kept.pk)])
    assert (result.rerouted, result.still_unroutable) == (1, 0)
    (routed,) = Payload.objects.all()
    assert (routed.region, routed.state, routed.idempotency_key) == ("eu", "delivered", kept.idempotency_key)
    assert handled == [("eu", "301")]


def test_a_still_unroutable_payload_stays_unroutable_with_a_fresh_reason(client: Client, handled: list[Any]) -> None:
    kept = click_from_unknown_workspace(client)
    result = rerouting.replay([str(kept.pk)])
    assert (result.rerouted, result.still_unroutable) == (0, 1)
    again = Payload.objects.get(pk=kept.pk)
    assert again.state == "unroutable" and "checked again" in again.last_error and again.replays == 1
    assert handled == []


def test_the_replay_command_takes_unroutable_payloads(client: Client, handled: list[Any]) -> None:
    click_from_unknown_workspace(client)
    out = io.StringIO()
    call_command("silo_router_replay", "--state", "unroutable", stdout=out)
    assert "routed 0 payloads; 1 still unroutable" in out.getvalue()
    map_workspace()
    call_command("silo_router_replay", "--state", "unroutable", stdout=out)
    assert "routed 1 payloads; 0 still unroutable" in out.getvalue()
    assert handled == [("eu", "301")]


def test_status_counts_unroutable_on_their_own_and_says_what_to_do(client: Client, handled: list[Any]) -> None:
    click_from_unknown_workspace(client)
    out = io.StringIO()
    call_command("silo_router_status", stdout=out)
    header, row, *advice = out.getvalue().splitlines()
    columns = dict(zip(header.split(), row.split(), strict=False))
    assert (columns["region"], columns["failed"], columns["unroutable"]) == ("(none)", "0", "1")
    assert "silo_router_replay --state unroutable" in "\n".join(advice)
