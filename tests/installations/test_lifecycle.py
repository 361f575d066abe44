"""Lifecycle events deactivate installations; the resolver then routes nothing else from them."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from silo_router.control.models import Integration, OrganizationMapping, SlackInstallation
from silo_router.control.resolver import ModelResolver, Target
from silo_router.control.slack import lifecycle
from silo_router.control.slack.authorizer import InstallationAuthorizer
from silo_router.control.slack.store import DjangoInstallationStore
from silo_router.providers.base import InboundRequest, RoutingKeys
from silo_router.providers.slack import SlackProvider
from tests.slack_signing import block_actions, event_callback, interactive_body

from .builders import org_wide_install, workspace_install

pytestmark = pytest.mark.django_db


def parse(payload: dict[str, Any], *, form: bool = False) -> InboundRequest:
    body = interactive_body(payload) if form else json.dumps(payload).encode()
    content_type = "application/x-www-form-urlencoded" if form else "application/json"
    return SlackProvider(signing_secrets=["unused"]).parse(body=body, headers={"content-type": content_type})


def lifecycle_event(
    event: dict[str, Any], *, team_id: str = "T0US00001", event_id: str = "Ev0LIFE01"
) -> InboundRequest:
    payload = event_callback(team_id=team_id, event_type=event["type"], event_id=event_id)
    payload["event"] = event
    return parse(payload)


def app_uninstalled(**kwargs: Any) -> InboundRequest:
    return lifecycle_event({"type": "app_uninstalled"}, **kwargs)


def tokens_revoked(*, bot: list[str] | None = None, oauth: list[str] | None = None, **kwargs: Any) -> InboundRequest:
    tokens: dict[str, list[str]] = {}
    if bot is not None:
        tokens["bot"] = bot
    if oauth is not None:
        tokens["oauth"] = oauth
    return lifecycle_event({"type": "tokens_revoked", "tokens": tokens}, **kwargs)


@pytest.fixture
def installed(store: DjangoInstallationStore, acme: OrganizationMapping) -> Integration:
    return store.save_for(workspace_install(), organization=acme)


def test_app_uninstalled_deactivates_the_installation(installed: Integration) -> None:
    auth = InstallationAuthorizer()
    assert auth.authorize(RoutingKeys(team_id="T0US00001")) is not None

    assert lifecycle.apply(app_uninstalled(), str(installed.pk)) == "app_uninstalled"

    installed.refresh_from_db()
    assert not installed.active and installed.deactivation_reason == "app_uninstalled"
    record = SlackInstallation.objects.get(integration=installed)
    assert not record.has_bot_token and record.user_token is None and record.incoming_webhook_url is None
    assert auth.authorize(RoutingKeys(team_id="T0US00001")) is None


def test_tokens_revoked_for_the_bot_deactivates(installed: Integration) -> None:
    assert lifecycle.apply(tokens_revoked(bot=["U0US00001"], oauth=[]), str(installed.pk)) == "tokens_revoked"
    installed.refresh_from_db()
    assert not installed.active and installed.deactivation_reason == "tokens_revoked"


def test_tokens_revoked_of_users_only_wipes_the_user_token(installed: Integration) -> None:
    assert lifecycle.apply(tokens_revoked(oauth=["U0INSTALL1"]), str(installed.pk)) is None
    installed.refresh_from_db()
    record = SlackInstallation.objects.get(integration=installed)
    assert installed.active and record.user_token is None
    assert record.bot_token == "xoxb-T0US00001-secret-bot-token"


def test_tokens_revoked_of_another_bot_or_user_changes_nothing(installed: Integration) -> None:
    assert lifecycle.apply(tokens_revoked(bot=["U0SOMEBOT"], oauth=["U0SOMEONE"]), str(installed.pk)) is None
    record = SlackInstallation.objects.get(integration=installed)
    assert record.integration.active and record.user_token is not None and record.has_bot_token


def test_other_requests_and_unknown_installations_are_left_alone(
    store: DjangoInstallationStore, installations: Any
) -> None:
    installed = store.save_for(workspace_install(), organization=None)  # adopts the T0US00001 routing row
    assert lifecycle.apply(parse(event_callback()), str(installed.pk)) is None
    assert lifecycle.apply(parse(block_actions(), form=True), str(installed.pk)) is None
    assert lifecycle.apply(app_uninstalled(), None) is None
    assert lifecycle.apply(app_uninstalled(), "999999") is None
    # A routing-only row (no stored credentials, e.g. a single-token app) stays active.
    routing_only = Integration.objects.get(external_id="T0EU00001")
    assert lifecycle.apply(app_uninstalled(team_id="T0EU00001"), str(routing_only.pk)) is None
    routing_only.refresh_from_db()
    assert routing_only.active
    installed.refresh_from_db()
    assert installed.active


def test_the_authorized_installation_is_used_without_a_resolution(installed: Integration) -> None:
    inbound = app_uninstalled()
    authorization = InstallationAuthorizer().authorize(inbound.routing)
    assert authorization is not None
    inbound = dataclasses.replace(inbound, authorization=authorization)
    assert lifecycle.apply(inbound, None) == "app_uninstalled"


def test_a_deactivated_installation_is_unroutable_except_for_lifecycle_events(installed: Integration) -> None:
    resolver = ModelResolver()
    assert resolver.resolve(parse(event_callback())).targets == (Target("us", ("101",)),)

    uninstall = app_uninstalled()
    lifecycle.apply(uninstall, resolver.resolve(uninstall).integration_id)
    installed.refresh_from_db()

    for request in (parse(event_callback(event_id="Ev0LATER1")), parse(block_actions(), form=True)):
        resolution = resolver.resolve(request)
        assert resolution.targets == () and resolution.integration_id == str(installed.pk)
        assert resolution.reason == (
            f"installation {installed.pk} (team T0US00001) was deactivated: app_uninstalled "
            f"at {installed.deactivated_at.isoformat()}"  # type: ignore[union-attr]
        )
    # Slack's retry of the uninstall, and the tokens_revoked that comes with it, still reach the region.
    assert resolver.resolve(uninstall).targets == (Target("us", ("101",)),)
    assert resolver.resolve(tokens_revoked(bot=["U0US00001"])).targets == (Target("us", ("101",)),)


def test_a_reinstall_routes_again(store: DjangoInstallationStore, installed: Integration) -> None:
    resolver = ModelResolver()
    lifecycle.apply(app_uninstalled(), str(installed.pk))
    assert resolver.resolve(parse(event_callback())).targets == ()
    store.save(workspace_install(bot_token="xoxb-again"))
    assert resolver.resolve(parse(event_callback())).targets == (Target("us", ("101",)),)


def test_an_org_wide_deactivation_names_the_enterprise(
    store: DjangoInstallationStore, acme: OrganizationMapping
) -> None:
    org = store.save_for(org_wide_install(), organization=acme)
    payload = event_callback(team_id="T0GRID001")
    payload["enterprise_id"] = "E0ENT0001"
    payload["authorizations"] = [
        {"enterprise_id": "E0ENT0001", "team_id": None, "user_id": "U0ENT0001", "is_enterprise_install": True}
    ]
    payload["event"] = {"type": "app_uninstalled"}
    uninstall = parse(payload)
    resolver = ModelResolver()
    assert resolver.resolve(uninstall).integration_id == str(org.pk)
    assert lifecycle.apply(uninstall, str(org.pk)) == "app_uninstalled"
    later = parse({**payload, "event_id": "Ev0LATER1", "event": {"type": "app_mention", "text": "hi"}})
    reason = resolver.resolve(later).reason
    assert reason.startswith(f"installation {org.pk} (enterprise E0ENT0001) was deactivated: app_uninstalled at ")


def test_a_deactivated_workspace_install_does_not_fall_back_to_the_org_wide_one(
    store: DjangoInstallationStore,
) -> None:
    workspace = store.save_for(workspace_install("T0GRID001", enterprise_id="E0ENT0001"), organization=None)
    store.save(org_wide_install("E0ENT0001"))
    store.deactivate(workspace, reason="app_uninstalled")
    auth = InstallationAuthorizer()
    assert auth.authorize(RoutingKeys(team_id="T0GRID001", enterprise_id="E0ENT0001")) is None
    org = auth.authorize(RoutingKeys(team_id="T0GRID001", enterprise_id="E0ENT0001", is_enterprise_install=True))
    assert org is not None and org.is_enterprise_install
