"""The control silo's middleware, driven through Django's test client (monolith, local transport)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client

from silo_router.control.models import Integration, OrganizationMapping, Payload
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
        (b'{"type": 7}', "application/json", 400, "unknown_request_type"),
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
    sent_at = time.time()
    response = post_slack(client, body, timestamp=sent_at)
    assert response.status_code == 200
    assert response.content == b""
    payload = Payload.objects.get()
    assert (payload.region, payload.state, payload.kind) == ("eu", "delivered", "block_actions:resolve_dialog")
    assert seen == [("eu", "201")]
    # The identical request again (a replay: same body, same timestamp) is acknowledged and not handled again.
    assert post_slack(client, body, timestamp=sent_at).status_code == 200
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
    payload = Payload.objects.get()  # kept and retried, so a handler deployed later still runs it
    assert (payload.state, payload.last_error) == (
        "pending",
        "no handler for block_actions:nobody_listens in region us",
    )
    assert not ProcessedEnvelope.objects.exists()
    runs: list[str] = []

    @slack.action("nobody_listens")
    def late(request: Any) -> None:
        runs.append(request.kind)

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
    # Sent 5 s ago: the whole clock allowance (1 s) is spent in transit, so nothing is left.
    response = post_slack(client, interactive_body(block_suggestion()), timestamp=time.time() - 5)
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


# -- requests the library does not know, and what cannot be routed ---------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (json.dumps({"type": "brand_new_thing", "team_id": "T0US00001"}).encode(), "application/json"),
        (interactive_body({"type": "brand_new_surface", "team": {"id": "T0US00001"}}), None),
    ],
    ids=["json_body", "interactivity_payload"],
)
def test_a_signed_request_of_an_unknown_type_is_acknowledged_and_kept(
    client: Client, installations: Any, body: bytes, content_type: str | None
) -> None:
    """Slack counts 4xx as failures and disables apps: a new payload type must be a 200."""
    response = post_slack(client, body, **({"content_type": content_type} if content_type else {}))
    assert response.status_code == 200
    payload = Payload.objects.get()
    assert payload.state == "unroutable"
    assert "no route" in payload.last_error and "ROUTES" in payload.last_error
    assert json.loads(payload.envelope)["body"] == body.decode()


def test_an_unknown_type_with_a_route_is_forwarded(client: Client, installations: Any, settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "ROUTES": {"slack.brand_new_thing": "async"}}
    seen: list[str] = []

    @slack.on("brand_new_thing")
    def handle(request: Any) -> None:
        seen.append(request.kind)

    body = json.dumps({"type": "brand_new_thing", "team_id": "T0US00001"}).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    assert Payload.objects.get().region == "us"
    assert seen == ["brand_new_thing"]


def test_an_event_without_event_id_is_kept_under_its_body_hash(client: Client, installations: Any) -> None:
    @slack.event("app_mention")
    def mention(request: Any) -> None:
        pass

    data = event_callback(team_id="T0US00001")
    del data["event_id"]
    body = json.dumps(data).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    payload = Payload.objects.get()
    assert payload.idempotency_key.startswith("slack:body:")
    assert payload.state == "delivered"


def test_no_signing_secret_is_a_logged_503_not_a_401(client: Client, settings: Any, caplog: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": {**settings.SILO_ROUTER["SLACK"], "SIGNING_SECRETS": []}}
    with caplog.at_level("ERROR", logger="silo_router.control"):
        response = post_slack(client, interactive_body(block_actions()))
    assert response.status_code == 503
    assert reason(response) == "not_configured"
    assert any(record.levelname == "ERROR" and "not_configured" in record.getMessage() for record in caplog.records)


def test_a_prefix_naming_an_unregistered_provider_is_a_logged_503(client: Client, settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "URL_PREFIXES": {"/extensions/slack/": "slakc"}}
    response = post_slack(client, interactive_body(block_actions()))
    assert response.status_code == 503
    assert reason(response) == "not_configured"


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_mapping_to_a_region_not_in_regions_is_kept_as_unroutable(
    client: Client, installations: Any, kind: str
) -> None:
    mars = OrganizationMapping.objects.create(organization_id="901", slug="mars-base", region="mars")
    Integration.objects.create(provider="slack", external_id="T0MARS001").organizations.add(mars)
    body = interactive_body(
        block_actions(team_id="T0MARS001") if kind == "async" else block_suggestion(team_id="T0MARS001")
    )
    response = post_slack(client, body)
    assert response.status_code == 200
    if kind == "sync":
        assert json.loads(response.content) == {"options": []}
    payload = Payload.objects.get()
    assert payload.state == "unroutable"
    assert "mars" in payload.last_error and "REGIONS" in payload.last_error


# -- options loads -------------------------------------------------------------------------------


def test_an_options_load_follows_the_organization_hint(client: Client, installations: Any) -> None:
    @slack.options("pick_issue")
    def options(request: Any) -> dict[str, Any]:
        return {"options": [{"text": {"type": "plain_text", "text": f"org {request.organization_id}"}, "value": "1"}]}

    load = block_suggestion(team_id="T0BOTH001")
    load["view"] = {"id": "V1", "type": "modal", "private_metadata": json.dumps({"organization": "initech"})}
    response = post_slack(client, interactive_body(load))
    assert json.loads(response.content)["options"][0]["text"]["text"] == "org 202"
    assert Payload.objects.get().region == "eu"


def test_an_options_load_with_no_handler_gets_the_empty_options_list(client: Client, installations: Any) -> None:
    """No region, no handler or no time left: Slack gets the same valid, empty answer."""
    response = post_slack(client, interactive_body(block_suggestion(action_id="nobody_handles_this")))
    assert response.status_code == 200
    assert json.loads(response.content) == {"options": []}


# -- ids a database cannot store ---------------------------------------------------------------


UNSTORABLE = {"surrogate": "\ud800", "nul": "\x00"}


@pytest.mark.parametrize("bad", UNSTORABLE.values(), ids=UNSTORABLE.keys())
@pytest.mark.parametrize(
    "make",
    [
        lambda bad: interactive_body(block_actions(team_id=bad)),
        lambda bad: interactive_body(block_actions(action_id=bad)),
        lambda bad: interactive_body({**block_actions(), "user": {"id": bad}}),
        lambda bad: interactive_body({**block_actions(), "channel": {"id": bad}}),
        lambda bad: interactive_body({**block_actions(), "api_app_id": bad}),
        lambda bad: interactive_body({**block_actions(), "enterprise": {"id": bad}}),
        lambda bad: interactive_body({"type": "shortcut", "callback_id": bad, "team": {"id": "T0US00001"}}),
        lambda bad: interactive_body({"type": bad, "team": {"id": "T0US00001"}}),
        lambda bad: json.dumps({**event_callback(), "event_id": bad}).encode(),
        lambda bad: json.dumps({**event_callback(), "team_id": bad}).encode(),
        lambda bad: json.dumps({**event_callback(), "event": {"type": bad}}).encode(),
    ],
    ids=[
        "team_id",
        "action_id",
        "user_id",
        "channel_id",
        "app_id",
        "enterprise_id",
        "callback_id",
        "type",
        "event_id",
        "event_team_id",
        "event_type",
    ],
)
def test_an_id_a_database_cannot_store_is_a_400(client: Client, installations: Any, make: Any, bad: str) -> None:
    body = make(bad)
    content_type = "application/json" if body.startswith(b"{") else "application/x-www-form-urlencoded"
    response = post_slack(client, body, content_type=content_type)
    assert response.status_code == 400
    assert reason(response) == "invalid_field"
    assert not Payload.objects.exists()


@pytest.mark.parametrize("field", ["command", "team_id", "user_id", "channel_id"])
def test_a_nul_in_a_slash_command_id_is_a_400(client: Client, installations: Any, field: str) -> None:
    fields = {"command": "/ticket", "team_id": "T0US00001", "user_id": "U1", "channel_id": "C1", field: "X\x00Y"}
    response = post_slack(client, form_body(fields))
    assert (response.status_code, reason(response)) == (400, "invalid_field")
    assert not Payload.objects.exists()


def test_an_arrival_repr_shows_neither_body_nor_headers() -> None:
    from silo_router.control.deadline import Deadline
    from silo_router.control.pipeline import Arrival
    from silo_router.providers.slack.parsing import parse_request

    body = interactive_body({**block_actions(), "response_url": "https://hooks.slack.com/SeCrEtUrL"})
    headers = {"x-slack-signature": "v0=SeCrEtSiGnAtUrE", "content-type": "application/x-www-form-urlencoded"}
    inbound = parse_request(body=body, headers=headers)
    arrival = Arrival(
        provider=None,  # type: ignore[arg-type]
        inbound=inbound,
        body=body,
        headers=headers,
        deadline=Deadline(arrived=0.0, in_transit=0.0, window=3.0, margin=0.4),
    )
    assert "SeCrEt" not in repr(arrival)


class BrokenInput:
    """A ``wsgi.input`` whose client went away after ``sent`` bytes."""

    def __init__(self, sent: bytes) -> None:
        self.sent = sent

    def read(self, size: int = -1) -> bytes:
        if self.sent:
            data, self.sent = self.sent, b""
            return data
        raise ConnectionResetError("the client went away")

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


@pytest.mark.parametrize("sent", [0, 10], ids=["before_the_body", "mid_body"])
def test_a_client_that_goes_away_while_sending_the_body_is_a_400(sent: int) -> None:
    from django.core.handlers.wsgi import WSGIRequest
    from django.test import RequestFactory

    from silo_router.control import pipeline

    body = interactive_body(block_actions())
    environ = RequestFactory().post(SLACK_URL, data=body, content_type="application/x-www-form-urlencoded").environ
    environ.update({"wsgi.input": BrokenInput(body[:sent]), "CONTENT_LENGTH": str(len(body)), **signed_headers(body)})
    response = pipeline.handle(WSGIRequest(environ), "slack")
    assert response.status_code == 400
    assert reason(response) == "incomplete_body"


def test_a_resolver_that_cannot_be_imported_is_a_logged_503(client: Client, settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RESOLVER": "no.such.module.Resolver"}
    response = post_slack(client, interactive_body(block_actions()))
    assert (response.status_code, reason(response)) == (503, "not_configured")


class RefusingAuthorizer:
    """An authorizer that must not be asked: its database is down."""

    def authorize(self, routing: Any) -> Any:
        raise OperationalError("could not connect to server")

    def for_installation(self, installation_id: str) -> Any:
        raise OperationalError("could not connect to server")


def test_kinds_answered_in_control_or_ignored_never_ask_the_authorizer(
    client: Client, installations: Any, settings: Any
) -> None:
    slack_settings = {k: v for k, v in settings.SILO_ROUTER["SLACK"].items() if k != "BOT_TOKEN"}
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "SLACK": {**slack_settings, "AUTHORIZER": f"{__name__}.RefusingAuthorizer"},
        "ROUTES": {"slack.event_callback:message": "ignore"},
    }
    challenge = json.dumps({"type": "url_verification", "token": "x", "challenge": "c-1"}).encode()
    assert json.loads(post_slack(client, challenge, content_type="application/json").content) == {"challenge": "c-1"}
    ignored = json.dumps(event_callback(event_type="message", event_id="EvIgnored")).encode()
    assert post_slack(client, ignored, content_type="application/json").status_code == 200
    forwarded = json.dumps(event_callback(event_id="EvForwarded")).encode()
    response = post_slack(client, forwarded, content_type="application/json")
    assert (response.status_code, reason(response)) == (503, "storage_unavailable")
    assert not Payload.objects.exists()


def test_headers_read_from_the_environ_match_djangos_own() -> None:
    from django.test import RequestFactory

    from silo_router.control.pipeline import lowercase_headers

    request = RequestFactory().post(
        "/slack/events",
        data=b"payload=%7B%7D",
        content_type="application/x-www-form-urlencoded",
        headers={"X-Slack-Signature": "v0=abc", "X-Slack-Request-Timestamp": "1", "X-Slack-Retry-Num": "1"},
    )
    assert lowercase_headers(request.META) == {key.lower(): value for key, value in request.headers.items()}
