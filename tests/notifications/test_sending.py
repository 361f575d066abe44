"""Sending a notification: its own trace, linked to its cause; the id on the message; triggered and sent."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sentry_sdk

from example_project.fake_slack import FakeSlack
from silo_router import tracing
from silo_router.envelope import seal
from silo_router.providers.slack.client import SlackCallInTransaction
from silo_router.region import funnel, notifications, receiver
from silo_router.region.handlers import slack
from silo_router.region.models import Notification, NotificationEvent

from ..sentry_capture import Captured
from ..workspaces.conftest import T1, T2, Installed, click_payload
from .conftest import BLOCKS, click_envelope, send

pytestmark = pytest.mark.django_db(transaction=True)

NOTIFICATION_OP = "silo_router.region.notification"


def stages(notification_id: str) -> list[tuple[str, bool, str]]:
    return [(event.stage, event.ok, event.error) for event in funnel.events_for(notification_id)]


def test_a_notification_is_its_own_trace_linked_to_the_trace_that_caused_it(
    fake: FakeSlack, workspaces: dict[str, Installed], captured: Captured
) -> None:
    with sentry_sdk.start_transaction(op="silo_router.region.task", name="disk check") as cause:
        sent = send(workspaces[T1])
    captured.flush()

    assert sent.ok is True and sent.error is None and sent.ts
    assert len(sent.id) == 32 and int(sent.id, 16)
    root = captured.transaction(NOTIFICATION_OP)
    trace = root.root
    assert (trace.trace_id, trace.span_id) == (sent.id, sent.id[:16])
    assert trace.trace_id != cause.trace_id
    assert list(trace.links) == [
        {
            "trace_id": cause.trace_id,
            "span_id": cause.span_id,
            "sampled": True,
            "attributes": {"sentry.link.type": "silo_router.caused_by"},
        }
    ]
    assert trace["caused_by"] == cause.trace_id
    assert trace["notification_id"] == sent.id
    assert trace["notification_name"] == "incident_opened"
    assert trace["installation"] == workspaces[T1].installation_id
    assert trace["channel"] == workspaces[T1].channel
    assert root.tags["silo_router.region"] == "us"
    assert root.tags["silo_router.outcome"] == "sent"
    post = next(span for span in root.spans if span.op == "silo_router.region.send")
    assert post["method"] == "chat.postMessage"
    assert post["ok"] is True
    assert post.data["messaging.message.id"] == sent.id
    funnel_spans = [span for span in root.spans if span.op == "silo_router.region.funnel"]
    assert [span.tags["silo_router.stage"] for span in funnel_spans] == ["triggered", "sent"]
    # The notification's own trace is sampled whatever the rate for other transactions.
    assert tracing.traces_sampler({"transaction_context": {"op": NOTIFICATION_OP}}) == 1.0

    assert stages(sent.id) == [("triggered", True, ""), ("sent", True, "")]
    sent_event = funnel.events_for(sent.id)[1]
    assert sent_event.attributes["ts"] == sent.ts
    assert sent_event.service == "silo_router.region.us"
    assert sent_event.name == "incident_opened"
    record = Notification.objects.get(pk=sent.id)
    assert (record.ts, record.channel, record.caused_by_trace_id) == (sent.ts, workspaces[T1].channel, cause.trace_id)

    counted = captured.metrics(tracing.metrics.NOTIFICATION_STAGES)
    assert sorted(m["attributes"]["stage"] for m in counted) == ["sent", "triggered"]
    token = workspaces[T1].token
    assert token not in captured.everything(), "the bot token never reaches Sentry"


def test_a_cause_passed_as_a_carrier_is_linked(
    fake: FakeSlack, workspaces: dict[str, Installed], captured: Captured
) -> None:
    cause = {"sentry-trace": "0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1"}
    sent = send(workspaces[T1], caused_by=cause)
    captured.flush()
    trace = captured.transaction(NOTIFICATION_OP).root
    assert trace.trace_id == sent.id
    assert [(link["trace_id"], link["span_id"]) for link in trace.links] == [
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    ]


def test_the_message_carries_the_notification_id(fake: FakeSlack, workspaces: dict[str, Installed]) -> None:
    sent = send(workspaces[T1])
    (call,) = fake.calls("chat.postMessage")
    assert call.team_id == T1
    assert call.params["metadata"] == {
        "event_type": "silo_router_notification",
        "event_payload": {"notification_id": sent.id},
    }
    section, actions = call.params["blocks"]
    assert "block_id" not in section, "blocks without interactive elements are left as they are"
    assert actions["block_id"] == f"incident~notification:{sent.id}"
    assert actions["elements"] == BLOCKS[1]["elements"], "the app's own action ids and values are untouched"
    (message,) = [m for m in fake.messages if m["ts"] == sent.ts]
    assert message["metadata"]["event_payload"]["notification_id"] == sent.id


def test_a_failed_send_records_sent_failed_with_slacks_error(
    fake: FakeSlack, workspaces: dict[str, Installed], captured: Captured
) -> None:
    sent = notifications.send(
        installation_id=workspaces[T1].installation_id,
        channel=workspaces[T2].channel,  # another workspace's channel: Slack answers channel_not_found
        name="incident_opened",
        text="Disk almost full",
    )
    captured.flush()
    assert (sent.ok, sent.ts, sent.error) == (False, None, "channel_not_found")
    assert stages(sent.id) == [("triggered", True, ""), ("sent", False, "channel_not_found")]
    furthest = funnel.furthest_stage(sent.id)
    assert furthest is not None and (furthest.stage, furthest.ok) == ("sent", False)
    root = captured.transaction(NOTIFICATION_OP)
    assert root.root.status == "internal_error"
    post = next(span for span in root.spans if span.op == "silo_router.region.send")
    assert (post["ok"], post["error"]) == (False, "channel_not_found")
    assert funnel.summary()["sent"].errors == {"channel_not_found": 1}


def test_send_refuses_bad_arguments(workspaces: dict[str, Installed]) -> None:
    installation = workspaces[T1].installation_id
    with pytest.raises(ValueError, match="name"):
        notifications.send(installation_id=installation, channel="C1", name="", text="hi")
    with pytest.raises(ValueError, match="text or blocks"):
        notifications.send(installation_id=installation, channel="C1", name="n")
    with pytest.raises(ValueError, match="metadata"):
        notifications.send(installation_id=installation, channel="C1", name="n", text="hi", metadata={})
    assert not NotificationEvent.objects.exists()


def test_send_inside_a_handlers_transaction_is_refused(fake: FakeSlack, workspaces: dict[str, Installed]) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        notifications.send(installation_id=request.installation_id, channel="C1", name="n", text="hi")

    envelope = click_envelope(workspaces[T1], click_payload(fake, workspaces[T1]), notification_id=None)
    sealed = seal(envelope)
    with pytest.raises(receiver.HandlerFailed) as failed:
        receiver.dispatch(receiver.accept(sealed.body, sealed.signature, region=envelope.region))
    assert isinstance(failed.value.__cause__, SlackCallInTransaction)
    assert fake.calls("chat.postMessage") == [] and not NotificationEvent.objects.exists()


def test_notify_in_a_handler_posts_after_commit_linked_to_the_handler(
    fake: FakeSlack, workspaces: dict[str, Installed], captured: Captured
) -> None:
    returned: list[notifications.Notification] = []

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        notification = request.notify(name="issue_resolved", text="Resolved", blocks=BLOCKS)
        assert notification.ok is None, "posted after commit"
        returned.append(notification)

    envelope = click_envelope(workspaces[T1], click_payload(fake, workspaces[T1]), notification_id=None)
    sealed = seal(envelope)
    receiver.dispatch(receiver.accept(sealed.body, sealed.signature, region=envelope.region))
    captured.flush()

    (notification,) = returned
    assert notification.ok is True and notification.ts
    (call,) = fake.calls("chat.postMessage")
    assert call.params["channel"] == workspaces[T1].channel
    assert call.params["metadata"]["event_payload"]["notification_id"] == notification.id
    handler_trace = captured.transaction("silo_router.region.receive").root.trace_id
    linked = captured.transaction(NOTIFICATION_OP).root.links
    assert [link["trace_id"] for link in linked] == [handler_trace]
    assert Notification.objects.get(pk=notification.id).caused_by_trace_id == handler_trace


def test_a_notification_from_a_handler_that_fails_is_never_sent(
    fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        request.notify(name="issue_resolved", text="Resolved")
        raise RuntimeError("the database said no")

    envelope = click_envelope(workspaces[T1], click_payload(fake, workspaces[T1]), notification_id=None)
    sealed = seal(envelope)
    with pytest.raises(receiver.HandlerFailed):
        receiver.dispatch(receiver.accept(sealed.body, sealed.signature, region=envelope.region))
    assert fake.calls("chat.postMessage") == []
    assert not Notification.objects.exists() and not NotificationEvent.objects.exists()


def test_nothing_secret_is_stored_with_a_notification(fake: FakeSlack, workspaces: dict[str, Installed]) -> None:
    sent = send(workspaces[T1])
    stored = json.dumps(
        [list(Notification.objects.values()), list(NotificationEvent.objects.values())], default=str
    ).encode()
    assert workspaces[T1].token.encode() not in stored
    assert b"Disk almost full" not in stored, "the text of a message is not kept"
    assert sent.id.encode() in stored
