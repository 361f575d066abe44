"""A region silo without CONTROL_URL is warned about: its handlers could not call Slack."""

from __future__ import annotations

from typing import Any

from django.test import override_settings

from silo_router.checks import check_settings

REGION: dict[str, Any] = {
    "MODE": "region",
    "REGION": "us",
    "SIGNING_KEYS": {"us-1": "u" * 40},
    "SLACK": {"SIGNING_SECRETS": ["s"]},
}


def ids(config: dict[str, Any]) -> set[str]:
    with override_settings(SILO_ROUTER=config):
        messages = check_settings()
    assert all(m.hint for m in messages)
    return {m.id for m in messages}


def test_a_region_without_control_url_is_w006() -> None:
    assert "silo_router.W006" in ids(REGION)


def test_a_region_with_control_url_is_fine() -> None:
    assert ids({**REGION, "CONTROL_URL": "http://control.internal:8000"}) == set()


def test_control_needs_no_control_url() -> None:
    control = {
        "MODE": "control",
        "REGIONS": {"us": {"TRANSPORT": "http", "URL": "http://127.0.0.1:1/", "SIGNING_KEYS": {"us-1": "u" * 40}}},
        "SLACK": {"SIGNING_SECRETS": ["s"], "BOT_TOKEN": "xoxb-1"},
    }
    assert "silo_router.W006" not in ids(control)
