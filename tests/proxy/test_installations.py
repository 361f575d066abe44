"""The proxy uses each installation's own token, and only for the regions its organizations are in."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError

from example_project.fake_slack import FakeSlack
from silo_router.control.models import Integration, OrganizationMapping
from silo_router.control.slack.oauth import installation_from
from silo_router.control.slack.store import DjangoInstallationStore

from .conftest import ProxyClient, region_settings

pytestmark = pytest.mark.django_db(transaction=True)

US_TEAM, EU_TEAM, BOTH_TEAM = "T0PROXYUS", "T0PROXYEU", "T0PROXYBO"
CHANNELS = {US_TEAM: "C0PROXYUS", EU_TEAM: "C0PROXYEU", BOTH_TEAM: "C0PROXYBO"}


@pytest.fixture
def installed(settings: Any, control_url: str, fake_slack: FakeSlack) -> dict[str, str]:
    """Three workspaces installed: one for acme (us), one for globex (eu), one for both. Ids by team."""
    settings.SILO_ROUTER = region_settings(
        settings.SILO_ROUTER, api_url=fake_slack.api_url, control_url=control_url, BOT_TOKEN=None
    )
    acme = OrganizationMapping.objects.create(organization_id="101", slug="acme", region="us")
    globex = OrganizationMapping.objects.create(organization_id="201", slug="globex", region="eu")
    store = DjangoInstallationStore()
    ids: dict[str, str] = {}
    for team, organizations in ((US_TEAM, [acme]), (EU_TEAM, [globex]), (BOTH_TEAM, [acme, globex])):
        fake_slack.add_workspace(team, name=f"Workspace {team}", channels=[CHANNELS[team]])
        answer = fake_slack.install(team)
        installation = installation_from(answer, bot_id=fake_slack.workspace(team).bot_id, enterprise_url=None)
        for organization in organizations:
            integration = store.save_for(installation, organization=organization)
        ids[team] = str(integration.pk)
    return ids


def test_each_installation_calls_slack_with_its_own_token(
    installed: dict[str, str], fake_slack: FakeSlack, proxy_client: ProxyClient
) -> None:
    us = proxy_client("us", installed[US_TEAM])
    eu = proxy_client("eu", installed[EU_TEAM])
    assert us.chat_postMessage(channel=CHANNELS[US_TEAM], text="us")["ok"]
    assert eu.chat_postMessage(channel=CHANNELS[EU_TEAM], text="eu")["ok"]
    assert [c.team_id for c in fake_slack.calls("chat.postMessage")] == [US_TEAM, EU_TEAM]
    identity = us.auth_test()
    assert identity["team_id"] == US_TEAM
    assert identity["bot_id"] == fake_slack.workspace(US_TEAM).bot_id


def test_a_workspace_of_two_regions_serves_both(
    installed: dict[str, str], fake_slack: FakeSlack, proxy_client: ProxyClient
) -> None:
    for region in ("us", "eu"):
        assert proxy_client(region, installed[BOTH_TEAM]).auth_test()["team_id"] == BOTH_TEAM


def test_the_workspace_token_is_refused_for_another_workspaces_channel(
    installed: dict[str, str], proxy_client: ProxyClient
) -> None:
    """Control adds the token of the installation named, not of the channel's workspace."""
    with pytest.raises(SlackApiError) as info:
        proxy_client("us", installed[US_TEAM]).chat_postMessage(channel=CHANNELS[EU_TEAM], text="x")
    assert info.value.response["error"] == "channel_not_found"


def error_of(call: Any) -> tuple[int, str]:
    with pytest.raises(SlackApiError) as info:
        call()
    return info.value.response.status_code, info.value.response["error"]


def test_a_region_cannot_use_another_regions_installation(
    installed: dict[str, str], fake_slack: FakeSlack, proxy_client: ProxyClient
) -> None:
    assert error_of(proxy_client("eu", installed[US_TEAM]).auth_test) == (403, "installation_not_in_region")
    assert error_of(proxy_client("us", installed[EU_TEAM]).auth_test) == (403, "installation_not_in_region")
    assert fake_slack.calls("auth.test") == []


def test_an_installation_with_no_organization_serves_no_region(
    installed: dict[str, str], proxy_client: ProxyClient
) -> None:
    Integration.objects.get(pk=installed[US_TEAM]).organizations.clear()
    assert error_of(proxy_client("us", installed[US_TEAM]).auth_test) == (403, "installation_not_in_region")


@pytest.mark.parametrize("installation_id", ["999999", "not-a-number", "99999999999999999999999"])
def test_an_unknown_installation_is_404(
    installed: dict[str, str], proxy_client: ProxyClient, installation_id: str
) -> None:
    assert error_of(proxy_client("us", installation_id).auth_test) == (404, "installation_not_found")


def test_no_installation_without_a_single_token_is_404(installed: dict[str, str], proxy_client: ProxyClient) -> None:
    assert error_of(proxy_client("us").auth_test) == (404, "installation_not_found")


def test_a_deactivated_installation_is_410(
    installed: dict[str, str], fake_slack: FakeSlack, proxy_client: ProxyClient
) -> None:
    DjangoInstallationStore().deactivate(Integration.objects.get(pk=installed[US_TEAM]), reason="app_uninstalled")
    assert error_of(proxy_client("us", installed[US_TEAM]).auth_test) == (410, "installation_inactive")
    assert fake_slack.calls("auth.test") == []


def test_a_revoked_token_comes_back_as_slack_said_it(
    installed: dict[str, str], fake_slack: FakeSlack, proxy_client: ProxyClient
) -> None:
    fake_slack.revoke_workspace(US_TEAM)
    status, error = error_of(proxy_client("us", installed[US_TEAM]).auth_test)
    assert status == 200 and error in {"token_revoked", "invalid_auth"}


def test_installation_tokens_stay_out_of_logs_and_answers(
    installed: dict[str, str], fake_slack: FakeSlack, proxy_client: ProxyClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = proxy_client("us", installed[US_TEAM]).auth_test()
    error_of(proxy_client("eu", installed[US_TEAM]).auth_test)
    token = fake_slack.token_of(US_TEAM)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"installation {installed[US_TEAM]} of region us: ok" in logged
    assert "installation_not_in_region" in logged
    assert token not in logged
    assert token not in json.dumps(answer.data)
