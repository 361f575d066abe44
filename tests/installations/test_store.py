"""The Django installation store: slack_sdk's interface over Integration + SlackInstallation rows."""

from __future__ import annotations

import datetime
import time

import pytest
from django.db import connection
from slack_sdk.oauth.installation_store import Bot
from slack_sdk.oauth.installation_store.cacheable_installation_store import CacheableInstallationStore

from silo_router.control.models import Integration, OrganizationMapping, SlackInstallation
from silo_router.control.slack.store import DjangoInstallationStore

from .builders import APP_ID, org_wide_install, rotating_install, workspace_install

pytestmark = pytest.mark.django_db


def test_a_workspace_install_round_trips(store: DjangoInstallationStore, acme: OrganizationMapping) -> None:
    saved = workspace_install()
    integration = store.save_for(saved, organization=acme)

    assert (integration.provider, integration.external_id, integration.app_id) == ("slack", "T0US00001", APP_ID)
    assert not integration.is_enterprise_install and integration.active
    assert list(integration.organizations.all()) == [acme]
    found = store.find_installation(enterprise_id=None, team_id="T0US00001")
    assert found is not None
    for name in (
        "app_id",
        "team_id",
        "team_name",
        "bot_token",
        "bot_id",
        "bot_user_id",
        "bot_scopes",
        "user_id",
        "user_token",
        "user_scopes",
        "incoming_webhook_url",
        "incoming_webhook_channel",
        "incoming_webhook_channel_id",
        "token_type",
    ):
        assert getattr(found, name) == getattr(saved, name), name
    assert found.enterprise_id is None and found.is_enterprise_install is False
    assert abs(found.installed_at - saved.installed_at) < 1
    bot = store.find_bot(enterprise_id=None, team_id="T0US00001")
    assert bot is not None
    assert (bot.bot_token, bot.bot_user_id, bot.bot_scopes) == (
        saved.bot_token,
        "U0US00001",
        ["chat:write", "commands"],
    )


def test_a_workspace_inside_a_grid_org_is_found_by_its_team(store: DjangoInstallationStore) -> None:
    integration = store.save_for(workspace_install("T0GRID001", enterprise_id="E0ENT0001"), organization=None)

    assert (integration.external_id, integration.enterprise_id) == ("T0GRID001", "E0ENT0001")
    bot = store.find_bot(enterprise_id="E0ENT0001", team_id="T0GRID001")
    assert bot is not None and bot.enterprise_id == "E0ENT0001" and bot.team_id == "T0GRID001"
    # No org-wide install exists: lookups by the enterprise alone find nothing (as Bolt's stores).
    assert store.find_bot(enterprise_id="E0ENT0001", team_id=None) is None
    assert store.find_bot(enterprise_id="E0ENT0001", team_id="T0GRID001", is_enterprise_install=True) is None


def test_an_org_wide_install_is_found_by_its_enterprise_only(store: DjangoInstallationStore) -> None:
    integration = store.save_for(org_wide_install(), organization=None)

    assert (integration.external_id, integration.enterprise_id) == ("E0ENT0001", "E0ENT0001")
    assert integration.is_enterprise_install and integration.name == "Enterprise E0ENT0001"
    for team in ("T0ANY0001", None):
        found = store.find_installation(enterprise_id="E0ENT0001", team_id=team, is_enterprise_install=True)
        assert found is not None and found.team_id is None and found.is_enterprise_install
        assert found.bot_token == "xoxb-E0ENT0001-secret-bot-token"
    assert store.find_bot(enterprise_id="E0ENT0001", team_id=None) is not None
    # A workspace lookup does not fall back to the org-wide install.
    assert store.find_bot(enterprise_id="E0ENT0001", team_id="T0ANY0001", is_enterprise_install=False) is None


def test_a_reinstall_updates_the_one_row_and_keeps_every_organization(
    store: DjangoInstallationStore, acme: OrganizationMapping, globex: OrganizationMapping
) -> None:
    first = store.save_for(workspace_install(), organization=acme)
    again = store.save_for(
        workspace_install(bot_token="xoxb-new", bot_scopes="chat:write", installed_at=time.time() + 5),
        organization=globex,
    )

    assert again.pk == first.pk
    assert Integration.objects.count() == 1 and SlackInstallation.objects.count() == 1
    assert set(again.organizations.all()) == {acme, globex}
    bot = store.find_bot(enterprise_id=None, team_id="T0US00001")
    assert bot is not None and (bot.bot_token, bot.bot_scopes) == ("xoxb-new", ["chat:write"])


def test_a_user_only_install_by_another_user_changes_only_the_user_fields(store: DjangoInstallationStore) -> None:
    store.save(workspace_install())
    store.save(workspace_install(bot_token=None, bot_id=None, user_id="U0OTHER01", user_token="xoxp-other"))

    found = store.find_installation(enterprise_id=None, team_id="T0US00001")
    assert found is not None
    assert (found.bot_token, found.bot_id) == ("xoxb-T0US00001-secret-bot-token", "B0US00001")
    assert (found.user_id, found.user_token) == ("U0OTHER01", "xoxp-other")
    assert found.incoming_webhook_url == "https://hooks.slack.com/services/T0US00001/B0/secret-webhook"


def test_bolt_user_lookups(store: DjangoInstallationStore) -> None:
    """With a user id Bolt wants that user's installation, or none (it then asks without one)."""
    store.save(workspace_install())

    mine = store.find_installation(enterprise_id=None, team_id="T0US00001", user_id="U0INSTALL1")
    assert mine is not None and mine.user_token == "xoxp-T0US00001-secret-user-token"
    assert store.find_installation(enterprise_id=None, team_id="T0US00001", user_id="U0SOMEONE") is None
    assert store.find_installation(enterprise_id=None, team_id="T0NOBODY1") is None
    assert store.find_installation(enterprise_id=None, team_id=None) is None


def test_an_operators_routing_row_becomes_the_installation(
    store: DjangoInstallationStore, acme: OrganizationMapping
) -> None:
    """An Integration created by hand for routing is the one source of truth once the app is installed."""
    routing_row = Integration.objects.create(provider="slack", external_id="T0US00001")
    routing_row.organizations.add(acme)

    integration = store.save_for(workspace_install(), organization=None)

    assert integration.pk == routing_row.pk and integration.app_id == APP_ID
    assert list(integration.organizations.all()) == [acme]
    assert Integration.objects.count() == 1


def test_inactive_installations_are_not_found_and_a_reinstall_reactivates(store: DjangoInstallationStore) -> None:
    integration = store.save_for(workspace_install(), organization=None)
    store.deactivate(integration, reason="app_uninstalled")

    assert not integration.active and integration.deactivation_reason == "app_uninstalled"
    assert integration.deactivated_at is not None
    record = SlackInstallation.objects.get(integration=integration)
    assert all(getattr(record, name) == "" for name in SlackInstallation.ENCRYPTED_FIELDS), "tokens are wiped"
    assert store.find_installation(enterprise_id=None, team_id="T0US00001") is None
    assert store.find_bot(enterprise_id=None, team_id="T0US00001") is None
    first_time = integration.deactivated_at
    store.deactivate(integration, reason="tokens_revoked")
    assert (integration.deactivation_reason, integration.deactivated_at) == ("app_uninstalled", first_time)

    store.save(workspace_install(bot_token="xoxb-back"))
    integration.refresh_from_db()
    assert integration.active and integration.deactivation_reason == "" and integration.deactivated_at is None
    bot = store.find_bot(enterprise_id=None, team_id="T0US00001")
    assert bot is not None and bot.bot_token == "xoxb-back"


def test_bolts_deletes(store: DjangoInstallationStore) -> None:
    store.save(workspace_install())
    store.delete_installation(enterprise_id=None, team_id="T0US00001", user_id="U0INSTALL1")
    found = store.find_installation(enterprise_id=None, team_id="T0US00001")
    assert found is not None and found.user_token is None and found.bot_token is not None

    store.delete_bot(enterprise_id=None, team_id="T0US00001")
    assert store.find_bot(enterprise_id=None, team_id="T0US00001") is None

    store.delete_all(enterprise_id=None, team_id="T0US00001")
    integration = Integration.objects.get(external_id="T0US00001")
    assert not integration.active and integration.deactivation_reason == "deleted"


def test_save_bot_updates_the_bot_credentials(store: DjangoInstallationStore) -> None:
    store.save(rotating_install())
    bot = store.find_bot(enterprise_id=None, team_id="T0ROT0001")
    assert bot is not None
    refreshed = Bot(
        **{**bot.to_dict_for_copying(), "bot_token": "xoxe.xoxb-second", "bot_token_expires_at": 2_000_000_000}
    )
    refreshed.bot_refresh_token = "xoxe-1-second"
    store.save_bot(refreshed)

    found = store.find_installation(enterprise_id=None, team_id="T0ROT0001")
    assert found is not None
    assert (found.bot_token, found.bot_refresh_token, found.bot_token_expires_at) == (
        "xoxe.xoxb-second",
        "xoxe-1-second",
        2_000_000_000,
    )
    assert found.user_token == "xoxp-T0ROT0001-secret-user-token", "the installer's fields are untouched"
    assert SlackInstallation.objects.count() == 1


def test_slack_sdks_cacheable_store_wraps_it(store: DjangoInstallationStore) -> None:
    cached = CacheableInstallationStore(store)
    cached.save(workspace_install())
    bot = cached.find_bot(enterprise_id=None, team_id="T0US00001")
    assert bot is not None and bot.bot_token == "xoxb-T0US00001-secret-bot-token"


def test_rotation_fields_round_trip(store: DjangoInstallationStore) -> None:
    saved = rotating_install(expires_in=600)
    store.save(saved)
    record = SlackInstallation.objects.get()
    assert record.bot_token_expires_at == datetime.datetime.fromtimestamp(saved.bot_token_expires_at, tz=datetime.UTC)
    found = store.find_installation(enterprise_id=None, team_id="T0ROT0001")
    assert found is not None
    assert (found.bot_refresh_token, found.bot_token_expires_at) == (
        "xoxe-1-T0ROT0001-refresh-first",
        saved.bot_token_expires_at,
    )


def test_no_token_is_stored_in_plaintext(store: DjangoInstallationStore) -> None:
    saved = rotating_install(user_refresh_token="xoxe-1-user-refresh-secret", user_token_expires_in=600)
    store.save(saved)
    secrets = [
        saved.bot_token,
        saved.bot_refresh_token,
        saved.user_token,
        saved.user_refresh_token,
        saved.incoming_webhook_url,
    ]
    assert all(secrets)
    stored = []
    with connection.cursor() as cursor:
        for table in (SlackInstallation._meta.db_table, Integration._meta.db_table):
            cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 (table names from the models)
            stored += [str(value) for row in cursor.fetchall() for value in row]
    dump = "\n".join(stored)
    for secret in secrets:
        assert secret is not None
        assert secret not in dump
        # Nor any recognisable part of it.
        assert secret[-12:] not in dump
    record = SlackInstallation.objects.get()
    assert record.encrypted_bot_token.startswith("gAAAAA"), "a Fernet token"
    assert record.bot_token == saved.bot_token


def test_an_installation_without_team_or_enterprise_is_refused(store: DjangoInstallationStore) -> None:
    nameless = workspace_install()
    nameless.team_id = None
    with pytest.raises(ValueError, match="team id"):
        store.save(nameless)
    assert not Integration.objects.exists()
