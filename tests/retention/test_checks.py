"""The retention settings have system checks: types, positive periods, bodies dropped before rows."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from silo_router.checks import check_settings

BASE: dict[str, Any] = {
    "MODE": "control",
    "SIGNING_KEYS": {"k1": "k" * 40},
    "SIGNING_KEY_ID": "k1",
    "REGIONS": {"us": {"TRANSPORT": "http", "URL": "http://127.0.0.1:1/"}},
    "SLACK": {"SIGNING_SECRETS": ["s"], "BOT_TOKEN": "xoxb-1"},
}


def ids(change: dict[str, Any]) -> set[str]:
    with override_settings(SILO_ROUTER={**BASE, **change}):
        messages = check_settings()
    assert all(m.hint for m in messages), "every message has a hint"
    return {m.id for m in messages}


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"DELIVERED_RETENTION": 86400, "FAILED_RETENTION": 86400 * 90, "PRUNE_BATCH": 500},
        {"BODY_RETENTION": 3600},
        {"BODY_RETENTION": 1.5, "DELIVERED_RETENTION": 2.5},
    ],
)
def test_good_retention_settings_pass(change: dict[str, Any]) -> None:
    assert ids(change) == set()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"DELIVERED_RETENTION": 0}, "silo_router.E031"),
        ({"DELIVERED_RETENTION": "7 days"}, "silo_router.E031"),
        ({"FAILED_RETENTION": -1}, "silo_router.E031"),
        ({"FAILED_RETENTION": True}, "silo_router.E031"),
        ({"PRUNE_BATCH": 0}, "silo_router.E032"),
        ({"PRUNE_BATCH": 10.5}, "silo_router.E032"),
        ({"PRUNE_BATCH": 100_000}, "silo_router.E032"),
        ({"BODY_RETENTION": 0}, "silo_router.E033"),
        ({"BODY_RETENTION": "1h"}, "silo_router.E033"),
        ({"BODY_RETENTION": 7 * 86400}, "silo_router.E033"),
        ({"BODY_RETENTION": 100, "DELIVERED_RETENTION": 50}, "silo_router.E033"),
        ({"FAILED_RETENTION": 86400}, "silo_router.W007"),
    ],
)
def test_each_retention_problem_has_its_id(change: dict[str, Any], expected: str) -> None:
    assert ids(change) == {expected}
