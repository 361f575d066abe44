"""Checks for token encryption keys and for where Slack credentials may live."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.checks import CheckMessage
from django.test import override_settings

from silo_router.checks import check_settings

CONTROL: dict[str, Any] = {
    "MODE": "control",
    "SIGNING_KEYS": {"k1": "k" * 40},
    "SIGNING_KEY_ID": "k1",
    "REGIONS": {"us": {"TRANSPORT": "http", "URL": "http://127.0.0.1:1/"}},
    "TOKEN_ENCRYPTION_KEYS": [Fernet.generate_key().decode()],
    "SLACK": {"SIGNING_SECRETS": ["s"], "CLIENT_ID": "111.222", "CLIENT_SECRET": "shh"},
}
REGION: dict[str, Any] = {
    "MODE": "region",
    "REGION": "us",
    "SIGNING_KEYS": {"k1": "k" * 40},
    "CONTROL_URL": "http://control.internal:8000/",
}
INSTALLATION_IDS = {"silo_router.E025", "silo_router.E026", "silo_router.E027", "silo_router.W005"}


def messages(config: dict[str, Any]) -> list[CheckMessage]:
    with override_settings(SILO_ROUTER=config):
        found = check_settings()
    assert all(m.hint for m in found), "every message has a hint"
    return [m for m in found if m.id in INSTALLATION_IDS]


def ids(config: dict[str, Any]) -> set[str]:
    return {str(m.id) for m in messages(config)}


def test_good_oauth_control_and_region_configurations_have_none() -> None:
    assert ids(CONTROL) == set()
    assert ids(REGION) == set()


def test_an_invalid_key_is_named_by_position_not_value() -> None:
    found = messages({**CONTROL, "TOKEN_ENCRYPTION_KEYS": [Fernet.generate_key().decode(), "hunter2-not-a-key"]})
    assert [m.id for m in found] == ["silo_router.E025"]
    assert "[1]" in found[0].msg and "hunter2" not in found[0].msg + str(found[0].hint)


def test_keys_that_are_not_a_list() -> None:
    assert ids({**CONTROL, "TOKEN_ENCRYPTION_KEYS": "one-key"}) == {"silo_router.E025"}


def test_no_keys_in_control_warns_about_secret_key() -> None:
    found = messages({**CONTROL, "TOKEN_ENCRYPTION_KEYS": []})
    assert [m.id for m in found] == ["silo_router.W005"] and "SECRET_KEY" in found[0].msg
    # A single-token app stores no token: nothing to warn about.
    single = {**CONTROL, "TOKEN_ENCRYPTION_KEYS": [], "SLACK": {"SIGNING_SECRETS": ["s"], "BOT_TOKEN": "xoxb-1"}}
    assert ids(single) == set()
    # A region stores no token either.
    assert ids({**REGION, "TOKEN_ENCRYPTION_KEYS": []}) == set()


@pytest.mark.parametrize("held", [{"BOT_TOKEN": "xoxb-1"}, {"CLIENT_SECRET": "shh"}])
def test_a_region_holding_a_slack_credential(held: dict[str, str]) -> None:
    found = messages({**REGION, "SLACK": held})
    assert [m.id for m in found] == ["silo_router.E026"]
    assert "regions hold no Slack token" in found[0].msg and next(iter(held.values())) not in found[0].msg


def test_bot_token_and_client_id_together() -> None:
    found = messages({**CONTROL, "SLACK": {**CONTROL["SLACK"], "BOT_TOKEN": "xoxb-1"}})
    assert [m.id for m in found] == ["silo_router.E027"]
    assert "choose single-workspace or OAuth" in found[0].msg
