"""The installation authorizer: which installation's token a request uses, and its cache."""

from __future__ import annotations

from typing import Any

import pytest

from silo_router.control.models import Integration
from silo_router.control.slack.authorizer import InstallationAuthorizer
from silo_router.control.slack.store import DjangoInstallationStore
from silo_router.providers.base import RoutingKeys
from silo_router.providers.slack.authorization import authorizer

from .builders import APP_ID, org_wide_install, workspace_install

pytestmark = pytest.mark.django_db


def keys(team: str | None = None, enterprise: str | None = None, *, org_wide: bool = False) -> RoutingKeys:
    return RoutingKeys(team_id=team, enterprise_id=enterprise, app_id=APP_ID, is_enterprise_install=org_wide)


@pytest.fixture
def grid(store: DjangoInstallationStore) -> dict[str, Integration]:
    """T0GRID001 installed on its own inside E0ENT0001, which is also installed org-wide."""
    return {
        "workspace": store.save_for(workspace_install("T0GRID001", enterprise_id="E0ENT0001"), organization=None),
        "org": store.save_for(org_wide_install("E0ENT0001"), organization=None),
    }


def test_the_installation_slack_names_first_is_used(grid: dict[str, Integration]) -> None:
    auth = InstallationAuthorizer()
    workspace = auth.authorize(keys("T0GRID001", "E0ENT0001"))
    assert workspace is not None
    assert workspace.installation_id == str(grid["workspace"].pk)
    assert workspace.token == "xoxb-T0GRID001-secret-bot-token"
    assert (workspace.team_id, workspace.enterprise_id, workspace.is_enterprise_install) == (
        "T0GRID001",
        "E0ENT0001",
        False,
    )
    assert (workspace.bot_user_id, workspace.bot_id, workspace.scopes) == (
        "U0GRID001",
        "B0GRID001",
        ("chat:write", "commands"),
    )
    org = auth.authorize(keys("T0GRID001", "E0ENT0001", org_wide=True))
    assert org is not None and org.installation_id == str(grid["org"].pk) and org.is_enterprise_install
    assert org.team_id is None and org.token == "xoxb-E0ENT0001-secret-bot-token"
    # Another workspace of the org: only the org-wide install covers it.
    other = auth.authorize(keys("T0OTHER01", "E0ENT0001"))
    assert other is not None and other.installation_id == str(grid["org"].pk)
    assert auth.authorize(keys("T0NOBODY1")) is None
    assert auth.authorize(keys()) is None


def test_the_token_is_not_in_the_repr(grid: dict[str, Integration]) -> None:
    found = InstallationAuthorizer().authorize(keys("T0GRID001"))
    assert found is not None and "secret" not in repr(found) and "token" not in found.facts()


def test_an_app_specific_install_beats_an_app_agnostic_one(store: DjangoInstallationStore) -> None:
    store.save(workspace_install("T0US00001", app_id=None, bot_token="xoxb-any-app"))
    specific = store.save_for(workspace_install("T0US00001", bot_token="xoxb-this-app"), organization=None)
    store.save(workspace_install("T0US00001", app_id="A0OTHER01", bot_token="xoxb-other-app"))

    found = InstallationAuthorizer().authorize(keys("T0US00001"))
    assert found is not None and (found.installation_id, found.token) == (str(specific.pk), "xoxb-this-app")
    without_app = InstallationAuthorizer().authorize(RoutingKeys(team_id="T0US00001", app_id="A0THIRD01"))
    assert without_app is not None and without_app.token == "xoxb-any-app"


def test_deactivated_installations_and_rows_without_a_token_are_not_authorized(
    store: DjangoInstallationStore, installations: Any
) -> None:
    """Routing-only Integration rows (the ``installations`` fixture) hold no token."""
    auth = InstallationAuthorizer()
    assert auth.authorize(keys("T0US00001")) is None
    integration = store.save_for(workspace_install("T0EU00001"), organization=None)
    assert auth.authorize(keys("T0EU00001")) is not None
    store.deactivate(integration, reason="app_uninstalled")
    assert auth.authorize(keys("T0EU00001")) is None
    assert auth.for_installation(str(integration.pk)) is None


def test_for_installation(store: DjangoInstallationStore) -> None:
    integration = store.save_for(workspace_install(), organization=None)
    auth = InstallationAuthorizer()
    found = auth.for_installation(str(integration.pk))
    assert found is not None and found.token == "xoxb-T0US00001-secret-bot-token"
    assert found.installation_id == str(integration.pk)
    for unknown in ("999999", "", "abc", "1; DROP TABLE"):
        assert auth.for_installation(unknown) is None


def test_answers_are_cached_and_a_saved_change_clears_them(
    store: DjangoInstallationStore, django_assert_num_queries: Any
) -> None:
    integration = store.save_for(workspace_install(), organization=None)
    auth = InstallationAuthorizer()
    auth.authorize(keys("T0US00001"))
    auth.for_installation(str(integration.pk))
    with django_assert_num_queries(0):
        for _ in range(10):
            assert auth.authorize(keys("T0US00001")) is not None
            assert auth.for_installation(str(integration.pk)) is not None
    store.save(workspace_install(bot_token="xoxb-reinstalled"))
    found = auth.authorize(keys("T0US00001"))
    assert found is not None and found.token == "xoxb-reinstalled"


def test_the_cache_stays_bounded(store: DjangoInstallationStore, settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RESOLVER_CACHE_SIZE": 50}
    store.save(workspace_install())
    auth = InstallationAuthorizer()
    for number in range(500):
        assert auth.authorize(keys(f"T0X{number:07d}")) is None
    assert auth.cache_size() <= 50
    assert auth.authorize(keys("T0US00001")) is not None


def test_the_cache_can_be_turned_off(
    store: DjangoInstallationStore, settings: Any, django_assert_num_queries: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RESOLVER_CACHE_SECONDS": 0}
    store.save(workspace_install())
    auth = InstallationAuthorizer()
    auth.authorize(keys("T0US00001"))
    with django_assert_num_queries(1):
        auth.authorize(keys("T0US00001"))


@pytest.mark.usefixtures("oauth_app")
def test_it_is_the_default_authorizer_without_a_bot_token(store: DjangoInstallationStore) -> None:
    store.save(workspace_install())
    found = authorizer()
    assert isinstance(found, InstallationAuthorizer)
    auth = found.authorize(keys("T0US00001"))
    assert auth is not None and auth.token == "xoxb-T0US00001-secret-bot-token"
