"""Installing the Slack app through control: grants, state, the code exchange, the pages."""

from __future__ import annotations

import logging
import time
import urllib.parse
from typing import Any

import pytest
from django.test import Client, override_settings

from example_project.cluster import free_port
from example_project.fake_slack import FakeSlack
from silo_router import signing
from silo_router.conf import conf
from silo_router.control.models import Integration, OAuthState, OrganizationMapping, SlackInstallation
from silo_router.control.slack import oauth
from silo_router.control.slack.store import DjangoInstallationStore
from silo_router.providers.slack.proxy_signing import install_grant_message, sign_install_grant
from silo_router.region.installs import install_url

from .conftest import (
    CLIENT_SECRET,
    EU_TEAM,
    INSTALL,
    KEYS,
    OTHER_TEAM,
    PREFIX,
    US_TEAM,
    consent,
    install,
    start,
)

pytestmark = pytest.mark.django_db

INSTALL_URL = "https://control.example.com" + INSTALL


def region_link(organization_id: str, region: str) -> str:
    """The link a region silo builds for one of its organizations."""
    region_mode = {
        **conf._raw,
        "MODE": "region",
        "REGION": region,
        "SIGNING_KEYS": KEYS[region],
        "SIGNING_KEY_ID": None,
        "SLACK": {**conf._raw["SLACK"], "INSTALL_URL": INSTALL_URL},
    }
    with override_settings(SILO_ROUTER=region_mode):
        return install_url(organization_id)


def installation_of(team_id: str) -> SlackInstallation:
    return SlackInstallation.objects.select_related("integration").get(integration__external_id=team_id)


def text(response: Any) -> str:
    return str(response.content.decode())


# -- the happy path -----------------------------------------------------------------


def test_an_install_from_a_region_ends_linked_to_its_organization(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]
) -> None:
    response = install(Client(), region_link("101", "us"), team=US_TEAM)
    assert response.status_code == 200, text(response)
    assert "Acme US" in text(response) and "Acme" in text(response)
    record = installation_of(US_TEAM)
    assert list(record.integration.organizations.all()) == [orgs["acme"]]
    assert record.integration.active
    assert record.bot_token == oauth_settings.token_of(US_TEAM)
    workspace = oauth_settings.workspace(US_TEAM)
    assert (record.bot_id, record.bot_user_id) == (workspace.bot_id, workspace.bot_user_id)
    assert set(record.bot_scopes.split(",")) == {"chat:write", "commands"}
    assert response.cookies[oauth.STATE_COOKIE].value == ""  # cleared
    assert response["Cache-Control"] == "no-store"
    (exchange,) = oauth_settings.calls("oauth.v2.access")
    assert exchange.ok
    assert [c.team_id for c in oauth_settings.calls("auth.test")] == [US_TEAM]


def test_the_install_view_sends_the_browser_to_slack_with_a_bound_state(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]
) -> None:
    response = start(Client(), region_link("101", "us"))
    assert response.status_code == 302
    location = urllib.parse.urlsplit(response["Location"])
    assert location.scheme + "://" + location.netloc + location.path == oauth_settings.authorize_url
    query = dict(urllib.parse.parse_qsl(location.query))
    assert query["client_id"] == conf.SLACK["CLIENT_ID"]
    assert query["scope"] == "chat:write,commands"
    assert query["user_scope"] == "search:read"
    assert query["redirect_uri"] == "http://testserver" + PREFIX + "oauth_redirect/"
    cookie = response.cookies[oauth.STATE_COOKIE]
    assert cookie.value == query["state"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax" and not cookie["secure"]
    assert cookie["path"] == PREFIX and int(cookie["max-age"]) == conf.SLACK["STATE_EXPIRATION"]
    assert OAuthState.objects.get().organization == orgs["acme"]
    secure = Client().get(INSTALL, secure=True)
    assert secure.cookies[oauth.STATE_COOKIE]["secure"]


def test_reinstalling_updates_the_installation(oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]) -> None:
    assert install(Client(), region_link("101", "us"), team=US_TEAM).status_code == 200
    first = installation_of(US_TEAM).bot_token
    assert install(Client(), region_link("101", "us"), team=US_TEAM).status_code == 200
    assert Integration.objects.filter(external_id=US_TEAM).count() == 1
    assert SlackInstallation.objects.count() == 1
    record = installation_of(US_TEAM)
    assert record.bot_token == oauth_settings.token_of(US_TEAM) != first


def test_a_deactivated_installation_is_reactivated_by_reinstalling(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]
) -> None:
    assert install(Client(), region_link("101", "us"), team=US_TEAM).status_code == 200
    DjangoInstallationStore().deactivate(installation_of(US_TEAM).integration, reason="app_uninstalled")
    assert install(Client(), region_link("101", "us"), team=US_TEAM).status_code == 200
    assert installation_of(US_TEAM).integration.active


def test_one_workspace_installed_for_organizations_in_two_regions_serves_both(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]
) -> None:
    assert install(Client(), region_link("101", "us"), team=OTHER_TEAM).status_code == 200
    assert install(Client(), region_link("201", "eu"), team=OTHER_TEAM).status_code == 200
    integration = installation_of(OTHER_TEAM).integration
    assert set(integration.organizations.values_list("region", flat=True)) == {"us", "eu"}
    assert Integration.objects.filter(external_id=OTHER_TEAM).count() == 1


def test_without_a_grant_the_install_is_linked_to_no_organization(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]
) -> None:
    response = install(Client(), team=EU_TEAM)
    assert response.status_code == 200
    assert "Globex EU" in text(response)
    assert not installation_of(EU_TEAM).integration.organizations.exists()


def test_controls_admin_link_links_the_organization(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]
) -> None:
    link = oauth.install_link(orgs["globex"])
    assert link.startswith(INSTALL + "?")
    assert install(Client(), link, team=EU_TEAM).status_code == 200
    assert list(installation_of(EU_TEAM).integration.organizations.all()) == [orgs["globex"]]


def test_an_org_wide_install(oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]) -> None:
    oauth_settings.add_workspace("T0GRID001", enterprise_id="E0GRID001", name="Grid workspace")
    client = Client()
    started = start(client, region_link("201", "eu"))
    response = client.get(consent(started["Location"] + "&fake_enterprise=1", team="T0GRID001").path)
    assert response.status_code == 200, text(response)
    integration = Integration.objects.get(external_id="E0GRID001")
    assert integration.is_enterprise_install
    assert list(integration.organizations.all()) == [orgs["globex"]]


def test_paths_can_be_changed(oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping], settings: Any) -> None:
    slack = {**settings.SILO_ROUTER["SLACK"], "INSTALL_PATH": "add/", "REDIRECT_PATH": "back/"}
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": slack}
    response = install(Client(), PREFIX + "add/", team=US_TEAM)
    assert response.status_code == 200
    assert oauth_settings.calls("oauth.v2.access")[0].params["redirect_uri"].endswith(PREFIX + "back/")


# -- the user says no, links that are not valid ---------------------------------------


def test_cancelling_at_slack_shows_cancelled_and_spends_the_state(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]
) -> None:
    client = Client()
    started = start(client, region_link("101", "us"))
    response = client.get(consent(started["Location"], team=US_TEAM, deny=True).path)
    assert response.status_code == 200
    assert "cancelled" in text(response).lower()
    assert OAuthState.objects.get().consumed_at is not None
    assert not Integration.objects.exists()
    assert oauth_settings.calls("oauth.v2.access") == []


def test_a_grant_that_was_tampered_with_is_refused(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]
) -> None:
    link = region_link("101", "us")
    tampered = link.replace("organization=101", "organization=201")
    response = start(Client(), tampered)
    assert response.status_code == 400
    assert "invalid_grant" in text(response)
    assert not OAuthState.objects.exists()


@pytest.mark.parametrize(
    "query",
    ["organization=101", "grant=abc", "organization=101&grant=abc", "organization=101&region=us&grant=t%3D1"],
)
def test_a_partial_or_malformed_grant_is_refused(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping], query: str
) -> None:
    response = Client().get(INSTALL + "?" + query)
    assert response.status_code == 400
    assert "invalid_grant" in text(response)


def test_a_grant_signed_by_eu_for_a_us_organization_is_refused(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]
) -> None:
    response = start(Client(), region_link("101", "eu"))  # eu vouches for acme, which lives in us
    assert response.status_code == 400
    assert "wrong_region" in text(response)
    eu_key_id, eu_key = next(iter(KEYS["eu"].items()))
    forged = sign_install_grant(organization_id="101", region="us", key_id=eu_key_id, key=eu_key)
    query = urllib.parse.urlencode({"organization": "101", "region": "us", "grant": forged})
    response = Client().get(INSTALL + "?" + query)
    assert response.status_code == 400
    assert "invalid_grant" in text(response)
    assert not OAuthState.objects.exists()


def test_a_grant_for_an_unknown_organization_or_region_is_refused(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]
) -> None:
    response = start(Client(), region_link("999", "us"))
    assert (response.status_code, "unknown_organization" in text(response)) == (400, True)
    response = start(Client(), region_link("101", "us").replace("region=us", "region=ap"))
    assert (response.status_code, "invalid_grant" in text(response)) == (400, True)


def test_an_old_grant_is_expired(oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]) -> None:
    key_id, key = next(iter(KEYS["us"].items()))
    old = time.time() - conf.SLACK["STATE_EXPIRATION"] - 5
    message = install_grant_message(organization_id="101", region="us")
    grant = signing.sign(message, key_id=key_id, key=key, timestamp=old)
    query = urllib.parse.urlencode({"organization": "101", "region": "us", "grant": grant})
    response = Client().get(INSTALL + "?" + query)
    assert response.status_code == 400
    assert "expired_grant" in text(response)


def test_an_admin_grant_for_another_organization_is_refused(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]
) -> None:
    link = oauth.install_link(orgs["acme"]).replace("organization=101", "organization=201")
    response = start(Client(), link)
    assert (response.status_code, "invalid_grant" in text(response)) == (400, True)


# -- the state --------------------------------------------------------------------------


def test_a_tampered_state_is_refused(oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]) -> None:
    client = Client()
    started = start(client, region_link("101", "us"))
    back = consent(started["Location"], team=US_TEAM)
    state = back.query["state"]
    forged = state[:-2] + ("AA" if not state.endswith("AA") else "BB")
    client.cookies[oauth.STATE_COOKIE] = forged
    response = client.get(back.path.replace(urllib.parse.quote(state, safe=""), urllib.parse.quote(forged, safe="")))
    assert response.status_code == 400
    assert "invalid_state" in text(response)
    assert oauth_settings.calls("oauth.v2.access") == []


def test_a_state_from_another_browser_is_refused(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]
) -> None:
    victim, attacker = Client(), Client()
    started = start(attacker, region_link("101", "us"))
    back = consent(started["Location"], team=OTHER_TEAM)
    start(victim, INSTALL)  # the victim has a state cookie of their own
    response = victim.get(back.path)
    assert response.status_code == 400
    assert "state_mismatch" in text(response)
    assert oauth.STATE_COOKIE not in response.cookies  # the victim's own flow is left alone
    response = Client().get(back.path)  # no cookie at all
    assert response.status_code == 400
    assert "state_cookie_missing" in text(response)
    assert not Integration.objects.exists()
    assert OAuthState.objects.filter(consumed_at__isnull=False).count() == 0  # nobody else can spend it


def test_a_used_state_is_refused(oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]) -> None:
    client = Client()
    started = start(client, region_link("101", "us"))
    back = consent(started["Location"], team=US_TEAM)
    assert client.get(back.path).status_code == 200
    client.cookies[oauth.STATE_COOKIE] = back.query["state"]  # as if the browser kept it
    response = client.get(back.path)
    assert response.status_code == 400
    assert "used_state" in text(response)
    assert len(oauth_settings.calls("oauth.v2.access")) == 1


def test_an_expired_state_is_refused(oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]) -> None:
    client = Client()
    started = start(client, region_link("101", "us"))
    back = consent(started["Location"], team=US_TEAM)
    OAuthState.objects.update(expires_at=OAuthState.objects.get().created_at)
    response = client.get(back.path)
    assert response.status_code == 400
    assert "expired_state" in text(response)
    assert not Integration.objects.exists()


def test_a_redirect_without_a_state_or_a_code_is_refused(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]
) -> None:
    client = Client()
    started = start(client, INSTALL)
    state = started.cookies[oauth.STATE_COOKIE].value
    redirect = PREFIX + "oauth_redirect/"
    assert "missing_state" in text(client.get(redirect + "?code=abc"))
    response = client.get(redirect + "?" + urllib.parse.urlencode({"state": state}))
    assert (response.status_code, "missing_code" in text(response)) == (400, True)
    assert OAuthState.objects.get().consumed_at is None  # still usable with Slack's real answer


# -- Slack refuses, or is not there -----------------------------------------------------


def test_slack_refusing_the_exchange_names_slacks_error(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping], settings: Any
) -> None:
    client = Client()
    started = start(client, region_link("101", "us"))
    back = consent(started["Location"], team=US_TEAM)
    slack = {**settings.SILO_ROUTER["SLACK"], "CLIENT_SECRET": "not-the-secret"}
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": slack}
    response = client.get(back.path)
    assert response.status_code == 502
    (refused,) = oauth_settings.calls("oauth.v2.access")
    assert refused.error and refused.error in text(response)
    assert not Integration.objects.exists()


def test_slack_unreachable_is_a_502_page(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping], settings: Any
) -> None:
    client = Client()
    started = start(client, INSTALL)
    back = consent(started["Location"], team=US_TEAM)
    slack = {**settings.SILO_ROUTER["SLACK"], "API_URL": f"http://127.0.0.1:{free_port()}/api/"}
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": slack}
    response = client.get(back.path)
    assert (response.status_code, "slack_unreachable" in text(response)) == (502, True)


def test_without_credentials_the_install_is_not_configured(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping], settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": {**settings.SILO_ROUTER["SLACK"], "CLIENT_ID": None}}
    response = Client().get(INSTALL)
    assert (response.status_code, "not_configured" in text(response)) == (503, True)


def test_only_get(oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping]) -> None:
    response = Client().post(INSTALL)
    assert (response.status_code, response["Allow"]) == (405, "GET")
    assert Client().post(PREFIX + "oauth_redirect/").status_code == 405


def test_other_paths_under_the_prefix_still_reach_the_pipeline(oauth_settings: FakeSlack) -> None:
    response = Client().post(PREFIX + "events/", data=b"{}", content_type="application/json")
    assert response.status_code == 401  # Slack's signature check, not an install page


# -- secrets stay out ---------------------------------------------------------------------


def test_no_code_state_or_token_in_any_page_or_log_line(
    oauth_settings: FakeSlack, orgs: dict[str, OrganizationMapping], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    pages: list[str] = []
    client = Client()
    started = start(client, region_link("101", "us"))
    back = consent(started["Location"], team=US_TEAM)
    pages.append(text(client.get(back.path)))
    client.cookies[oauth.STATE_COOKIE] = back.query["state"]
    pages.append(text(client.get(back.path)))  # used
    other = Client()
    denied_start = start(other, INSTALL)
    denied = consent(denied_start["Location"], team=EU_TEAM, deny=True)
    pages.append(text(other.get(denied.path)))
    pages.append(text(Client().get(back.path)))  # no cookie
    record = installation_of(US_TEAM)
    secrets = [back.query["code"], back.query["state"], denied.query["state"], record.bot_token, CLIENT_SECRET]
    if record.bot_refresh_token:
        secrets.append(record.bot_refresh_token)
    if record.user_token:
        secrets.append(record.user_token)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in secrets:
        assert secret
        assert secret not in logged
        for page in pages:
            assert secret not in page
            assert urllib.parse.quote(secret, safe="") not in page
