"""Handler replies against the fake Slack: response_url limits, 429 Retry-After."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from example_project.fake_slack import FakeSlack
from silo_router.region.handlers import slack

from .slack_signing import block_actions, event_callback, interactive_body, post_slack

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def fake(settings: Any) -> Iterator[FakeSlack]:
    with FakeSlack(signing_secret=settings.SLACK_SIGNING_SECRET, bot_token="xoxb-tests") as server:
        settings.SILO_ROUTER = {
            **settings.SILO_ROUTER,
            "SLACK": {**settings.SILO_ROUTER["SLACK"], "API_URL": server.api_url},
        }
        yield server


def test_response_url_is_used_five_times_then_chat_post_message(
    client: Client, fake: FakeSlack, installations: Any
) -> None:
    @slack.action("resolve_dialog")
    def chatty(request: Any) -> None:
        for n in range(7):
            request.respond(f"update {n}")

    payload = block_actions()
    payload["response_url"] = fake.issue_response_url(channel_id="C0CHAN001")
    assert post_slack(client, interactive_body(payload)).status_code == 200
    assert [c.params["text"] for c in fake.calls("response_url")] == [f"update {n}" for n in range(5)]
    assert [c.params["text"] for c in fake.calls("chat.postMessage")] == ["update 5", "update 6"]
    assert all(c.params["channel"] == "C0CHAN001" for c in fake.calls("chat.postMessage"))


def test_client_waits_out_a_429_and_retries(client: Client, fake: FakeSlack, installations: Any) -> None:
    posted: list[str] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        posted.append(request.client.chat_postMessage(channel="C0CHAN001", text="hello")["ts"])

    fake.fail_next("chat.postMessage", status=429, retry_after=1, count=1)
    body = json.dumps(event_callback(event_id="Ev429")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    calls = fake.calls("chat.postMessage")
    assert [c.error for c in calls] == ["ratelimited", None]
    assert calls[1].at - calls[0].at >= 0.9  # Retry-After: 1 was honoured
    assert len(posted) == 1


def test_event_without_response_url_replies_in_the_channel(client: Client, fake: FakeSlack, installations: Any) -> None:
    @slack.event("app_mention")
    def mention(request: Any) -> None:
        request.respond("seen you")

    body = json.dumps(event_callback(event_id="EvCh")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    (call,) = fake.calls("chat.postMessage")
    assert (call.params["channel"], call.params["text"]) == ("C0CHAN001", "seen you")
