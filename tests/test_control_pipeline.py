"""The control silo's middleware, driven through Django's test client (monolith, local transport)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.test import Client

from silo_router.control.models import Payload
from silo_router.envelope import Envelope, seal
from silo_router.region.handlers import slack
from silo_router.region.models import ProcessedEnvelope
from silo_router.transports import transport_for

from .slack_signing import (
    SLACK_URL,
    block_actions,
    block_suggestion,
    event_callback,
    form_body,
    interactive_body,
    post_slack,
    signed_headers,
)

pytestmark = pytest.mark.django_db


def reason(response: Any) -> str:
    return json.loads(response.content)["error"]


def test_paths_outside_the_prefixes_pass_through(client: Client) -> None:
    response = client.post("/plain/", data=b"hello", content_type="text/plain")
    assert response.status_code == 200
    assert response.content == b"plain POST hello"


def test_get_on_the_prefix_is_405(client: Client) -> None:
    response = client.get(SLACK_URL)
    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_url_verification_is_answered_in_control(client: Client) -> None:
    body = json.dumps({"type": "url_verification", "token": "x", "challenge": "c-123"}).encode()
    response = post_slack(client, body, content_type="application/json")
    assert response.status_code == 200
    assert json.loads(response.content) == {"challenge": "c-123"}
    assert not Payload.objects.exists()


def test_ssl_check_is_an_empty_200(client: Client) -> None:
    response = post_slack(client, form_body({"ssl_check": "1", "token": "x"}))
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize(
    ("body", "content_type", "status", "why"),
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b'{"type": "brand_new_thing"}', "application/json", 400, "unknown_request_type"),
        (form_body({"token": "x", "team_id": "T1"}), "application/x-www-form-urlencoded", 400, "unknown_request_type"),
        (form_body({"payload": "{oops"}), "application/x-www-form-urlencoded", 400, "malformed_payload"),
        (b"\xff\xfe", "application/x-www-form-urlencoded", 400, "not_utf8"),
    ],
)
def test_bad_bodies_get_a_precise_400(client: Client, body: bytes, content_type: str, status: int, why: str) -> None:
    response = post_slack(client, body, content_type=content_type)
    assert response.status_code == status
    assert reason(response) == why
    assert not Payload.objects.exists()


def test_bad_signature_is_401_and_leaks_nothing(client: Client, settings: Any) -> None:
    body = interactive_body(block_actions())
    headers = signed_headers(body, secret="not-the-secret")
    response = client.post(SLACK_URL, data=body, content_type="application/x-www-form-urlencoded", **headers)
    assert response.status_code == 401
    assert reason(response) == "signature_mismatch"
    assert settings.SLACK_SIGNING_SECRET.encode() not in response.content
    assert not Payload.objects.exists()


def test_missing_signature_and_stale_timestamp(client: Client) -> None:
    body = interactive_body(block_actions())
    response = client.post(SLACK_URL, data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 401
    assert reason(response) == "missing_timestamp"
    response = post_slack(client, body, timestamp=time.time() - 301)
    assert response.status_code == 401
    assert reason(response) == "stale_timestamp"
    response = post_slack(client, body, extra={"HTTP_X_SLACK_REQUEST_TIMESTAMP": "soon"})
    assert response.status_code == 401


def test_oversized_body_is_413(client: Client, settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "MAX_BODY_SIZE": 1000}
    body = interactive_body(block_actions(value="x" * 2000))
    response = post_slack(client, body)
    assert response.status_code == 413
    assert reason(response) == "payload_too_large"


def test_block_action_is_stored_and_handled_once_in_its_region(client: Client, installations: Any) -> None:
    seen: list[tuple[str, str | None]] = []

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        seen.append((request.envelope.region, request.organization_id))

    body = interactive_body(block_actions(team_id="T0EU00001"))
    response = post_slack(client, body)
    assert response.status_code == 200
    assert response.content == b""
    payload = Payload.objects.get()
    assert (payload.region, payload.state, payload.kind) == ("eu", "delivered", "block_actions:resolve_dialog")
    assert seen == [("eu", "201")]
    # The identical request again (a replay) is acknowledged and not handled again.
    assert post_slack(client, body).status_code == 200
    assert seen == [("eu", "201")]
    assert Payload.objects.count() == 1


def test_event_retries_are_deduplicated_and_answered_200(client: Client, installations: Any) -> None:
    seen: list[str] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        seen.append(request.payload["event_id"])

    body = json.dumps(event_callback(event_id="Ev42")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    for retry in ("1", "2", "3"):
        response = post_slack(
            client,
            body,
            content_type="application/json",
            extra={"HTTP_X_SLACK_RETRY_NUM": retry, "HTTP_X_SLACK_RETRY_REASON": "http_timeout"},
        )
        assert response.status_code == 200
    assert seen == ["Ev42"]
    assert ProcessedEnvelope.objects.count() == 1


def test_events_fan_out_to_every_region_of_the_workspace(client: Client, installations: Any) -> None:
    seen: list[tuple[str, tuple[str, ...]]] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        seen.append((request.envelope.region, request.organization_ids))

    body = json.dumps(event_callback(team_id="T0BOTH001", event_id="Ev7")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    assert sorted(seen) == [("eu", ("202",)), ("us", ("101",))]


def test_an_organization_hint_picks_the_region(client: Client, installations: Any) -> None:
    seen: list[str | None] = []

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        seen.append(request.organization_id)

    body = interactive_body(
        block_actions(team_id="T0BOTH001", value=json.dumps({"organization": "initech", "issue": 5}))
    )
    assert post_slack(client, body).status_code == 200
    assert seen == ["202"]
    assert Payload.objects.get().region == "eu"


def test_options_load_is_answered_synchronously_by_the_region(client: Client, installations: Any) -> None:
    @slack.options("pick_issue")
    def options(request: Any) -> dict[str, Any]:
        return {"options": [{"text": {"type": "plain_text", "text": f"org {request.organization_id}"}, "value": "1"}]}

    response = post_slack(client, interactive_body(block_suggestion(team_id="T0US00001")))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content)["options"][0]["text"]["text"] == "org 101"


def test_unhandled_valid_request_gets_200_and_runs_once_a_handler_exists(client: Client, installations: Any) -> None:
    """Deploy skew: the region has no handler yet. Nothing is recorded there, so the same
    envelope, sent again once the handler is deployed, runs it."""
    body = interactive_body(block_actions(action_id="nobody_listens"))
    response = post_slack(client, body)
    assert response.status_code == 200
    assert not ProcessedEnvelope.objects.exists()
    runs: list[str] = []

    @slack.action("nobody_listens")
    def late(request: Any) -> None:
        runs.append(request.kind)

    payload = Payload.objects.get()
    receipt = transport_for(payload.region).deliver(seal(Envelope.from_json(payload.envelope)), timeout=5.0, wait=False)
    assert receipt.outcome == "handled"
    assert runs == ["block_actions:nobody_listens"]


def test_unknown_workspace_is_kept_as_unroutable_and_answered(client: Client, installations: Any) -> None:
    response = post_slack(client, interactive_body(block_actions(team_id="T0NOBODY1")))
    assert response.status_code == 200
    payload = Payload.objects.get()
    assert payload.state == "unroutable"
    assert "T0NOBODY1" in payload.last_error
    sync = post_slack(client, interactive_body(block_suggestion(team_id="T0NOBODY1")))
    assert json.loads(sync.content) == {"options": []}


def test_sync_forward_with_no_time_left_answers_the_fallback(client: Client, installations: Any, settings: Any) -> None:
    calls: list[str] = []

    @slack.options("pick_issue")
    def options(request: Any) -> dict[str, Any]:
        calls.append("ran")
        return {"options": []}

    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SYNC_SAFETY_MARGIN": 2.99, "DELIVERY_BACKOFF": 0.001}
    response = post_slack(client, interactive_body(block_suggestion()))
    assert response.status_code == 200
    assert json.loads(response.content) == {"options": []}
    assert calls == []
    payload = Payload.objects.get()
    assert payload.state == "failed"  # an options load is useless after the deadline


def test_view_submission_timeout_is_redelivered_once(client: Client, installations: Any, settings: Any) -> None:
    calls: list[str] = []

    @slack.view("new_issue")
    def submit(request: Any) -> None:
        calls.append(request.payload["view"]["callback_id"])

    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SYNC_SAFETY_MARGIN": 2.99, "DELIVERY_BACKOFF": 0.001}
    payload = {
        "type": "view_submission",
        "team": {"id": "T0US00001"},
        "user": {"id": "U1", "team_id": "T0US00001"},
        "api_app_id": "A0APP0001",
        "view": {
            "id": "V1",
            "callback_id": "new_issue",
            "team_id": "T0US00001",
            "private_metadata": "",
            "state": {"values": {}},
        },
    }
    response = post_slack(client, interactive_body(payload))
    assert response.status_code == 200
    assert response.content == b""  # an empty body closes the modal
    assert calls == ["new_issue"]  # delivered asynchronously instead
    assert Payload.objects.get().state == "delivered"


def test_handler_failure_is_retried_then_dead_lettered(client: Client, installations: Any, settings: Any) -> None:
    attempts: list[int] = []

    @slack.action("resolve_dialog")
    def broken(request: Any) -> None:
        attempts.append(1)
        raise RuntimeError("boom")

    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "DELIVERY_MAX_ATTEMPTS": 3,
        "DELIVERY_BACKOFF": 0.001,
        "RETRY_JITTER": 0,
    }
    response = post_slack(client, interactive_body(block_actions()))
    assert response.status_code == 200
    payload = Payload.objects.get()
    assert payload.state == "failed"
    assert payload.attempts == 3
    assert "RuntimeError" in payload.last_error
    assert len(attempts) == 3
    assert not ProcessedEnvelope.objects.exists()  # rolled back with the handler


def test_ignore_route_and_type_name_override(client: Client, installations: Any, settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "ROUTES": {"slack.event_callback:message": "ignore"}}
    body = json.dumps(event_callback(event_type="message", event_id="Ev9")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    assert not Payload.objects.exists()
    body = json.dumps(event_callback(event_type="app_mention", event_id="Ev10")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    assert Payload.objects.count() == 1
