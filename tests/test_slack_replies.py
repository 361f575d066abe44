"""Handler replies against the fake Slack: private replies stay private, response_url limits, 429s."""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone
from slack_sdk import WebClient

from example_project.cluster import free_port
from example_project.fake_slack import FakeSlack
from silo_router.checks import check_settings
from silo_router.envelope import Envelope, seal
from silo_router.providers.registry import get_provider
from silo_router.providers.slack.client import slack_client
from silo_router.providers.slack.request import RESPONSE_URL_USES, SlackCallInTransaction, SlackHandlerRequest
from silo_router.region import receiver
from silo_router.region.handlers import slack
from silo_router.region.models import ResponseUrlUse
from silo_router.region.response_urls import RETENTION, DatabaseLedger, url_hash

from .slack_signing import block_actions, event_callback, interactive_body, post_slack


def dispatch(envelope: Envelope) -> Any:
    """Hand ``envelope`` to the region as a transport does: sealed, verified, dispatched."""
    sealed = seal(envelope)
    return receiver.dispatch(receiver.accept(sealed.body, sealed.signature, region=envelope.region))


pytestmark = pytest.mark.django_db(transaction=True)

USER, CHANNEL = "U0USER001", "C0CHAN001"


@pytest.fixture
def fake(settings: Any) -> Iterator[FakeSlack]:
    with FakeSlack(signing_secret=settings.SLACK_SIGNING_SECRET, bot_token="xoxb-tests") as server:
        settings.SILO_ROUTER = {
            **settings.SILO_ROUTER,
            "SLACK": {**settings.SILO_ROUTER["SLACK"], "API_URL": server.api_url},
            "REDACTED_URL_PREFIXES": [f"{server.base_url}/response/"],
        }
        yield server


def click_with(client: Client, response_url: str, *, value: str = "1") -> None:
    payload = block_actions(value=value)
    payload["response_url"] = response_url
    assert post_slack(client, interactive_body(payload)).status_code == 200


def ephemeral_posts(fake: FakeSlack) -> list[tuple[str, str, str]]:
    return [(c.params["channel"], c.params["user"], c.params["text"]) for c in fake.calls("chat.postEphemeral") if c.ok]


def click_envelope(response_url: str, *, created_at: float) -> Envelope:
    payload = block_actions()
    payload["response_url"] = response_url
    return Envelope(
        id=Envelope.make_id(f"k-{created_at}", "us"),
        idempotency_key=f"k-{created_at}",
        provider="slack",
        kind="block_actions:resolve_dialog",
        region="us",
        body=interactive_body(payload).decode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
        strategy="async",
        organization_ids=("101",),
        created_at=created_at,
    )


def slack_request(fake: FakeSlack) -> SlackHandlerRequest:
    envelope = click_envelope(fake.issue_response_url(channel_id=CHANNEL), created_at=time.time())
    inbound = get_provider("slack").parse(body=envelope.body.encode(), headers=envelope.headers)
    return SlackHandlerRequest(envelope=envelope, inbound=inbound)


def test_ephemeral_reply_past_five_uses_goes_to_the_user_never_the_channel(
    client: Client, fake: FakeSlack, installations: Any
) -> None:
    @slack.action("resolve_dialog")
    def chatty(request: Any) -> None:
        for n in range(7):
            request.respond(f"update {n}")

    click_with(client, fake.issue_response_url(channel_id=CHANNEL))
    assert [c.params["text"] for c in fake.calls("response_url")] == [f"update {n}" for n in range(5)]
    assert ephemeral_posts(fake) == [(CHANNEL, USER, "update 5"), (CHANNEL, USER, "update 6")]
    assert fake.calls("chat.postMessage") == []


def test_uses_are_counted_per_response_url_across_handler_runs(
    client: Client, fake: FakeSlack, installations: Any
) -> None:
    """Two payloads sharing a response_url (a second click in the same message) share its 5 uses."""

    @slack.action("resolve_dialog")
    def thrice(request: Any) -> None:
        for n in range(3):
            request.respond(f"{request.payload['actions'][0]['value']}.{n}")

    url = fake.issue_response_url(channel_id=CHANNEL)
    click_with(client, url, value="a")
    click_with(client, url, value="b")
    assert [c.params["text"] for c in fake.calls("response_url")] == ["a.0", "a.1", "a.2", "b.0", "b.1"]
    assert all(c.ok for c in fake.calls("response_url"))
    assert ephemeral_posts(fake) == [(CHANNEL, USER, "b.2")]
    assert fake.calls("chat.postMessage") == []
    (use,) = ResponseUrlUse.objects.all()
    assert use.uses == 5
    assert url not in use.url_hash and "response" not in use.url_hash


def test_the_ledger_forgets_response_urls_past_their_life() -> None:
    ledger = DatabaseLedger()
    assert ledger.take("https://hooks.slack.com/actions/T/1/old", limit=RESPONSE_URL_USES)
    ResponseUrlUse.objects.update(first_used_at=timezone.now() - RETENTION - datetime.timedelta(seconds=1))
    assert ledger.take("https://hooks.slack.com/actions/T/2/new", limit=RESPONSE_URL_USES)
    assert [use.url_hash for use in ResponseUrlUse.objects.all()] == [
        url_hash("https://hooks.slack.com/actions/T/2/new")
    ]


def test_stale_response_url_is_not_used_and_the_reply_stays_ephemeral(fake: FakeSlack, installations: Any) -> None:
    @slack.action("resolve_dialog")
    def late(request: Any) -> None:
        request.respond("finally done")

    url = fake.issue_response_url(channel_id=CHANNEL)
    dispatch(click_envelope(url, created_at=time.time() - 31 * 60))
    assert fake.calls("response_url") == []
    assert ephemeral_posts(fake) == [(CHANNEL, USER, "finally done")]
    assert fake.calls("chat.postMessage") == []


def test_unreachable_response_url_falls_back_to_an_ephemeral_message(fake: FakeSlack, installations: Any) -> None:
    """A response_url whose post raises (connection refused) is a failed send, not a lost reply."""

    @slack.action("resolve_dialog")
    def reply(request: Any) -> None:
        request.respond("done")

    dispatch(click_envelope(f"http://127.0.0.1:{free_port()}/response/gone", created_at=time.time()))
    assert ephemeral_posts(fake) == [(CHANNEL, USER, "done")]
    assert fake.calls("chat.postMessage") == []


def test_refused_response_url_falls_back_to_an_ephemeral_message(settings: Any, installations: Any) -> None:
    with FakeSlack(signing_secret="x", bot_token="xoxb-tests", response_url_ttl=0.0) as fake:
        settings.SILO_ROUTER = {
            **settings.SILO_ROUTER,
            "SLACK": {**settings.SILO_ROUTER["SLACK"], "API_URL": fake.api_url},
        }

        @slack.action("resolve_dialog")
        def reply(request: Any) -> None:
            request.respond("done", replace_original=True)

        dispatch(click_envelope(fake.issue_response_url(channel_id=CHANNEL), created_at=time.time()))
        assert [c.error for c in fake.calls("response_url")] == ["expired_url"]
        # The clicked message is not one Slack knows: replacing it fails, and the reply stays private.
        assert [c.error for c in fake.calls("chat.update")] == ["message_not_found"]
        assert ephemeral_posts(fake) == [(CHANNEL, USER, "done")]
        assert fake.calls("chat.postMessage") == []


def test_in_channel_reply_past_five_uses_may_go_to_the_channel(
    client: Client, fake: FakeSlack, installations: Any
) -> None:
    @slack.action("resolve_dialog")
    def announce(request: Any) -> None:
        for n in range(6):
            request.respond(f"news {n}", response_type="in_channel")

    click_with(client, fake.issue_response_url(channel_id=CHANNEL))
    assert len(fake.calls("response_url")) == 5
    assert [(c.params["channel"], c.params["text"]) for c in fake.calls("chat.postMessage")] == [(CHANNEL, "news 5")]
    assert fake.calls("chat.postEphemeral") == []


def test_a_reply_that_cannot_be_sent_is_logged_at_error_without_the_url(
    fake: FakeSlack, installations: Any, caplog: pytest.LogCaptureFixture
) -> None:
    @slack.action("resolve_dialog")
    def reply(request: Any) -> None:
        request.respond("done")

    url = fake.issue_response_url(channel_id=CHANNEL)
    fake.fail_next("response_url", status=500)
    fake.fail_next("chat.postEphemeral", status=500)
    with caplog.at_level(logging.DEBUG):
        dispatch(click_envelope(url, created_at=time.time()))
    assert [r for r in caplog.records if r.levelno >= logging.ERROR and "chat.postEphemeral" in r.getMessage()]
    token = url.rsplit("/", 1)[1]
    assert not [r for r in caplog.records if token in r.getMessage()]
    assert fake.calls("chat.postMessage") == []


def test_client_waits_out_a_429_and_retries(client: Client, fake: FakeSlack, installations: Any) -> None:
    posted: list[str] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        request.after_commit(
            lambda: posted.append(request.client.chat_postMessage(channel=CHANNEL, text="hello")["ts"])
        )

    fake.fail_next("chat.postMessage", status=429, retry_after=1, count=1)
    body = json.dumps(event_callback(event_id="Ev429")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    calls = fake.calls("chat.postMessage")
    assert [c.error for c in calls] == ["ratelimited", None]
    assert calls[1].at - calls[0].at >= 0.9  # Retry-After: 1 was honoured (a lower bound: never flaky)
    assert len(posted) == 1


def test_event_reply_without_response_url_is_ephemeral_to_the_user(
    client: Client, fake: FakeSlack, installations: Any
) -> None:
    @slack.event("app_mention")
    def mention(request: Any) -> None:
        request.respond("seen you")
        request.respond("hello all", response_type="in_channel")

    body = json.dumps(event_callback(event_id="EvCh")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    assert ephemeral_posts(fake) == [(CHANNEL, USER, "seen you")]
    assert [(c.params["channel"], c.params["text"]) for c in fake.calls("chat.postMessage")] == [(CHANNEL, "hello all")]


def test_no_slack_call_while_the_handlers_transaction_is_open(fake: FakeSlack, installations: Any) -> None:
    """``request.client``, ``open_view`` and a client the handler builds itself refuse, naming the ways out."""
    request = slack_request(fake)
    request.in_transaction = True  # what the receiver sets while the handler's transaction is open
    try:
        with pytest.raises(SlackCallInTransaction, match=r"after_commit.*atomic=False"):
            request.client.chat_postMessage(channel=CHANNEL, text="inside")
        with pytest.raises(SlackCallInTransaction, match="open_view"):
            request.open_view({"type": "modal", "title": {"type": "plain_text", "text": "x"}, "blocks": []})
        with pytest.raises(SlackCallInTransaction):
            slack_client().chat_postMessage(channel=CHANNEL, text="inside")
    finally:
        request.in_transaction = False
    assert fake.calls() == []
    request.client.chat_postMessage(channel=CHANNEL, text="after commit")
    assert [c.params["text"] for c in fake.calls("chat.postMessage")] == ["after commit"]


def test_replies_queued_inside_the_transaction_go_out_after_commit(fake: FakeSlack, installations: Any) -> None:
    request = slack_request(fake)
    with transaction.atomic():
        request.in_transaction = True
        request.respond("done")
        request.after_commit(lambda: request.client.chat_postMessage(channel=CHANNEL, text="posted after commit"))
        assert fake.calls() == []
    request.in_transaction = False  # a receiver resets the flag after the block: the replies ran already
    assert [c.params["text"] for c in fake.calls("response_url")] == ["done"]
    assert [c.params["text"] for c in fake.calls("chat.postMessage")] == ["posted after commit"]


def test_a_handler_failure_does_not_tell_the_user_failed_while_retries_remain(
    fake: FakeSlack, installations: Any
) -> None:
    """The region leaves the Loading modal alone when a handler raises: control may still retry."""
    view = WebClient(token="xoxb-tests", base_url=fake.api_url).views_open(
        trigger_id=fake.issue_trigger(),
        view={"type": "modal", "title": {"type": "plain_text", "text": "Loading"}, "blocks": []},
    )["view"]

    @slack.action("resolve_dialog")
    def broken(request: Any) -> None:
        raise RuntimeError("region database is down")

    envelope = click_envelope(fake.issue_response_url(channel_id=CHANNEL), created_at=time.time()).replace(
        control_response={
            "handler": "slack.loading_modal",
            "status": "opened",
            "view_id": view["id"],
            "hash": view["hash"],
        }
    )
    with pytest.raises(receiver.HandlerFailed):
        dispatch(envelope)
    assert fake.calls("views.update") == []
    assert fake.views[view["id"]]["title"]["text"] == "Loading"


def test_a_response_url_ledger_that_cannot_be_imported_is_e041(settings: Any) -> None:
    slack_settings = {**settings.SILO_ROUTER["SLACK"], "RESPONSE_URL_LEDGER": "databse"}
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": slack_settings}
    (message,) = [m for m in check_settings() if m.id == "silo_router.E024"]
    assert "database" in message.msg  # did you mean
