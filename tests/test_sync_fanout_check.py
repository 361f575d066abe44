"""A synchronous kind has one answer: the checks refuse fanning it out to every region."""

from __future__ import annotations

import pytest

from .test_checks import BASE, ids


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
