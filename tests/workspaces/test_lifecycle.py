"""Uninstalls and revoked tokens: applied in control, told to the regions, and final for later requests."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test import Client

from example_project.fake_slack import FakeSlack
from silo_router.control.models import Payload
from silo_router.region.handlers import slack
from silo_router.region.models import ProcessedEnvelope

from ..slack_signing import post_slack
from .conftest import T1, T2, USER, Installed, click, enable_loading_modal, event_body, post_event

pytestmark = pytest.mark.django_db(transaction=True)

INTEGRATION_TABLE = "silo_router_control_integration"


def uninstalled() -> dict[str, Any]:
    return {"type": "app_uninstalled", "event_ts": "1700000000.000500"}


def revoked(*, bot: tuple[str, ...] = (), oauth: tuple[str, ...] = ()) -> dict[str, Any]:
    tokens: dict[str, list[str]] = {}
    if oauth:
        tokens["oauth"] = list(oauth)
    if bot:
        tokens["bot"] = list(bot)
    return {"type": "tokens_revoked", "tokens": tokens, "event_ts": "1700000000.000600"}


@pytest.fixture
def told() -> list[tuple[str, str, tuple[str, ...]]]:
    """What the regions' lifecycle handlers saw: (event type, region, organizations)."""
    seen: list[tuple[str, str, tuple[str, ...]]] = []

    @slack.event("app_uninstalled")
    def on_uninstall(request: Any) -> None:
        seen.append(("app_uninstalled", request.envelope.region, request.organization_ids))

    @slack.event("tokens_revoked")
    def on_revoke(request: Any) -> None:
        seen.append(("tokens_revoked", request.envelope.region, request.organization_ids))

    return seen


def test_an_uninstall_deactivates_the_installation_and_the_region_is_told(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], told: list[Any]
) -> None:
    t1 = workspaces[T1]
    assert post_event(client, t1, uninstalled(), event_id="EvGone").status_code == 200
    integration = t1.integration
    assert not integration.active
    assert integration.deactivation_reason == "app_uninstalled"
    assert told == [("app_uninstalled", "us", ("101",))]
    assert Payload.objects.get().state == "delivered"
    assert workspaces[T2].integration.active


def test_a_click_after_the_uninstall_is_kept_unroutable_with_the_reason_and_opens_no_modal(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], told: list[Any]
) -> None:
    enable_loading_modal()
    ran: list[str] = []

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        ran.append(request.context.team_id)

    assert post_event(client, workspaces[T1], uninstalled(), event_id="EvGone2").status_code == 200
    assert click(client, fake, workspaces[T1]).status_code == 200
    later = Payload.objects.get(kind="block_actions:resolve_dialog")
    assert later.state == "unroutable"
    assert "app_uninstalled" in later.last_error
    assert fake.calls("views.open") == []
    assert ran == []
    # The other workspace is unaffected.
    assert click(client, fake, workspaces[T2]).status_code == 200
    assert [(c.team_id, c.error) for c in fake.calls("views.open")] == [(T2, None)]
    assert ran == [T2]


def test_revoking_the_bot_token_deactivates_the_installation(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], told: list[Any]
) -> None:
    t2 = workspaces[T2]
    event = revoked(bot=(t2.bot_user_id,), oauth=(USER,))
    assert post_event(client, t2, event, event_id="EvRevokeBot").status_code == 200
    integration = t2.integration
    assert (integration.active, integration.deactivation_reason) == (False, "tokens_revoked")
    assert told == [("tokens_revoked", "eu", ("201",))]


def test_revoking_user_tokens_only_keeps_the_installation(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], told: list[Any]
) -> None:
    t1 = workspaces[T1]
    assert post_event(client, t1, revoked(oauth=(USER,)), event_id="EvRevokeUser").status_code == 200
    assert t1.integration.active
    assert told == [("tokens_revoked", "us", ("101",))]

    @slack.event("app_mention")
    def mentioned(request: Any) -> None:
        request.say("still here")

    mention = {"type": "app_mention", "user": USER, "text": "hi", "ts": "1.2", "channel": t1.channel}
    assert post_event(client, t1, mention, event_id="EvStillHere").status_code == 200
    assert [(c.team_id, c.error) for c in fake.calls("chat.postMessage")] == [(T1, None)]


def test_a_failure_to_deactivate_is_a_503_and_slacks_retry_applies_it(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], told: list[Any]
) -> None:
    t1 = workspaces[T1]
    failed: list[str] = []

    def refuse_integration_updates(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("UPDATE") and INTEGRATION_TABLE in sql:
            failed.append(sql)
            raise OperationalError("the database went away")
        return execute(sql, params, many, context)

    body = event_body(t1, uninstalled(), event_id="EvRetry")
    with connection.execute_wrapper(refuse_integration_updates):
        response = post_slack(client, body, content_type="application/json")
    assert failed, "the deactivation was attempted"
    assert (response.status_code, json.loads(response.content)["error"]) == (503, "storage_unavailable")
    assert t1.integration.active
    retry = post_slack(
        client,
        body,
        content_type="application/json",
        extra={"HTTP_X_SLACK_RETRY_NUM": "1", "HTTP_X_SLACK_RETRY_REASON": "http_error"},
    )
    assert retry.status_code == 200
    assert not t1.integration.active
    assert Payload.objects.count() == 1
    assert ProcessedEnvelope.objects.count() == 1
    assert told == [("app_uninstalled", "us", ("101",))]


def test_slacks_retry_of_an_applied_uninstall_is_acknowledged_once(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], told: list[Any]
) -> None:
    t1 = workspaces[T1]
    body = event_body(t1, uninstalled(), event_id="EvTwice")
    assert post_slack(client, body, content_type="application/json").status_code == 200
    again = post_slack(client, body, content_type="application/json", extra={"HTTP_X_SLACK_RETRY_NUM": "1"})
    assert again.status_code == 200
    assert Payload.objects.count() == 1
    assert told == [("app_uninstalled", "us", ("101",))]
    assert not t1.integration.active
