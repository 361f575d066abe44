"""Events the app's own bot caused are answered in control and dropped: no reply loops."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.test import Client

from example_project.fake_slack import FakeSlack
from silo_router.control.models import Payload
from silo_router.region.handlers import slack

from ..sentry_capture import CaptureSentry
from .conftest import T1, T2, Installed, mention, post_event

pytestmark = pytest.mark.django_db(transaction=True)


def message(workspace: Installed, **fields: Any) -> dict[str, Any]:
    return {"type": "message", "text": "hello", "ts": "1700000000.000300", "channel": workspace.channel, **fields}


@pytest.fixture
def handled() -> list[str]:
    """The event types the region's handler ran for."""
    seen: list[str] = []

    @slack.event()
    def any_event(request: Any) -> None:
        seen.append(request.event["type"])

    return seen


def test_a_message_the_bot_posted_is_acknowledged_and_dropped(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], handled: list[str], caplog: Any
) -> None:
    t1 = workspaces[T1]
    with caplog.at_level(logging.INFO, logger="silo_router.control"):
        response = post_event(client, t1, message(t1, user=t1.bot_user_id), event_id="EvSelf1")
    assert response.status_code == 200
    assert not Payload.objects.exists()
    assert handled == []
    assert [r for r in caplog.records if r.levelno == logging.INFO and "own bot" in r.getMessage()]


def test_a_bot_message_with_the_bots_id_is_dropped(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], handled: list[str]
) -> None:
    """``bot_message`` events carry the bot id and no user."""
    t2 = workspaces[T2]
    event = message(t2, subtype="bot_message", bot_id=t2.bot_id)
    assert post_event(client, t2, event, event_id="EvSelf2").status_code == 200
    assert not Payload.objects.exists()
    assert handled == []


def test_the_bot_joining_or_leaving_a_channel_is_kept(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], handled: list[str]
) -> None:
    t1 = workspaces[T1]
    for n, kind in enumerate(("member_joined_channel", "member_left_channel")):
        event = {"type": kind, "user": t1.bot_user_id, "channel": t1.channel, "event_ts": "1700000000.0004"}
        assert post_event(client, t1, event, event_id=f"EvMember{n}").status_code == 200
    assert handled == ["member_joined_channel", "member_left_channel"]


def test_another_installations_bot_is_not_this_one(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], handled: list[str]
) -> None:
    """T2's bot mentioning the app in T1 (a shared channel, say) is someone else to T1."""
    t1, t2 = workspaces[T1], workspaces[T2]
    assert post_event(client, t1, mention(t1, user=t2.bot_user_id), event_id="EvOther1").status_code == 200
    event = message(t1, subtype="bot_message", bot_id=t2.bot_id)
    assert post_event(client, t1, event, event_id="EvOther2").status_code == 200
    assert handled == ["app_mention", "message"]


def test_people_are_not_the_bot(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], handled: list[str]
) -> None:
    t1 = workspaces[T1]
    assert post_event(client, t1, message(t1, user="U0PERSON1"), event_id="EvPerson").status_code == 200
    assert handled == ["message"]
    assert Payload.objects.get().state == "delivered"


def test_self_events_are_forwarded_when_the_setting_is_off(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], handled: list[str], settings: Any
) -> None:
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "SLACK": {**settings.SILO_ROUTER["SLACK"], "IGNORE_SELF_EVENTS": False},
    }
    t1 = workspaces[T1]
    assert post_event(client, t1, message(t1, user=t1.bot_user_id), event_id="EvSelfOn").status_code == 200
    assert handled == ["message"]


def test_the_authorize_span_says_the_event_was_the_bots_own(
    client: Client,
    fake: FakeSlack,
    workspaces: dict[str, Installed],
    handled: list[str],
    capture_sentry: CaptureSentry,
) -> None:
    captured = capture_sentry(scrubbed=False)
    t1 = workspaces[T1]
    assert post_event(client, t1, message(t1, user=t1.bot_user_id), event_id="EvSpan").status_code == 200
    control = captured.transaction("silo_router.control.request")
    (span,) = [s for s in control.spans if s.op == "silo_router.control.authorize"]
    assert span.data["silo_router.self_event"] is True
    assert span.data["silo_router.installation"] == t1.installation_id
