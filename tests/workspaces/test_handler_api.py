"""The handler API a Bolt user expects, per installation: client, say, respond, context, names."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import Any

import pytest
from django.test import Client
from slack_sdk import WebClient

from example_project.fake_slack import FakeSlack
from silo_router.control.slack.store import DjangoInstallationStore
from silo_router.envelope import Envelope, seal
from silo_router.providers.registry import get_provider
from silo_router.providers.slack.client import NoInstallation
from silo_router.providers.slack.request import SlackHandlerRequest
from silo_router.region import receiver
from silo_router.region.handlers import slack

from ..slack_signing import form_body, interactive_body, post_slack
from .conftest import APP_ID, T1, T2, USER, Installed, click, click_payload, mention, post_event, region_envelope

pytestmark = pytest.mark.django_db(transaction=True)

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*done*"}}]
ATTACHMENTS = [{"color": "#36a64f", "text": "details"}]
METADATA = {"event_type": "issue_resolved", "event_payload": {"issue": 7}}


def calls(fake: FakeSlack, method: str) -> list[tuple[str | None, str | None]]:
    """``(team of the token, error)`` of every call of ``method``."""
    return [(call.team_id, call.error) for call in fake.calls(method)]


def envelope_of(workspace: Installed, payload: dict[str, Any], *, created_at: float | None = None) -> Envelope:
    """What control sends a region for ``payload`` from ``workspace``."""
    return region_envelope(
        workspace, interactive_body(payload).decode(), kind=f"{payload['type']}:resolve_dialog", created_at=created_at
    )


def dispatch(envelope: Envelope) -> Any:
    """Hand ``envelope`` to its region as a transport does: sealed, verified, dispatched."""
    sealed = seal(envelope)
    return receiver.dispatch(receiver.accept(sealed.body, sealed.signature, region=envelope.region))


def request_for(envelope: Envelope) -> SlackHandlerRequest:
    inbound = get_provider("slack").parse(body=envelope.body.encode(), headers=envelope.headers)
    return SlackHandlerRequest(envelope=envelope, inbound=inbound)


def post_as_bot(fake: FakeSlack, workspace: Installed, text: str) -> str:
    """A message the app posted earlier in the workspace's channel; its ts."""
    posted = WebClient(token=workspace.token, base_url=fake.api_url).chat_postMessage(
        channel=workspace.channel, text=text
    )
    return str(posted["ts"])


# -- request.client ----------------------------------------------------------------------------


def test_request_client_is_bound_to_the_installation(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    posted: list[str] = []

    @slack.event("app_mention")
    def mentioned(request: Any) -> None:
        def post() -> None:
            answer = request.client.chat_postMessage(channel=request.channel_id, text=f"hi {request.context.team_id}")
            posted.append(answer["channel"])

        request.after_commit(post)

    assert post_event(client, workspaces[T1], mention(workspaces[T1]), event_id="EvClient1").status_code == 200
    assert post_event(client, workspaces[T2], mention(workspaces[T2]), event_id="EvClient2").status_code == 200
    assert calls(fake, "chat.postMessage") == [(T1, None), (T2, None)]
    assert posted == [workspaces[T1].channel, workspaces[T2].channel]


def test_the_client_of_a_deactivated_installation_raises_no_installation(
    fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    request = request_for(envelope_of(workspaces[T1], click_payload(fake, workspaces[T1])))
    DjangoInstallationStore().deactivate(workspaces[T1].integration, reason="app_uninstalled")
    with pytest.raises(NoInstallation):
        request.client.chat_postMessage(channel=workspaces[T1].channel, text="hello?")
    assert fake.calls("chat.postMessage") == []


# -- say ----------------------------------------------------------------------------------------


def test_say_posts_to_the_conversation_with_the_installation_token(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    @slack.event("app_mention")
    def mentioned(request: Any) -> None:
        request.say(
            "on it",
            blocks=BLOCKS,
            attachments=ATTACHMENTS,
            thread_ts=request.event["ts"],
            metadata=METADATA,
            unfurl_links=False,
            unfurl_media=False,
            mrkdwn=True,
            reply_broadcast=True,
            icon_emoji=":robot_face:",
        )
        assert request.say("second", channel=request.channel_id) is None

    t2 = workspaces[T2]
    assert post_event(client, t2, mention(t2), event_id="EvSay").status_code == 200
    first, second = fake.calls("chat.postMessage")
    assert (first.team_id, first.error, second.team_id, second.error) == (T2, None, T2, None)
    assert first.params["channel"] == t2.channel
    assert first.params["text"] == "on it"
    assert first.params["blocks"] == BLOCKS
    assert first.params["attachments"] == ATTACHMENTS
    assert first.params["thread_ts"] == "1700000000.000200"
    assert first.params["metadata"] == METADATA
    assert (first.params["unfurl_links"], first.params["unfurl_media"]) == (False, False)
    assert (first.params["mrkdwn"], first.params["reply_broadcast"]) == (True, True)
    assert first.params["icon_emoji"] == ":robot_face:"
    assert second.params["text"] == "second"


def test_say_takes_a_whole_message_as_bolt_does(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    @slack.event("app_mention")
    def mentioned(request: Any) -> None:
        request.say({"text": "as a dict", "blocks": BLOCKS})

    assert post_event(client, workspaces[T1], mention(workspaces[T1]), event_id="EvSayDict").status_code == 200
    (posted,) = fake.calls("chat.postMessage")
    assert (posted.team_id, posted.params["channel"], posted.params["text"]) == (
        T1,
        workspaces[T1].channel,
        "as a dict",
    )
    assert posted.params["blocks"] == BLOCKS


def test_say_without_a_conversation_refuses_at_once(fake: FakeSlack, workspaces: dict[str, Installed]) -> None:
    """A global shortcut comes from no conversation: there is nowhere to say anything."""
    shortcut = {
        "type": "shortcut",
        "callback_id": "new_issue",
        "team": {"id": T1, "domain": "one"},
        "user": {"id": USER, "team_id": T1},
        "api_app_id": APP_ID,
        "trigger_id": fake.issue_trigger(team_id=T1),
    }
    request = request_for(envelope_of(workspaces[T1], shortcut))
    with pytest.raises(ValueError, match="channel"):
        request.say("hello")
    assert fake.calls("chat.postMessage") == []


# -- respond ------------------------------------------------------------------------------------


def test_every_respond_option_reaches_the_response_url(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        request.respond(
            "resolved",
            blocks=BLOCKS,
            attachments=ATTACHMENTS,
            response_type="in_channel",
            replace_original=True,
            thread_ts="1700000000.000100",
            unfurl_links=False,
            unfurl_media=True,
            metadata=METADATA,
        )
        request.respond(delete_original=True)
        request.respond({"text": "a whole message", "response_type": "in_channel"})

    assert click(client, fake, workspaces[T1]).status_code == 200
    full, delete, whole = (call.params for call in fake.calls("response_url"))
    assert {key: value for key, value in full.items() if key != "response_url"} == {
        "text": "resolved",
        "blocks": BLOCKS,
        "attachments": ATTACHMENTS,
        "response_type": "in_channel",
        "replace_original": True,
        "thread_ts": "1700000000.000100",
        "unfurl_links": False,
        "unfurl_media": True,
        "metadata": METADATA,
    }
    assert (delete["delete_original"], delete["response_type"]) == (True, "ephemeral")
    assert (whole["text"], whole["response_type"]) == ("a whole message", "in_channel")
    assert all(call.ok for call in fake.calls("response_url"))


def stale(fake: FakeSlack, workspace: Installed, **extra: Any) -> Envelope:
    """A click whose response_url is past Slack's 30 minutes: replies must fall back."""
    return envelope_of(workspace, click_payload(fake, workspace, **extra), created_at=time.time() - 31 * 60)


def test_an_ephemeral_fallback_goes_to_the_user_with_the_installation_token(
    fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        request.respond("only you", blocks=BLOCKS, attachments=ATTACHMENTS, thread_ts="1700000000.000100")

    t2 = workspaces[T2]
    dispatch(stale(fake, t2))
    assert fake.calls("response_url") == []
    (posted,) = fake.calls("chat.postEphemeral")
    assert (posted.team_id, posted.error) == (T2, None)
    assert {key: posted.params[key] for key in ("channel", "user", "text", "blocks", "attachments", "thread_ts")} == {
        "channel": t2.channel,
        "user": USER,
        "text": "only you",
        "blocks": BLOCKS,
        "attachments": ATTACHMENTS,
        "thread_ts": "1700000000.000100",
    }
    assert fake.calls("chat.postMessage") == []


def test_an_in_channel_fallback_posts_to_the_channel_with_the_installation_token(
    fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        request.respond("news", response_type="in_channel", metadata=METADATA, unfurl_links=False)

    dispatch(stale(fake, workspaces[T1]))
    (posted,) = fake.calls("chat.postMessage")
    assert (posted.team_id, posted.error, posted.params["channel"]) == (T1, None, workspaces[T1].channel)
    assert (posted.params["metadata"], posted.params["unfurl_links"]) == (METADATA, False)
    assert fake.calls("chat.postEphemeral") == []


def message_click(fake: FakeSlack, workspace: Installed, ts: str, *, ephemeral: bool = False) -> Envelope:
    container = {"type": "message", "message_ts": ts, "channel_id": workspace.channel, "is_ephemeral": ephemeral}
    return stale(fake, workspace, container=container, message={"type": "message", "ts": ts, "text": "original"})


def test_replace_original_without_a_usable_response_url_updates_the_message(
    fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    t1 = workspaces[T1]
    ts = post_as_bot(fake, t1, "original")

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        request.respond("replaced", blocks=BLOCKS, replace_original=True)

    dispatch(message_click(fake, t1, ts))
    assert calls(fake, "chat.update") == [(T1, None)]
    (updated,) = [m for m in fake.messages if m.get("ts") == ts]
    assert (updated["text"], updated["blocks"]) == ("replaced", BLOCKS)
    assert fake.calls("chat.postEphemeral") == []


def test_replace_original_of_a_message_slack_cannot_find_stays_private(
    fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        request.respond("replaced", replace_original=True)

    dispatch(message_click(fake, workspaces[T1], "1600000000.000001"))
    assert calls(fake, "chat.update") == [(T1, "message_not_found")]
    assert [(c.team_id, c.params["text"]) for c in fake.calls("chat.postEphemeral")] == [(T1, "replaced")]
    assert fake.calls("chat.postMessage") == []


def test_replace_original_of_an_ephemeral_message_is_never_made_public(
    fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        request.respond("replaced", replace_original=True)

    dispatch(message_click(fake, workspaces[T1], "1700000000.000100", ephemeral=True))
    assert fake.calls("chat.update") == []
    assert [c.params["text"] for c in fake.calls("chat.postEphemeral")] == ["replaced"]
    assert fake.calls("chat.postMessage") == []


def test_delete_original_without_a_usable_response_url_deletes_the_message(
    fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    t2 = workspaces[T2]
    ts = post_as_bot(fake, t2, "to be deleted")

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        request.respond(delete_original=True)

    dispatch(message_click(fake, t2, ts))
    (deleted,) = fake.calls("chat.delete")
    assert (deleted.team_id, deleted.params["channel"], deleted.params["ts"]) == (T2, t2.channel, ts)
    assert fake.calls("chat.postEphemeral") == []
    assert [c.params["text"] for c in fake.calls("chat.postMessage")] == ["to be deleted"]


def test_delete_original_with_nothing_to_delete_is_logged_at_error(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], caplog: pytest.LogCaptureFixture
) -> None:
    """An event names no message of the app's: nothing is deleted, nothing is posted instead."""

    @slack.event("app_mention")
    def mentioned(request: Any) -> None:
        request.respond(delete_original=True)

    with caplog.at_level(logging.ERROR, logger="silo_router.slack"):
        assert post_event(client, workspaces[T1], mention(workspaces[T1]), event_id="EvDel").status_code == 200
    assert [r for r in caplog.records if "delete_original" in r.getMessage()]
    assert [c for c in fake.calls() if c.method.startswith("chat.")] == []


def test_a_fallback_for_a_deactivated_installation_is_logged_at_error(
    fake: FakeSlack, workspaces: dict[str, Installed], caplog: pytest.LogCaptureFixture
) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        request.respond("too late")

    envelope = stale(fake, workspaces[T1])
    DjangoInstallationStore().deactivate(workspaces[T1].integration, reason="app_uninstalled")
    with caplog.at_level(logging.ERROR, logger="silo_router.slack"):
        dispatch(envelope)
    assert [r for r in caplog.records if "not active" in r.getMessage()]
    assert fake.calls("chat.postEphemeral") == []


# -- context and Bolt's names ------------------------------------------------------------------


def test_context_names_the_team_user_bot_and_installation(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    seen: list[Any] = []

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        seen.append(request.context)

    t2 = workspaces[T2]
    assert click(client, fake, t2).status_code == 200
    (context,) = seen
    assert dict(context) == {
        "team_id": T2,
        "enterprise_id": None,
        "is_enterprise_install": False,
        "user_id": USER,
        "channel_id": t2.channel,
        "app_id": APP_ID,
        "bot_id": t2.bot_id,
        "bot_user_id": t2.bot_user_id,
        "installation_id": t2.installation_id,
        "scopes": context.scopes,
        "organization_id": "201",
        "organization_ids": ("201",),
    }
    assert set(context.scopes) >= {"chat:write", "commands"}
    assert context["bot_user_id"] == context.bot_user_id == t2.bot_user_id
    assert context.get("response_url") is None and context.get("token") is None
    with pytest.raises(KeyError):
        context["bot_token"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        context.team_id = T1
    assert t2.token not in repr(context) and "response" not in repr(context)


def command_body(workspace: Installed) -> dict[str, Any]:
    return {
        "command": "/ticket",
        "text": "list",
        "team_id": workspace.team_id,
        "user_id": USER,
        "channel_id": workspace.channel,
        "api_app_id": APP_ID,
    }


@pytest.mark.parametrize(
    ("payload", "present"),
    [
        ({"type": "block_actions", "actions": [{"action_id": "go", "value": "1"}]}, {"action": {"action_id": "go"}}),
        (
            {"type": "interactive_message", "callback_id": "old", "actions": [{"name": "go"}]},
            {"action": {"name": "go"}},
        ),
        ({"type": "dialog_submission", "callback_id": "dlg", "submission": {}}, {"action": {"callback_id": "dlg"}}),
        ({"type": "view_submission", "view": {"id": "V1", "callback_id": "new"}}, {"view": {"callback_id": "new"}}),
        ({"type": "view_closed", "view": {"id": "V1", "callback_id": "new"}}, {"view": {"callback_id": "new"}}),
        ({"type": "block_suggestion", "action_id": "pick", "value": "a"}, {"options": {"action_id": "pick"}}),
        ({"type": "shortcut", "callback_id": "glob"}, {"shortcut": {"callback_id": "glob"}}),
        ({"type": "message_action", "callback_id": "msg"}, {"shortcut": {"callback_id": "msg"}}),
        ({"type": "event_callback", "event": {"type": "app_mention", "ts": "1"}}, {"event": {"type": "app_mention"}}),
        (
            {"type": "event_callback", "event": {"type": "message", "ts": "1"}},
            {"event": {"type": "message"}, "message": {"type": "message"}},
        ),
        (None, {"command": {"command": "/ticket"}}),
    ],
    ids=lambda value: value["type"] if isinstance(value, dict) and "type" in value else None,
)
def test_bolt_names_for_the_parts_of_the_request(
    workspaces: dict[str, Installed], payload: dict[str, Any] | None, present: dict[str, dict[str, Any]]
) -> None:
    t1 = workspaces[T1]
    if payload is None:
        body, content_type = form_body(command_body(t1)).decode(), "application/x-www-form-urlencoded"
    elif payload["type"] == "event_callback":
        body, content_type = json.dumps({**payload, "team_id": T1, "event_id": "Ev1"}), "application/json"
    else:
        body = interactive_body({**payload, "team": {"id": T1}}).decode()
        content_type = "application/x-www-form-urlencoded"
    envelope = envelope_of(t1, {"type": "x"}).replace(body=body, headers={"content-type": content_type})
    request = request_for(envelope)
    for name in ("event", "message", "action", "view", "command", "options", "shortcut"):
        value = getattr(request, name)
        if name in present:
            assert value is not None, name
            assert present[name].items() <= dict(value).items(), name
        else:
            assert value is None, name
    assert request.body == request.payload == request.inbound.payload


def test_a_handler_reads_the_request_by_bolt_names(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    seen: list[tuple[Any, ...]] = []

    @slack.command("/ticket")
    def ticket(request: Any) -> None:
        seen.append((request.command["text"], request.context.channel_id, request.event, request.action))

    assert post_slack(client, form_body(command_body(workspaces[T1]))).status_code == 200
    assert seen == [("list", workspaces[T1].channel, None, None)]
