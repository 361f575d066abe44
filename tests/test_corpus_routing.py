"""Every corpus request, signed with Slack's scheme, goes through the middleware to the right region."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from silo_router.control.models import Payload

from .corpus import load_slack_corpus
from .slack_signing import post_slack

pytestmark = pytest.mark.django_db

#: Regions of the workspaces that the ``installations`` fixture creates, in resolver order.
TEAM_REGIONS = {"T0US00001": ["us"], "T0EU00001": ["eu"], "T0BOTH001": ["us", "eu"]}
ENTERPRISE_REGIONS = {"E0ENT0001": ["eu"]}
CONTROL_ONLY = {"url_verification", "ssl_check", "app_rate_limited"}
CORPUS = load_slack_corpus()


def expected_regions(expect: dict[str, Any]) -> list[str]:
    """Slack's own answer decides: the org-wide install for an enterprise install, else the workspace's."""
    team = TEAM_REGIONS.get(expect["team_id"] or "")
    enterprise = ENTERPRISE_REGIONS.get(expect["enterprise_id"] or "")
    first, second = (enterprise, team) if expect["is_enterprise_install"] else (team, enterprise)
    regions = first or second or []
    return regions if expect["type"] == "event_callback" else regions[:1]


@pytest.mark.parametrize("entry", CORPUS, ids=[e["file"] for e in CORPUS])
def test_corpus_request_is_verified_classified_and_routed(
    client: Client, installations: Any, entry: dict[str, Any]
) -> None:
    expect = entry["expect"]
    response = post_slack(client, entry["body"].encode(), content_type=entry["content_type"])
    assert response.status_code == 200, response.content
    payloads = list(Payload.objects.all())
    if expect["type"] in CONTROL_ONLY:
        assert payloads == []
        return
    kind = f"{expect['type']}:{expect['name']}" if expect["name"] else expect["type"]
    assert {p.kind for p in payloads} == {kind}
    assert sorted(p.region for p in payloads) == sorted(expected_regions(expect))
    # Delivered, or (no handler registered in these tests) kept pending for a retry.
    assert all(p.state == "delivered" or p.last_error.startswith("no handler for ") for p in payloads)


def test_the_corpus_covers_every_kind_in_the_platform_table() -> None:
    kinds = {e["expect"]["type"] for e in CORPUS}
    assert kinds >= {
        "url_verification",
        "ssl_check",
        "event_callback",
        "app_rate_limited",
        "command",
        "block_actions",
        "interactive_message",
        "dialog_submission",
        "dialog_suggestion",
        "view_submission",
        "view_closed",
        "shortcut",
        "message_action",
        "block_suggestion",
    }
