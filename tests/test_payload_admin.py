"""The payload admin for every permission level: who may replay, who sees what."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from silo_router.control import delivery
from silo_router.control.models import Integration, OrganizationMapping, Payload
from silo_router.envelope import Envelope

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fast_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


RESPONSE_URL = "https://hooks.slack.com/actions/T0US00001/1/SeCrEtCaPaBiLiTy"
TRIGGER_ID = "13345224609.738474920.TrIgGeRsEcReT"
LEGACY_TOKEN = "LeGaCyVeRiFiCaTiOnToKeN"
SIGNATURE = "v0=5iGnAtUrEhExDiGeSt"
SECRETS = (RESPONSE_URL, TRIGGER_ID, LEGACY_TOKEN, SIGNATURE, "SeCrEtCaPaBiLiTy")


def stored_failed_payload() -> str:
    payload = {
        "type": "block_actions",
        "token": LEGACY_TOKEN,
        "trigger_id": TRIGGER_ID,
        "response_url": RESPONSE_URL,
        "team": {"id": "T0US00001"},
        "actions": [{"action_id": "resolve_dialog"}],
    }
    envelope = Envelope(
        id=Envelope.make_id("admin-1", "us"),
        idempotency_key="admin-1",
        provider="slack",
        kind="block_actions:resolve_dialog",
        region="us",
        body=urllib.parse.urlencode({"payload": json.dumps(payload)}),
        headers={"content-type": "application/x-www-form-urlencoded", "x-slack-signature": SIGNATURE},
        strategy="async",
    )
    (row,) = delivery.store([envelope])
    Payload.objects.filter(pk=row.pk).update(state="failed", attempts=12, last_error="http_500: handler_failed")
    return str(row.pk)


def staff_with(username: str, *codenames: str, superuser: bool = False) -> Client:
    user = User.objects.create_user(username, password="pw-1-" + username, is_staff=True, is_superuser=superuser)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client()
    assert client.login(username=username, password="pw-1-" + username)
    return client


LEVELS = {
    "no_permission": (),
    "view_only": ("view_payload",),
    "change": ("view_payload", "change_payload"),
    "superuser": (),
}


def client_for(level: str) -> Client:
    return staff_with(level, *LEVELS[level], superuser=level == "superuser")


def replay_from_admin(client: Client, pid: str) -> int:
    response = client.post(
        "/admin/silo_router_control/payload/", {"action": "replay_selected", "_selected_action": [pid], "index": "0"}
    )
    return response.status_code


@pytest.mark.parametrize("level", list(LEVELS))
def test_replay_needs_the_change_permission(level: str, published_nothing: None) -> None:
    pid = stored_failed_payload()
    client = client_for(level)
    replay_from_admin(client, pid)
    replayed = Payload.objects.get(pk=pid).state == "pending"
    assert replayed == (level in ("change", "superuser"))


@pytest.mark.parametrize("level", list(LEVELS))
def test_no_admin_page_shows_a_capability(level: str) -> None:
    pid = stored_failed_payload()
    client = client_for(level)
    pages = [
        client.get(url)
        for url in ("/admin/silo_router_control/payload/", f"/admin/silo_router_control/payload/{pid}/change/")
    ]
    for page in pages:
        text = page.content.decode()
        assert not any(secret in text for secret in SECRETS)
    if level == "no_permission":
        assert {p.status_code for p in pages} == {403}
        return
    detail = pages[1].content.decode()
    assert pages[1].status_code == 200 and "http_500: handler_failed" in detail
    shows_body = "resolve_dialog" in detail and "[redacted]" in detail
    assert shows_body == (level in ("change", "superuser"))
    assert 'name="_save"' not in detail  # payload fields are never edited in a form


def test_a_post_to_the_change_form_writes_nothing() -> None:
    pid = stored_failed_payload()
    client = client_for("change")
    client.post(f"/admin/silo_router_control/payload/{pid}/change/", {"state": "delivered", "attempts": "0"})
    row = Payload.objects.get(pk=pid)
    assert (row.state, row.attempts) == ("failed", 12)


def test_a_mapping_must_name_a_configured_region() -> None:
    client = client_for("superuser")
    response = client.post(
        "/admin/silo_router_control/organizationmapping/add/",
        {"organization_id": "9", "slug": "mars-co", "name": "", "region": "mars"},
    )
    assert response.status_code == 200  # the form again, with the error
    assert "&#x27;mars&#x27; is not a region" in response.content.decode()
    assert "Valid regions: eu, us." in response.content.decode()
    assert not OrganizationMapping.objects.exists()
    client.post(
        "/admin/silo_router_control/organizationmapping/add/",
        {"organization_id": "9", "slug": "eu-co", "name": "", "region": "eu"},
    )
    assert OrganizationMapping.objects.get().region == "eu"


def test_an_integration_must_name_a_registered_provider() -> None:
    client = client_for("superuser")
    response = client.post(
        "/admin/silo_router_control/integration/add/",
        {"provider": "github", "external_id": "T1", "enterprise_id": "", "app_id": "", "name": ""},
    )
    assert "Valid providers: slack." in response.content.decode()
    assert not Integration.objects.exists()


@pytest.fixture
def published_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replays publish a wake-up; the memory broker takes it and nothing runs."""
    from silo_router.control import tasks

    monkeypatch.setattr(tasks.deliver_payload, "apply_async", lambda *args, **kwargs: None)
    monkeypatch.setattr(tasks.deliver_payloads, "apply_async", lambda *args, **kwargs: None)
