"""The funnel of a notification: acted, handled, replied, each counted once; where a failure stops it.

The receiver's calls to ``funnel.on_acted`` and ``funnel.on_handled`` are made by the
receiver itself in production; here the tests make them where the receiver does: on
arrival of the envelope (acted) and once its handler has run (handled). Replies record
themselves (``SlackHandlerRequest``).
"""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from django.test import Client

from example_project.fake_slack import FakeSlack
from silo_router.envelope import Envelope, Outcome, seal
from silo_router.region import funnel, receiver
from silo_router.region.handlers import slack
from silo_router.region.models import NotificationEvent

from ..sentry_capture import Captured
from ..slack_signing import interactive_body, post_slack
from ..workspaces.conftest import T1, Installed
from .conftest import click_envelope, send

pytestmark = pytest.mark.django_db(transaction=True)


def deliver(envelope: Envelope) -> Outcome:
    """One delivery as the receiver makes it, with the funnel hooks where the receiver calls them."""
    funnel.on_acted(envelope)
    sealed = seal(envelope)
    try:
        receipt = receiver.dispatch(receiver.accept(sealed.body, sealed.signature, region=envelope.region))
    except receiver.HandlerFailed as exc:
        funnel.on_handled(envelope, ok=False, error=type(exc.__cause__).__name__)
        return Outcome.FAILED
    if receipt.outcome is Outcome.HANDLED:
        funnel.on_handled(envelope, ok=True)
    return receipt.outcome


def stages(notification_id: str) -> list[tuple[str, bool]]:
    return [(event.stage, event.ok) for event in funnel.events_for(notification_id)]


def reached(summary: funnel.Summary) -> dict[str, tuple[int, int]]:
    return {str(stage.stage): (stage.reached, stage.failed) for stage in summary.stages}


def test_every_stage_once_however_often_the_click_is_delivered(
    fake: FakeSlack, workspaces: dict[str, Installed], captured: Captured
) -> None:
    @slack.action("acknowledge")
    def acknowledge(request: Any) -> None:
        request.respond("Acknowledged")

    sent = send(workspaces[T1])
    click = fake.message_click(channel=sent.channel, ts=str(sent.ts), action_id="acknowledge")
    arrived = 1_900_000_000.25
    envelope = click_envelope(workspaces[T1], click, notification_id=sent.id, received_at=arrived)

    assert deliver(envelope) is Outcome.HANDLED
    assert deliver(envelope) is Outcome.DUPLICATE  # a retried delivery of the same envelope
    captured.flush()

    every = [("triggered", True), ("sent", True), ("acted", True), ("handled", True), ("replied", True)]
    assert stages(sent.id) == every
    acted = funnel.events_for(sent.id)[2]
    assert acted.at.timestamp() == arrived, "acted is when control received the click"
    assert acted.envelope_id == envelope.id
    replied = funnel.events_for(sent.id)[4]
    assert (replied.attributes["method"], replied.attributes["outcome"]) == ("response_url", "response_url")
    assert reached(funnel.summary()) == {
        "triggered": (1, 0),
        "sent": (1, 0),
        "acted": (1, 0),
        "handled": (1, 0),
        "replied": (1, 0),
    }
    # The hooks called again (a duplicate the receiver did not catch, a retried reply): nothing new.
    funnel.on_acted(envelope)
    funnel.on_handled(envelope, ok=True)
    funnel.on_replied(envelope, method="response_url", ok=True, sequence=1, notification_id=sent.id)
    assert NotificationEvent.objects.filter(notification_id=sent.id).count() == 5
    assert funnel.furthest_stage(sent.id).stage == "replied"  # type: ignore[union-attr]

    reply = next(span for span in captured.spans() if span.op == "silo_router.region.reply")
    assert reply["method"] == "response_url"
    assert (reply["ok"], reply["outcome"]) == (True, "response_url")
    recorded = [span for span in captured.spans() if span.op == "silo_router.region.funnel"]
    assert sorted(span.tags["silo_router.stage"] for span in recorded) == [
        "acted",
        "handled",
        "replied",
        "sent",
        "triggered",
    ]
    response_url = click["response_url"].encode()
    trigger_id = click["trigger_id"].encode()
    emitted = captured.everything().encode()
    assert response_url not in emitted and trigger_id not in emitted
    stored = json.dumps(list(NotificationEvent.objects.values()), default=str).encode()
    assert response_url not in stored and trigger_id not in stored


def test_a_second_click_is_another_acted_event_of_the_same_notification(
    fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    @slack.action("acknowledge")
    def acknowledge(request: Any) -> None:
        pass

    sent = send(workspaces[T1])
    for user in ("U0USER001", "U0USER002"):
        click = fake.message_click(channel=sent.channel, ts=str(sent.ts), action_id="acknowledge", user_id=user)
        deliver(click_envelope(workspaces[T1], click, notification_id=sent.id))
    assert [stage for stage, _ in stages(sent.id)].count("acted") == 2
    assert reached(funnel.summary())["acted"] == (1, 0), "one notification acted on, however many clicks"


def test_a_handler_failure_shows_handled_failed_and_no_replied(
    fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    @slack.action("acknowledge")
    def acknowledge(request: Any) -> None:
        request.respond("Acknowledged")
        raise LookupError("no such incident")

    sent = send(workspaces[T1])
    click = fake.message_click(channel=sent.channel, ts=str(sent.ts), action_id="acknowledge")
    envelope = click_envelope(workspaces[T1], click, notification_id=sent.id)
    assert deliver(envelope) is Outcome.FAILED
    assert deliver(envelope) is Outcome.FAILED  # retried, failing again: still one failure

    assert stages(sent.id) == [("triggered", True), ("sent", True), ("acted", True), ("handled", False)]
    furthest = funnel.furthest_stage(sent.id)
    assert furthest is not None and (furthest.stage, furthest.ok, furthest.error) == ("handled", False, "LookupError")
    assert fake.calls("response_url") == [], "the reply of work that rolled back is never sent"
    summary = funnel.summary()
    assert (summary["handled"].reached, summary["handled"].failed) == (0, 1)
    assert summary["handled"].errors == {"LookupError": 1}
    assert summary["replied"].reached == 0


def test_a_retry_that_succeeds_moves_the_notification_on(fake: FakeSlack, workspaces: dict[str, Installed]) -> None:
    attempts: list[int] = []

    @slack.action("acknowledge")
    def acknowledge(request: Any) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise TimeoutError("the incident service was slow")
        request.respond("Acknowledged")

    sent = send(workspaces[T1])
    click = fake.message_click(channel=sent.channel, ts=str(sent.ts), action_id="acknowledge")
    envelope = click_envelope(workspaces[T1], click, notification_id=sent.id)
    assert deliver(envelope) is Outcome.FAILED
    assert deliver(envelope) is Outcome.HANDLED
    assert ("handled", False) in stages(sent.id) and ("handled", True) in stages(sent.id)
    assert funnel.furthest_stage(sent.id).stage == "replied"  # type: ignore[union-attr]
    summary = funnel.summary()
    assert (summary["handled"].reached, summary["handled"].failed) == (1, 0), "it did not stop at handled"


def test_a_failed_reply_is_replied_failed_with_slacks_error(
    fake: FakeSlack, workspaces: dict[str, Installed], captured: Captured
) -> None:
    @slack.action("acknowledge")
    def acknowledge(request: Any) -> None:
        request.say("Acknowledged", channel="C0NOWHERE")

    fake.add_workspace("T0OTHER01", name="Other", channels=("C0NOWHERE",))
    sent = send(workspaces[T1])
    click = fake.message_click(channel=sent.channel, ts=str(sent.ts), action_id="acknowledge")
    deliver(click_envelope(workspaces[T1], click, notification_id=sent.id))
    captured.flush()

    furthest = funnel.furthest_stage(sent.id)
    assert furthest is not None
    assert (furthest.stage, furthest.ok, furthest.error) == ("replied", False, "channel_not_found")
    assert furthest.attributes["method"] == "chat.postMessage"
    reply = next(span for span in captured.spans() if span.op == "silo_router.region.reply")
    assert (reply["ok"], reply["error"]) == (False, "channel_not_found")
    assert reply.status == "internal_error"


def test_each_reply_of_a_handler_is_its_own_event(fake: FakeSlack, workspaces: dict[str, Installed]) -> None:
    @slack.action("acknowledge")
    def acknowledge(request: Any) -> None:
        request.respond("Acknowledged")
        request.say("Incident acknowledged")

    sent = send(workspaces[T1])
    click = fake.message_click(channel=sent.channel, ts=str(sent.ts), action_id="acknowledge")
    deliver(click_envelope(workspaces[T1], click, notification_id=sent.id))
    replies = [event for event in funnel.events_for(sent.id) if event.stage == "replied"]
    assert sorted(event.attributes["method"] for event in replies) == ["chat.postMessage", "response_url"]
    assert funnel.summary()["replied"].reached == 1


def test_a_click_through_control_records_its_reply_in_the_funnel(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    @slack.action("acknowledge")
    def acknowledge(request: Any) -> None:
        request.respond("Acknowledged")

    sent = send(workspaces[T1])
    click = fake.message_click(channel=sent.channel, ts=str(sent.ts), action_id="acknowledge")
    assert post_slack(client, interactive_body(click)).status_code == 200
    assert ("replied", True) in stages(sent.id)


def test_summary_by_name_and_since(fake: FakeSlack, workspaces: dict[str, Installed]) -> None:
    first = send(workspaces[T1])
    send(workspaces[T1], name="deploy_finished")
    assert funnel.summary().notifications == 2
    assert funnel.summary(name="deploy_finished").notifications == 1
    assert funnel.summary(name="deploy_finished")["sent"].reached == 1
    later = datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(minutes=1)
    assert funnel.summary(since=later).notifications == 0
    NotificationEvent.objects.filter(notification_id=first.id).update(at=later + datetime.timedelta(minutes=1))
    assert funnel.summary(since=later).notifications == 1


def test_a_malformed_notification_id_is_never_recorded(workspaces: dict[str, Installed], fake: FakeSlack) -> None:
    click = {"type": "block_actions", "actions": [{"action_id": "acknowledge", "block_id": "b"}]}
    envelope = click_envelope(workspaces[T1], click, notification_id="not-an-id")
    funnel.on_acted(envelope)
    funnel.on_handled(envelope, ok=True)
    assert not NotificationEvent.objects.exists()
