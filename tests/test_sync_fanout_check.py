"""A synchronous kind has one answer: the checks refuse fanning it out to every region."""

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


def ids(config: Any) -> set[str]:
    with override_settings(SILO_ROUTER=config):
        messages = check_settings()
    assert all(m.hint for m in messages), "every message has a hint"
    return {m.id for m in messages}


@pytest.mark.parametrize(
    ("routes", "fanout"),
    [
        ({}, {"slack.view_submission": "all"}),
        ({"slack.event_callback:app_mention": "sync"}, {}),  # the default FANOUT has event_callback: all
        ({"slack.block_actions:pick": "sync"}, {"slack.block_actions": "all"}),
    ],
)
def test_a_sync_kind_cannot_fan_out_to_all_regions(routes: dict[str, str], fanout: dict[str, str]) -> None:
    assert "silo_router.E020" in ids({**BASE, "ROUTES": routes, "FANOUT": fanout})


def test_a_sync_kind_fanned_out_to_one_region_is_fine() -> None:
    assert ids({**BASE, "FANOUT": {"slack.view_submission": "one"}}) == set()
