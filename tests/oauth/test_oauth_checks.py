"""E028: an OAuth app needs both credentials and bot scopes."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from silo_router.checks import check_settings

CONTROL: dict[str, Any] = {
    "MODE": "control",
    "REGIONS": {"us": {"TRANSPORT": "http", "URL": "http://127.0.0.1:1/", "SIGNING_KEYS": {"us-1": "u" * 40}}},
    "SLACK": {"SIGNING_SECRETS": ["s"], "BOT_TOKEN": "xoxb-1"},
}


def ids(**slack: Any) -> set[str]:
    with override_settings(SILO_ROUTER={**CONTROL, "SLACK": {**CONTROL["SLACK"], **slack}}):
        messages = check_settings()
    assert all(m.hint for m in messages)
    return {m.id for m in messages}


@pytest.mark.parametrize(
    "slack",
    [
        {"CLIENT_ID": "1.2"},
        {"CLIENT_SECRET": "secret"},
        {"CLIENT_ID": "1.2", "CLIENT_SECRET": "secret"},
        {"CLIENT_ID": "1.2", "CLIENT_SECRET": "secret", "USER_SCOPES": ["search:read"]},
    ],
)
def test_half_set_credentials_or_no_scopes_is_e028(slack: dict[str, Any]) -> None:
    assert "silo_router.E028" in ids(**slack)


def test_a_complete_oauth_app_passes() -> None:
    assert "silo_router.E028" not in ids(CLIENT_ID="1.2", CLIENT_SECRET="secret", SCOPES=["chat:write"])


def test_a_single_token_app_needs_no_credentials() -> None:
    assert "silo_router.E028" not in ids()
