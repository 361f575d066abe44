"""Every request in ``tests/corpus/slack`` parses to what its ``expect`` says."""

from __future__ import annotations

from typing import Any

import pytest

from silo_router.providers.slack import SlackProvider
from silo_router.providers.slack.parsing import parse_request
from silo_router.providers.slack.verification import compute_signature
from tests.corpus import load_slack_corpus

CORPUS = load_slack_corpus()
SECRET = "corpus-signing-secret"
TIMESTAMP = "1700000000"

#: Every request kind the Slack platform notes list must appear in the corpus.
REQUIRED_TYPES = {
    "url_verification",
    "ssl_check",
    "event_callback",
    "app_rate_limited",
    "command",
    "block_actions",
    "interactive_message",
    "dialog_submission",
    "dialog_suggestion",
    "dialog_cancellation",
    "view_submission",
    "view_closed",
    "shortcut",
    "message_action",
    "block_suggestion",
}


def by_file(entries: list[dict[str, Any]]) -> list[Any]:
    """pytest params named after the corpus file."""
    return [pytest.param(entry, id=entry["file"]) for entry in entries]


def test_corpus_is_broad_enough() -> None:
    assert len(CORPUS) >= 20
    assert {entry["expect"]["type"] for entry in CORPUS} >= REQUIRED_TYPES


@pytest.mark.parametrize("entry", by_file(CORPUS))
def test_corpus_entry_is_well_formed(entry: dict[str, Any]) -> None:
    assert set(entry) == {"description", "content_type", "body", "expect", "file"}
    assert entry["description"] and isinstance(entry["body"], str)
    assert set(entry["expect"]) == {
        "type",
        "name",
        "team_id",
        "enterprise_id",
        "app_id",
        "organization_hint",
        "is_enterprise_install",
    }


@pytest.mark.parametrize("entry", by_file(CORPUS))
def test_corpus_entry_parses_as_expected(entry: dict[str, Any]) -> None:
    body = entry["body"].encode("utf-8")
    headers = {"content-type": entry["content_type"], "x-slack-request-timestamp": TIMESTAMP}
    inbound = parse_request(body=body, headers=headers)
    expect = entry["expect"]
    actual = {
        "type": inbound.type,
        "name": inbound.name,
        "team_id": inbound.routing.team_id,
        "enterprise_id": inbound.routing.enterprise_id,
        "app_id": inbound.routing.app_id,
        "organization_hint": inbound.organization_hint,
        "is_enterprise_install": inbound.routing.is_enterprise_install,
    }
    assert actual == expect
    assert inbound.provider == "slack"
    if inbound.type == "event_callback":
        assert inbound.idempotency_key == f"slack:event:{inbound.payload['event_id']}"
    else:
        assert inbound.idempotency_key.startswith("slack:body:")


@pytest.mark.parametrize("entry", by_file(CORPUS))
def test_corpus_entry_parses_without_content_type(entry: dict[str, Any]) -> None:
    """Body sniffing alone classifies every real request the same way."""
    body = entry["body"].encode("utf-8")
    with_type = parse_request(body=body, headers={"content-type": entry["content_type"]})
    sniffed = parse_request(body=body, headers={})
    assert (sniffed.type, sniffed.name, sniffed.routing) == (with_type.type, with_type.name, with_type.routing)


@pytest.mark.parametrize("entry", by_file(CORPUS))
def test_corpus_entry_round_trips_through_the_provider(entry: dict[str, Any]) -> None:
    """Signed as Slack would, each request verifies, parses and gets a control or fallback answer."""
    provider = SlackProvider(signing_secrets=[SECRET])
    body = entry["body"].encode("utf-8")
    headers = {
        "content-type": entry["content_type"],
        "x-slack-request-timestamp": TIMESTAMP,
        "x-slack-signature": compute_signature(secret=SECRET, timestamp=TIMESTAMP, body=body),
    }
    provider.verify(body=body, headers=headers, now=float(TIMESTAMP) + 1)
    inbound = provider.parse(body=body, headers=headers)
    answer = provider.control_answer(inbound) or provider.fallback_answer(inbound)
    assert answer.status == 200
    assert provider.sent_at(headers) == float(TIMESTAMP)
