"""Real Bolt apps behind control: listeners, ack, say, respond, client, lazy, middleware, errors.

Requests are signed as Slack signs them and posted to control (the monolith test
settings deliver them in-process to the region's receiver), or sealed as envelopes and
handed to the receiver as a transport does. Nothing of Bolt is stubbed: the apps are
``slack_bolt.App`` as a Bolt user writes them, built in a region's environment (no token,
placeholders for the rest), and their Slack calls go to the fake Slack, which refuses a
token of another workspace.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client
from slack_bolt import App, BoltRequest
from slack_sdk import WebClient
from slack_sdk.signature import SignatureVerifier

from example_project.fake_slack import FakeSlack
from silo_router.control.slack.store import DjangoInstallationStore
from silo_router.envelope import Envelope, Outcome, seal
from silo_router.exceptions import SiloRouterConfigurationError
from silo_router.providers.slack.client import NoInstallation
from silo_router.region import bolt, receiver
from silo_router.region.handlers import slack
from silo_router.region.models import ProcessedEnvelope

from ..slack_signing import form_body, interactive_body, post_slack
from ..workspaces.conftest import APP_ID, T1, T2, USER, Installed, click_payload, event_body, region_envelope

pytestmark = pytest.mark.django_db(transaction=True)

FORM = "application/x-www-form-urlencoded"
BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "*done*"}}]
OPTIONS = [{"text": {"type": "plain_text", "text": "Alpha"}, "value": "a"}]


# -- what Slack sends ----------------------------------------------------------------------------


def click(client: Client, fake: FakeSlack, workspace: Installed, action_id: str, **extra: Any) -> HttpResponse:
    return post_slack(client, interactive_body(click_payload(fake, workspace, action_id, **extra)))


def command_fields(fake: FakeSlack, workspace: Installed, command: str, text: str = "") -> dict[str, str]:
    return {
        "command": command,
        "text": text,
        "team_id": workspace.team_id,
        "team_domain": "acme",
        "user_id": USER,
        "channel_id": workspace.channel,
        "api_app_id": APP_ID,
        "is_enterprise_install": "false",
        "response_url": fake.issue_response_url(team_id=workspace.team_id, channel_id=workspace.channel),
        "trigger_id": fake.issue_trigger(team_id=workspace.team_id),
    }


def command(client: Client, fake: FakeSlack, workspace: Installed, name: str, text: str = "") -> HttpResponse:
    return post_slack(client, form_body(command_fields(fake, workspace, name, text)))


def options_payload(workspace: Installed, action_id: str, value: str = "") -> dict[str, Any]:
    return {
        "type": "block_suggestion",
        "team": {"id": workspace.team_id, "domain": "acme"},
        "user": {"id": USER, "team_id": workspace.team_id},
        "api_app_id": APP_ID,
        "action_id": action_id,
        "block_id": "b1",
        "value": value,
        "container": {"type": "view", "view_id": "V0VIEW001"},
        "view": {"id": "V0VIEW001", "type": "modal", "callback_id": "picker", "state": {"values": {}}},
    }


def submission_payload(fake: FakeSlack, workspace: Installed, callback_id: str, title: str) -> dict[str, Any]:
    return {
        "type": "view_submission",
        "team": {"id": workspace.team_id, "domain": "acme"},
        "user": {"id": USER, "team_id": workspace.team_id},
        "api_app_id": APP_ID,
        "trigger_id": fake.issue_trigger(team_id=workspace.team_id),
        "view": {
            "id": "V0VIEW002",
            "type": "modal",
            "callback_id": callback_id,
            "state": {"values": {"title": {"title": {"type": "plain_text_input", "value": title}}}},
        },
        "response_urls": [],
    }


def answer_of(response: HttpResponse) -> Any:
    """What control answered Slack: JSON, or ``None`` for an empty body."""
    assert response.status_code == 200
    return json.loads(response.content) if response.content else None


def envelope_of(
    workspace: Installed, body: bytes, *, kind: str, strategy: str = "async", content_type: str = FORM
) -> Envelope:
    """What control seals for ``workspace``'s region: the original body, the installation's facts."""
    return region_envelope(workspace, body.decode(), kind=kind, strategy=strategy, content_type=content_type)


def deliver(envelope: Envelope) -> Any:
    """Seal ``envelope`` and hand it to its region's receiver, as a transport does."""
    sealed = seal(envelope)
    return receiver.dispatch(receiver.accept(sealed.body, sealed.signature, region=envelope.region))


def ok_calls(fake: FakeSlack, method: str) -> list[tuple[str | None, str | None]]:
    """``(team of the token, error)`` of every call of ``method``."""
    return [(call.team_id, call.error) for call in fake.calls(method)]


# -- an app copied from Bolt's documentation ------------------------------------------------------


def test_bolts_getting_started_app_runs_unchanged_with_each_workspaces_token(
    client: Client,
    fake: FakeSlack,
    workspaces: dict[str, Installed],
    import_fresh: Callable[[str], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bolt's examples/getting_started/app.py, as it is: built without calling Slack, served through control."""

    def no_auth_test(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the app must not call auth.test when it is built in a region")

    verified = len(fake.calls("auth.test"))  # installing the workspaces asked auth.test for their bots
    monkeypatch.setattr(WebClient, "auth_test", no_auth_test)
    module = import_fresh("tests.bolt.getting_started_app")
    monkeypatch.undo()  # the environment and auth_test again; the app keeps what it read
    bolt.mount(module.app)

    t1, t2 = workspaces[T1], workspaces[T2]
    hello = {"type": "message", "user": USER, "text": "hello there", "ts": "1700000000.000300", "channel": t1.channel}
    post_slack(client, event_body(t1, hello, event_id="EvHello1"), content_type="application/json")
    assert click(client, fake, t2, "button_click").status_code == 200

    greeting, clicked = fake.calls("chat.postMessage")
    assert (greeting.team_id, greeting.error, greeting.params["channel"]) == (T1, None, t1.channel)
    assert greeting.params["text"] == f"Hey there <@{USER}>!"
    assert greeting.params["blocks"][0]["accessory"]["action_id"] == "button_click"
    assert (clicked.team_id, clicked.error, clicked.params["channel"]) == (T2, None, t2.channel)
    assert clicked.params["text"] == f"<@{USER}> clicked the button"
    assert len(fake.calls("auth.test")) == verified


def test_the_documented_app_needs_the_placeholders_to_build_without_slack(
    monkeypatch: pytest.MonkeyPatch, region_env: None
) -> None:
    """Without SLACK_CLIENT_ID/SECRET, Bolt would verify the token with auth.test as the app is built."""
    asked: list[str] = []

    def auth_test(self: WebClient, **kwargs: Any) -> Any:
        asked.append(self.base_url)
        raise ConnectionError("a region cannot reach Slack")

    monkeypatch.setattr(WebClient, "auth_test", auth_test)
    for name in bolt_env_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-placeholder")
    with pytest.raises(ConnectionError):
        App(token="xoxb-placeholder")
    assert asked == ["https://slack.com/api/"]
    monkeypatch.setenv("SLACK_CLIENT_ID", "silo-region-placeholder")
    monkeypatch.setenv("SLACK_CLIENT_SECRET", "silo-region-placeholder")
    App(token="xoxb-placeholder")  # the token is skipped: no auth.test
    assert asked == ["https://slack.com/api/"]


def bolt_env_names() -> tuple[str, ...]:
    return ("SLACK_CLIENT_ID", "SLACK_CLIENT_SECRET", "SLACK_BOT_TOKEN")


# -- listeners, say, respond, client -----------------------------------------------------------


def test_an_action_listener_gets_the_installations_client_say_and_respond(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    app = new_app()
    seen: dict[str, Any] = {}

    @app.action("approve")
    def approve(ack: Any, body: Any, action: Any, say: Any, respond: Any, client: WebClient, context: Any) -> None:
        ack()
        seen["say"] = say("approved publicly")["ok"]
        seen["respond"] = respond("only you see this").status_code
        seen["client"] = client.chat_postMessage(channel=context.channel_id, text="from the client")["ok"]
        seen["context"] = {
            key: context.get(key)
            for key in ("team_id", "user_id", "channel_id", "token", "bot_token", "user_token", "bot_user_id", "bot_id")
        }
        seen["silo"] = (context["organization_id"], context["organization_ids"], context["installation_id"])
        seen["action"] = action["action_id"]

    bolt.mount(app)
    t2 = workspaces[T2]
    assert answer_of(click(client, fake, t2, "approve")) is None  # control acknowledged: an empty 200

    assert ok_calls(fake, "chat.postMessage") == [(T2, None), (T2, None)]
    (reply,) = fake.calls("response_url")
    assert (reply.team_id, reply.ok, reply.params["text"], reply.params["response_type"]) == (
        T2,
        True,
        "only you see this",
        "ephemeral",
    )
    assert seen["say"] is True and seen["respond"] == 200 and seen["client"] is True
    assert seen["context"] == {
        "team_id": T2,
        "user_id": USER,
        "channel_id": t2.channel,
        "token": None,
        "bot_token": None,
        "user_token": None,
        "bot_user_id": t2.bot_user_id,
        "bot_id": t2.bot_id,
    }
    assert seen["silo"] == ("201", ["201"], t2.installation_id)
    assert seen["action"] == "approve"


def test_every_respond_option_of_bolt_reaches_the_response_url(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    app = new_app()
    metadata = {"event_type": "issue_resolved", "event_payload": {"issue": 7}}
    attachments = [{"color": "#36a64f", "text": "details"}]

    @app.action("approve")
    def approve(ack: Any, respond: Any) -> None:
        ack()
        respond(
            "resolved",
            blocks=BLOCKS,
            attachments=attachments,
            response_type="in_channel",
            replace_original=True,
            unfurl_links=False,
            unfurl_media=True,
            thread_ts="1700000000.000100",
            metadata=metadata,
        )
        respond(delete_original=True)
        respond({"text": "a whole message", "response_type": "in_channel"})

    bolt.mount(app)
    assert click(client, fake, workspaces[T1], "approve").status_code == 200
    full, delete, whole = (call.params for call in fake.calls("response_url"))
    assert {key: value for key, value in full.items() if key != "response_url"} == {
        "text": "resolved",
        "blocks": BLOCKS,
        "attachments": attachments,
        "response_type": "in_channel",
        "replace_original": True,
        "unfurl_links": False,
        "unfurl_media": True,
        "thread_ts": "1700000000.000100",
        "metadata": metadata,
    }
    assert (delete["delete_original"], delete["response_type"]) == (True, "ephemeral")
    assert (whole["text"], whole["response_type"]) == ("a whole message", "in_channel")
    assert all(call.ok for call in fake.calls("response_url"))


def test_respond_keeps_a_private_reply_private_when_the_response_url_fails(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    app = new_app()
    answers: list[int] = []

    @app.action("approve")
    def approve(ack: Any, respond: Any) -> None:
        ack()
        answers.append(respond("private").status_code)
        answers.append(respond(text="announced", blocks=BLOCKS, response_type="in_channel").status_code)

    bolt.mount(app)
    t1 = workspaces[T1]
    fake.fail_next("response_url", status=500, count=2)
    assert click(client, fake, t1, "approve").status_code == 200

    assert [call.error for call in fake.calls("response_url")] == ["fatal_error", "fatal_error"]
    (private,) = fake.calls("chat.postEphemeral")
    assert (private.team_id, private.params["user"], private.params["text"]) == (T1, USER, "private")
    (public,) = fake.calls("chat.postMessage")  # only the in_channel reply goes to the channel
    assert (public.team_id, public.params["text"], public.params["blocks"]) == (T1, "announced", BLOCKS)
    assert answers == [200, 200]


def test_say_in_a_workspace_the_installation_does_not_own_is_refused_by_slack(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    """The client is the installation's: posting into another workspace's channel fails as Slack fails it."""
    app = new_app()
    errors: list[str] = []

    @app.action("approve")
    def approve(ack: Any, say: Any) -> None:
        ack()
        try:
            say("elsewhere", channel=workspaces[T2].channel)
        except Exception as exc:  # slack_sdk.errors.SlackApiError
            errors.append(exc.response["error"])  # type: ignore[attr-defined]

    bolt.mount(app)
    assert click(client, fake, workspaces[T1], "approve").status_code == 200
    assert errors == ["channel_not_found"]
    assert ok_calls(fake, "chat.postMessage") == [(T1, "channel_not_found")]


# -- ack answers the synchronous kinds -----------------------------------------------------------


def test_ack_with_options_and_view_errors_answers_slack_through_control(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    app = new_app()

    @app.options("pick")
    def pick(ack: Any, payload: Any) -> None:
        ack(options=[option for option in OPTIONS if option["value"].startswith(payload["value"])])

    @app.view("new_issue")
    def submit(ack: Any, view: Any) -> None:
        title = view["state"]["values"]["title"]["title"]["value"]
        if len(title) < 3:
            ack(response_action="errors", errors={"title": "Too short"})
        else:
            ack()

    bolt.mount(app)
    t1 = workspaces[T1]
    assert answer_of(post_slack(client, interactive_body(options_payload(t1, "pick", "a")))) == {"options": OPTIONS}
    assert answer_of(post_slack(client, interactive_body(options_payload(t1, "pick", "z")))) == {"options": []}
    short = post_slack(client, interactive_body(submission_payload(fake, t1, "new_issue", "ab")))
    assert answer_of(short) == {"response_action": "errors", "errors": {"title": "Too short"}}
    fine = post_slack(client, interactive_body(submission_payload(fake, t1, "new_issue", "A good title")))
    assert fine.content == b""  # the modal closes
    assert fake.calls("response_url") == [] and fake.calls("chat.postMessage") == []


def test_ack_with_a_view_update_and_a_whole_dict_are_answered_as_built_and_kept(
    fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    app = new_app()
    next_view = {"type": "modal", "title": {"type": "plain_text", "text": "Step 2"}, "blocks": BLOCKS}
    runs: list[str] = []

    @app.view("wizard")
    def wizard(ack: Any) -> None:
        runs.append("wizard")
        ack(response_action="update", view=next_view)

    @app.options("pick")
    def pick(ack: Any) -> None:
        ack({"option_groups": [{"label": {"type": "plain_text", "text": "G"}, "options": OPTIONS}]})

    bolt.mount(app)
    t1 = workspaces[T1]
    submission = interactive_body(submission_payload(fake, t1, "wizard", "x"))
    envelope = envelope_of(t1, submission, kind="view_submission:wizard", strategy="sync")
    updated = deliver(envelope)
    assert (updated.outcome, updated.response) == (Outcome.HANDLED, {"response_action": "update", "view": next_view})
    again = deliver(envelope)  # a second delivery: the region's record answers, Bolt does not run again
    assert (again.outcome, again.response, runs) == (Outcome.DUPLICATE, updated.response, ["wizard"])
    grouped = deliver(
        envelope_of(t1, interactive_body(options_payload(t1, "pick")), kind="block_suggestion:pick", strategy="sync")
    )
    assert grouped.response == {"option_groups": [{"label": {"type": "plain_text", "text": "G"}, "options": OPTIONS}]}


def test_a_command_ack_text_reaches_the_user_privately_and_before_later_replies(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    """Control acknowledged the command already; ``ack(text)`` goes out through its response_url, first."""
    app = new_app()

    @app.command("/deploy")
    def deploy(ack: Any, command: Any, respond: Any) -> None:
        ack(f"Deploying {command['text']}...")
        respond(f"Deployed {command['text']}", response_type="in_channel")

    @app.command("/quiet")
    def quiet(ack: Any) -> None:
        ack()

    bolt.mount(app)
    t1 = workspaces[T1]
    assert answer_of(command(client, fake, t1, "/deploy", "v2")) is None
    assert answer_of(command(client, fake, t1, "/quiet")) is None
    first, second = fake.calls("response_url")
    assert (first.params["text"], first.params["response_type"], first.team_id) == ("Deploying v2...", "ephemeral", T1)
    assert (second.params["text"], second.params["response_type"]) == ("Deployed v2", "in_channel")
    assert fake.calls("chat.postMessage") == [] and fake.calls("chat.postEphemeral") == []


def test_a_command_routed_synchronously_gets_its_ack_text_in_the_http_answer(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App], settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "ROUTES": {"slack.command": "sync"}}
    app = new_app()

    @app.command("/deploy")
    def deploy(ack: Any) -> None:
        ack("Deploying", response_type="in_channel")

    bolt.mount(app)
    answer = answer_of(command(client, fake, workspaces[T1], "/deploy"))
    assert answer == {"text": "Deploying", "response_type": "in_channel"}
    assert fake.calls("response_url") == []


# -- middleware, matchers, error handlers, lazy listeners -----------------------------------------


def test_global_and_listener_middleware_and_matchers_run_as_in_bolt(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    app = new_app()
    order: list[str] = []

    @app.middleware
    def stamp(context: Any, next: Callable[[], None]) -> None:
        order.append(f"global:{context.get('organization_id')}")
        context["stamp"] = "seen"
        next()

    @app.middleware
    def drop_bots(body: Any, next: Callable[[], None]) -> None:
        if body.get("user", {}).get("id") != "U0BLOCKED":
            next()

    def only_value_two(action: Any) -> bool:
        return bool(action.get("value") == "2")

    def listener_middleware(next: Callable[[], None]) -> None:
        order.append("listener middleware")
        next()

    @app.action("approve", matchers=[only_value_two], middleware=[listener_middleware])
    def two(ack: Any, stamp: str) -> None:
        ack()
        order.append(f"value two, {stamp}")

    @app.action("approve")
    def any_other(ack: Any) -> None:
        ack()
        order.append("another value")

    bolt.mount(app)
    t1 = workspaces[T1]
    payload = click_payload(fake, t1, "approve")
    payload["actions"][0]["value"] = "2"
    post_slack(client, interactive_body(payload))
    click(client, fake, t1, "approve")
    blocked = click_payload(fake, t1, "approve", user={"id": "U0BLOCKED", "team_id": T1})
    post_slack(client, interactive_body(blocked))
    assert order == [
        "global:101",
        "listener middleware",
        "value two, seen",
        "global:101",
        "another value",
        "global:101",  # the second middleware did not call next(): no listener
    ]


def test_a_listener_that_raises_goes_to_the_error_handler_and_is_retried(
    fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    app = new_app()
    handled: list[str] = []
    runs: list[int] = []

    @app.error
    def on_error(error: Exception, body: Any) -> None:
        handled.append(f"{type(error).__name__}: {error}")

    @app.action("approve")
    def approve(ack: Any) -> None:
        ack()
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("the tracker is down")

    bolt.mount(app)
    t1 = workspaces[T1]
    envelope = envelope_of(t1, interactive_body(click_payload(fake, t1, "approve")), kind="block_actions:approve")
    with pytest.raises(receiver.HandlerFailed) as failed:
        deliver(envelope)
    assert isinstance(failed.value.__cause__, bolt.BoltAppFailed)
    assert handled == ["RuntimeError: the tracker is down"]
    assert not ProcessedEnvelope.objects.filter(pk=envelope.id).exists()  # not recorded: control retries it
    assert deliver(envelope).outcome == Outcome.HANDLED  # the retry
    assert deliver(envelope).outcome == Outcome.DUPLICATE
    assert len(runs) == 2


def test_an_app_that_raises_for_unhandled_requests_tells_its_error_handler_and_answers_nothing(
    workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    app = new_app(raise_error_for_unhandled_request=True)
    errors: list[str] = []

    @app.error
    def on_error(error: Exception) -> None:
        errors.append(type(error).__name__)

    bolt.mount(app)
    t1 = workspaces[T1]
    body = interactive_body(options_payload(t1, "nobody"))
    receipt = deliver(envelope_of(t1, body, kind="block_suggestion:nobody", strategy="sync"))
    assert (receipt.outcome, receipt.response, errors) == (Outcome.HANDLED, None, ["BoltUnhandledRequestError"])


def test_lazy_listeners_run_after_the_receipt_has_gone_back(
    fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    app = new_app()
    order: list[str] = []

    def accept_fast(ack: Any) -> None:
        ack()
        order.append("ack")

    def slow_work(respond: Any, client: WebClient, command: Any, context: Any) -> None:
        order.append(f"lazy, recorded={ProcessedEnvelope.objects.exists()}, org={context['organization_id']}")
        client.chat_postMessage(channel=command["channel_id"], text="report ready")
        respond("done")

    app.command("/report")(ack=accept_fast, lazy=[slow_work])
    bolt.mount(app)
    t2 = workspaces[T2]
    envelope = envelope_of(t2, form_body(command_fields(fake, t2, "/report")), kind="command:/report")
    sealed = seal(envelope)
    accepted: list[str] = []
    receipt, held = receiver.local_receiver(
        sealed.body, sealed.signature, region=envelope.region, on_accept=lambda: accepted.append("accepted")
    )
    assert receipt.outcome == Outcome.HANDLED
    assert order == ["ack"] and fake.calls("chat.postMessage") == []  # held until the receipt is back
    for callback in held:
        callback()
    assert order == ["ack", "lazy, recorded=True, org=201"]
    assert ok_calls(fake, "chat.postMessage") == [(T2, None)]
    assert [(call.team_id, call.params["text"]) for call in fake.calls("response_url")] == [(T2, "done")]


def test_bolts_own_self_event_filter_sees_the_bot_ids_control_carried(
    workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    app = new_app()
    heard: list[str] = []

    @app.event("app_mention")
    def mentioned(event: Any) -> None:
        heard.append(event["user"])

    bolt.mount(app)
    t1 = workspaces[T1]
    for user, event_id in ((t1.bot_user_id, "EvSelf1"), (USER, "EvUser1")):
        mention = {"type": "app_mention", "user": user, "text": "hi", "ts": "1.2", "channel": t1.channel}
        body = event_body(t1, mention, event_id=event_id)
        deliver(envelope_of(t1, body, kind="event_callback:app_mention", content_type="application/json"))
    assert heard == [USER]


def test_an_uninstall_reaches_its_listener_whose_client_refuses_to_call_slack(
    fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    app = new_app()
    seen: list[str] = []

    @app.event("app_uninstalled")
    def uninstalled(client: WebClient, context: Any) -> None:
        seen.append(context["organization_id"])
        try:
            client.chat_postMessage(channel="C1", text="bye")
        except NoInstallation:
            seen.append("no installation")

    bolt.mount(app)
    t1 = workspaces[T1]
    DjangoInstallationStore().deactivate(t1.integration, reason="app_uninstalled")
    body = event_body(t1, {"type": "app_uninstalled"}, event_id="EvGone1")
    receipt = deliver(envelope_of(t1, body, kind="event_callback:app_uninstalled", content_type="application/json"))
    assert receipt.outcome == Outcome.HANDLED
    assert seen == ["101", "no installation"]
    assert fake.calls("chat.postMessage") == []


def test_a_lazy_listeners_ack_answers_nothing(
    fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    app = new_app()

    def first(ack: Any) -> None:
        ack()

    def later(ack: Any, respond: Any) -> None:
        ack("too late to acknowledge")
        respond("from the lazy listener")

    app.command("/report")(ack=first, lazy=[later])
    bolt.mount(app)
    t1 = workspaces[T1]
    deliver(envelope_of(t1, form_body(command_fields(fake, t1, "/report")), kind="command:/report"))
    assert [call.params["text"] for call in fake.calls("response_url")] == ["from the lazy listener"]


# -- registration --------------------------------------------------------------------------------


def test_native_handlers_for_a_kind_win_and_unmatched_requests_are_answered_with_nothing(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    app = new_app()
    ran: list[str] = []

    @app.action("native")
    def bolt_native(ack: Any) -> None:
        ack()
        ran.append("bolt")

    @slack.action("native")
    def native(request: Any) -> None:
        ran.append("native")

    bolt.mount(app)
    t1 = workspaces[T1]
    click(client, fake, t1, "native")
    nobody = interactive_body(options_payload(t1, "nobody"))
    unmatched = deliver(envelope_of(t1, nobody, kind="block_suggestion:nobody", strategy="sync"))
    assert ran == ["native"]
    assert (unmatched.outcome, unmatched.response) == (Outcome.HANDLED, None)
    assert answer_of(post_slack(client, interactive_body(options_payload(t1, "nobody")))) == {"options": []}


def test_mount_registers_every_forwarded_type_once_and_refuses_a_second_app(
    settings: Any, new_app: Callable[..., App]
) -> None:
    app = new_app()
    assert bolt.mount(app) is app
    assert bolt.mount(app) is app  # again: the same handler, no conflict
    registered = {key for key, registration in slack.registered().items() if not registration.atomic}
    assert registered == {(request_type, "*") for request_type in bolt.forwarded_types()}
    assert {"block_actions", "block_suggestion", "command", "event_callback", "view_submission"} <= {
        request_type for request_type, _ in registered
    }
    assert "url_verification" not in bolt.forwarded_types() and "ssl_check" not in bolt.forwarded_types()
    with pytest.raises(SiloRouterConfigurationError, match="already has a slack handler"):
        bolt.mount(new_app())


def test_a_catch_all_native_handler_refuses_the_mount_before_anything_is_registered(
    new_app: Callable[..., App],
) -> None:
    @slack.event()
    def every_event(request: Any) -> None:
        pass

    before = slack.registered()
    with pytest.raises(SiloRouterConfigurationError, match=r"event_callback:\*"):
        bolt.mount(new_app())
    assert slack.registered() == before


def test_a_region_refuses_an_app_that_verified_a_real_token(
    settings: Any, fake: FakeSlack, workspaces: dict[str, Installed], region_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLACK_CLIENT_ID")
    monkeypatch.delenv("SLACK_CLIENT_SECRET")
    app = App(client=WebClient(token=workspaces[T1].token, base_url=fake.api_url))  # auth.test answered by Slack
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "MODE": "region", "REGION": "us"}
    with pytest.raises(SiloRouterConfigurationError, match="working Slack token"):
        bolt.mount(app)


def test_a_region_warns_about_a_token_it_never_uses(
    settings: Any, region_env: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("SLACK_CLIENT_ID")
    monkeypatch.delenv("SLACK_CLIENT_SECRET")
    app = App(token="xoxb-not-verified", token_verification_enabled=False)
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "MODE": "region", "REGION": "us"}
    bolt.mount(app)
    (warning,) = [record for record in caplog.records if record.name == "silo_router.region.bolt"]
    assert warning.levelno == logging.WARNING and "SLACK_BOT_TOKEN" in warning.getMessage()
    assert "xoxb-not-verified" not in warning.getMessage()


def test_a_mounted_app_refuses_requests_that_did_not_come_as_envelopes(
    fake: FakeSlack, workspaces: dict[str, Installed], new_app: Callable[..., App]
) -> None:
    """A Bolt HTTP adapter left in place: even a correctly signed request never reaches a listener."""
    app = new_app(signing_secret="a-signing-secret-the-region-should-not-have")
    ran: list[str] = []

    @app.action("approve")
    def approve(ack: Any) -> None:
        ack()
        ran.append("ran")

    bolt.mount(app)
    body = interactive_body(click_payload(fake, workspaces[T1], "approve")).decode()
    timestamp = str(int(time.time()))
    signature = SignatureVerifier("a-signing-secret-the-region-should-not-have").generate_signature(
        timestamp=timestamp, body=body
    )
    headers = {"content-type": FORM, "x-slack-request-timestamp": timestamp, "x-slack-signature": str(signature)}
    response = app.dispatch(BoltRequest(body=body, headers=headers))
    assert response.status == 500 and ran == []
    assert fake.calls("chat.postMessage") == []


def test_no_capability_or_token_reaches_the_logs(
    client: Client,
    fake: FakeSlack,
    workspaces: dict[str, Installed],
    new_app: Callable[..., App],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Bolt's own DEBUG lines included: the response_url, trigger_id and token are never written down."""
    caplog.set_level(logging.DEBUG)
    app = new_app()

    @app.action("approve")
    def approve(ack: Any, body: Any, respond: Any, logger: logging.Logger) -> None:
        ack()
        logger.info("clicked: %s", body)
        respond("private")

    bolt.mount(app)
    t1 = workspaces[T1]
    payload = click_payload(fake, t1, "approve")
    fake.fail_next("response_url", status=500)
    post_slack(client, interactive_body(payload))
    assert [call.method for call in fake.calls() if call.method in ("response_url", "chat.postEphemeral")] == [
        "response_url",
        "chat.postEphemeral",
    ]
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "clicked:" in text
    for secret in (payload["response_url"], payload["trigger_id"], t1.token, t1.token.split("-", 1)[1]):
        assert secret not in text
