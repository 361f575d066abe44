"""The installation admin shows facts and "token stored", never a token or its ciphertext."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from silo_router.control.models import Integration, OrganizationMapping, SlackInstallation
from silo_router.control.slack.store import DjangoInstallationStore

from .builders import org_wide_install, rotating_install, workspace_install

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.fixture
def stored(store: DjangoInstallationStore, acme: OrganizationMapping) -> dict[str, Integration]:
    rotating = rotating_install(
        "T0ROT0001", expires_in=3600, user_refresh_token="xoxe-1-user-refresh-secret", user_token_expires_in=3600
    )
    gone = store.save_for(workspace_install("T0GONE001"), organization=acme)
    store.deactivate(gone, reason="app_uninstalled")
    return {
        "rotating": store.save_for(rotating, organization=acme),
        "org": store.save_for(org_wide_install(), organization=None),
        "gone": gone,
    }


def secrets() -> list[str]:
    """Every plaintext secret the tests stored, and every ciphertext now in the database."""
    values = [
        "xoxe.xoxb-T0ROT0001-first",
        "xoxe-1-T0ROT0001-refresh-first",
        "xoxp-T0ROT0001-secret-user-token",
        "xoxe-1-user-refresh-secret",
        "https://hooks.slack.com/services/T0ROT0001/B0/secret-webhook",
        "xoxb-E0ENT0001-secret-bot-token",
        "secret",  # every test token above has it
    ]
    for row in SlackInstallation.objects.values_list(*SlackInstallation.ENCRYPTED_FIELDS):
        values += [value for value in row if value]
    return values


def pages(admin_client: Client, stored: dict[str, Integration]) -> dict[str, str]:
    urls = {
        "list": "/admin/silo_router_control/integration/",
        "search": "/admin/silo_router_control/integration/?q=T0ROT0001",
        "inactive": "/admin/silo_router_control/integration/?active__exact=0",
        **{name: f"/admin/silo_router_control/integration/{row.pk}/change/" for name, row in stored.items()},
    }
    found = {}
    for name, url in urls.items():
        response = admin_client.get(url)
        assert response.status_code == 200, url
        found[name] = response.content.decode()
    return found


def test_no_admin_page_shows_a_token_or_ciphertext(admin_client: Client, stored: dict[str, Integration]) -> None:
    for name, html in pages(admin_client, stored).items():
        for secret in secrets():
            assert secret not in html, f"{name} shows a secret"
        assert "gAAAAA" not in html, f"{name} shows a Fernet token"


def test_the_admin_shows_what_an_operator_needs(admin_client: Client, stored: dict[str, Integration]) -> None:
    found = pages(admin_client, stored)
    listing = found["list"]
    for fact in ("T0ROT0001", "E0ENT0001", "T0GONE001", "U0ROT0001", "A0APP0001", "app_uninstalled at "):
        assert fact in listing
    detail = found["rotating"]
    for fact in (
        "Slack installation",
        "chat:write,commands",
        "U0ROT0001",
        "B0ROT0001",
        "U0INSTALL1",
        "Bot token stored",
    ):
        assert fact in detail
    assert '<div class="readonly">yes</div>' in detail
    assert '<div class="readonly">no</div>' in found["gone"], "a deactivated installation holds no token"


def test_saving_an_integration_in_the_admin_keeps_its_credentials(
    admin_client: Client, stored: dict[str, Integration], globex: OrganizationMapping
) -> None:
    integration = stored["rotating"]
    url = f"/admin/silo_router_control/integration/{integration.pk}/change/"
    response = admin_client.get(url)
    data: dict[str, Any] = {}
    form = response.context["adminform"].form
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if name == "organizations":
            value = [o.pk for o in value] + [globex.pk]
        if value is not None:
            data[name] = value
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        data.update({f"{formset.prefix}-{k}": v for k, v in formset.management_form.initial.items()})
        for index, inline_form in enumerate(formset.forms):
            data[f"{formset.prefix}-{index}-id"] = inline_form.instance.pk
            data[f"{formset.prefix}-{index}-integration"] = integration.pk
    before = SlackInstallation.objects.values_list(*SlackInstallation.ENCRYPTED_FIELDS).get(integration=integration)

    saved = admin_client.post(url, data)

    assert saved.status_code == 302, saved.content.decode()[:2000]
    integration.refresh_from_db()
    assert set(integration.organizations.all()) == set(OrganizationMapping.objects.all())
    after = SlackInstallation.objects.values_list(*SlackInstallation.ENCRYPTED_FIELDS).get(integration=integration)
    assert after == before
