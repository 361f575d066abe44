"""Slack request classification, routing keys, hints, errors and control answers."""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import urlencode

import pytest

from silo_router.exceptions import MalformedRequest
from silo_router.providers.base import InboundRequest, RoutingKeys
from silo_router.providers.slack import SlackProvider
from silo_router.providers.slack.parsing import parse_request, routing_keys
from silo_router.providers.slack.responses import control_answer, fallback_answer

JSON_CT = "application/json"
FORM_CT = "application/x-www-form-urlencoded"
TS = "1700000000"


def headers(content_type: str | None, timestamp: str | None = TS) -> dict[str, str]:
    """Lower-case request headers."""
    result = {}
    if content_type is not None:
        result["content-type"] = content_type
    if timestamp is not None:
        result["x-slack-request-timestamp"] = timestamp
    return result


def parse_json(data: Any, content_type: str | None = JSON_CT) -> InboundRequest:
    """Parse a JSON body."""
    return parse_request(body=json.dumps(data).encode(), headers=headers(content_type))


def parse_form(fields: dict[str, str], content_type: str | None = FORM_CT) -> InboundRequest:
    """Parse an urlencoded form body."""
    return parse_request(body=urlencode(fields).encode(), headers=headers(content_type))


def parse_payload(payload: dict[str, Any], content_type: str | None = FORM_CT) -> InboundRequest:
    """Parse an interactivity request (``payload=<urlencoded JSON>``)."""
    return parse_form({"payload": json.dumps(payload)}, content_type)


def rejected(body: bytes, content_type: str | None = None) -> MalformedRequest:
    """The ``MalformedRequest`` raised for ``body``."""
    with pytest.raises(MalformedRequest) as caught:
        parse_request(body=body, headers=headers(content_type))
    assert caught.value.status == 400
    return caught.value


def event(**extra: Any) -> dict[str, Any]:
    """A minimal event_callback envelope."""
    data: dict[str, Any] = {
        "type": "event_callback",
        "team_id": "T0US00001",
        "api_app_id": "A0APP0001",
        "event_id": "Ev0000001",
        "event_time": 1700000000,
        "event": {"type": "app_mention", "user": "U0US00001", "text": "hi", "channel": "C1"},
    }
    data.update(extra)
    return data


COMMAND = {
    "token": "x",
    "team_id": "T0US00001",
    "team_domain": "acme",
    "channel_id": "C0US00001",
    "user_id": "U0US00001",
    "user_name": "ada",
    "command": "/ticket",
    "text": "open",
    "api_app_id": "A0APP0001",
    "response_url": "https://hooks.slack.com/commands/T0US00001/1/abc",
    "trigger_id": "1.2.3",
}


# -- JSON kinds ------------------------------------------------------------------------


def test_url_verification() -> None:
    inbound = parse_json({"token": "t", "challenge": "c-123", "type": "url_verification"})
    assert (inbound.provider, inbound.type, inbound.name, inbound.kind) == (
        "slack",
        "url_verification",
        "",
        "url_verification",
    )
    assert inbound.payload["challenge"] == "c-123"
    assert inbound.routing == RoutingKeys()


@pytest.mark.parametrize("challenge", [None, 12, ["c"]])
def test_url_verification_needs_a_string_challenge(challenge: Any) -> None:
    data: dict[str, Any] = {"type": "url_verification"}
    if challenge is not None:
        data["challenge"] = challenge
    assert rejected(json.dumps(data).encode(), JSON_CT).reason == "missing_field"


def test_event_callback() -> None:
    inbound = parse_json(event())
    assert (inbound.type, inbound.name, inbound.kind) == ("event_callback", "app_mention", "event_callback:app_mention")
    assert inbound.idempotency_key == "slack:event:Ev0000001"
    assert inbound.routing == RoutingKeys(team_id="T0US00001", app_id="A0APP0001", user_id="U0US00001")
    assert inbound.trigger_id is None and inbound.response_url is None and inbound.organization_hint is None


def test_event_callback_message_subtype_is_named_by_event_type() -> None:
    data = event(event={"type": "message", "subtype": "message_changed", "channel": "C1", "hidden": True})
    assert parse_json(data).name == "message"


def test_event_callback_user_object_in_event() -> None:
    data = event(event={"type": "user_change", "user": {"id": "U0EU00009", "team_id": "T0EU00001"}})
    assert parse_json(data).routing.user_id == "U0EU00009"


@pytest.mark.parametrize(
    "change",
    [
        {"event": None},
        {"event": "app_mention"},
        {"event": {"user": "U1"}},
        {"event": {"type": ""}},
        {"event": {"type": 5}},
    ],
)
def test_event_callback_required_fields(change: dict[str, Any]) -> None:
    data = event(**change)
    data = {k: v for k, v in data.items() if v is not None}
    assert rejected(json.dumps(data).encode(), JSON_CT).reason == "missing_field"


@pytest.mark.parametrize("event_id", [None, "", 17])
def test_event_without_a_usable_event_id_falls_back_to_the_body_hash(event_id: Any) -> None:
    data = {k: v for k, v in event(event_id=event_id).items() if v is not None}
    inbound = parse_json(data)
    assert inbound.kind == "event_callback:app_mention"
    assert inbound.idempotency_key.startswith("slack:body:")


def test_app_rate_limited() -> None:
    inbound = parse_json(
        {
            "token": "t",
            "type": "app_rate_limited",
            "team_id": "T0US00001",
            "minute_rate_limited": 1518467820,
            "api_app_id": "A0APP0001",
        }
    )
    assert (inbound.type, inbound.name) == ("app_rate_limited", "")
    assert inbound.routing.team_id == "T0US00001"
    assert inbound.routing.app_id == "A0APP0001"


@pytest.mark.parametrize("request_type", ["block_action", "event", "EVENT_CALLBACK", "url_verification ", "x" * 255])
def test_unknown_json_type_is_classified_under_its_own_name(request_type: str) -> None:
    """Slack adds request types; a signed one is kept and routed, not refused."""
    inbound = parse_json({"type": request_type, "team_id": "T0US00001"})
    assert (inbound.type, inbound.name, inbound.kind) == (request_type, "", request_type)
    assert inbound.routing.team_id == "T0US00001"
    assert inbound.idempotency_key.startswith("slack:body:")


def test_empty_json_type_is_refused() -> None:
    assert rejected(json.dumps({"type": ""}).encode(), JSON_CT).reason == "unknown_request_type"


@pytest.mark.parametrize("data", [{}, {"challenge": "c"}, {"type": None}, {"type": 3}, {"type": {"a": "b" * 500}}])
def test_missing_or_non_string_json_type(data: dict[str, Any]) -> None:
    error = rejected(json.dumps(data).encode(), JSON_CT)
    assert error.reason == "unknown_request_type"
    assert len(error.detail) < 200


@pytest.mark.parametrize("body", [b"{", b"{'type': 'x'}", b"[1, 2]", b'"type"', b"null", b"{}{}"])
def test_malformed_json(body: bytes) -> None:
    assert rejected(body, JSON_CT).reason == "malformed_json"


def test_not_utf8() -> None:
    assert rejected(b'{"type":"url_verification","challenge":"\xff"}', JSON_CT).reason == "not_utf8"
    assert rejected(b"command=%2Fx&text=\xe9", FORM_CT).reason == "not_utf8"


# -- encoding detection ---------------------------------------------------------------


def test_json_content_type_with_parameters() -> None:
    assert parse_json(event(), "Application/JSON; charset=utf-8").type == "event_callback"


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/octet-stream"])
def test_unknown_content_type_is_sniffed(content_type: str | None) -> None:
    assert parse_json(event(), content_type).type == "event_callback"
    assert parse_form(COMMAND, content_type).type == "command"
    body = b"  \n" + json.dumps(event()).encode()
    assert parse_request(body=body, headers=headers(content_type)).type == "event_callback"


def test_a_json_object_declared_as_a_form_is_read_as_json_as_bolt_does() -> None:
    assert parse_request(body=json.dumps(event()).encode(), headers=headers(FORM_CT)).type == "event_callback"


def test_declared_json_is_not_parsed_as_form() -> None:
    assert rejected(urlencode(COMMAND).encode(), JSON_CT).reason == "malformed_json"


# -- form kinds -----------------------------------------------------------------------


def test_slash_command() -> None:
    inbound = parse_form(COMMAND)
    assert (inbound.type, inbound.name, inbound.kind) == ("command", "/ticket", "command:/ticket")
    assert inbound.payload == COMMAND
    assert inbound.routing == RoutingKeys(team_id="T0US00001", app_id="A0APP0001", user_id="U0US00001")
    assert inbound.trigger_id == "1.2.3"
    assert inbound.response_url == "https://hooks.slack.com/commands/T0US00001/1/abc"
    assert inbound.organization_hint is None


@pytest.mark.parametrize(
    "text", ["payload", "show the payload please", 'payload={"type":"block_actions"}', "&payload=1"]
)
def test_slash_command_whose_text_says_payload_is_a_command(text: str) -> None:
    body = urlencode({**COMMAND, "text": text}).encode()
    assert b"payload" in body
    inbound = parse_request(body=body, headers=headers(FORM_CT))
    assert inbound.type == "command"
    assert inbound.payload["text"] == text


def test_slash_command_with_empty_text_and_enterprise() -> None:
    inbound = parse_form({**COMMAND, "text": "", "enterprise_id": "E0ENT0001", "enterprise_name": "Acme"})
    assert inbound.payload["text"] == ""
    assert inbound.routing.enterprise_id == "E0ENT0001"


def test_slash_command_blank_enterprise_is_absent() -> None:
    assert parse_form({**COMMAND, "enterprise_id": ""}).routing.enterprise_id is None


def test_repeated_form_keys_take_the_first() -> None:
    body = b"command=%2Ffirst&command=%2Fsecond&team_id=T1&text=a&text=b"
    inbound = parse_request(body=body, headers=headers(FORM_CT))
    assert inbound.name == "/first"
    assert inbound.payload == {"command": "/first", "team_id": "T1", "text": "a"}


def test_ssl_check() -> None:
    inbound = parse_form({"ssl_check": "1", "token": "t"})
    assert (inbound.type, inbound.name) == ("ssl_check", "")
    assert inbound.payload == {"ssl_check": "1", "token": "t"}


@pytest.mark.parametrize("fields", [{"ssl_check": "0"}, {"ssl_check": ""}, {"token": "t"}, {"text": "payload"}, {}])
def test_form_without_a_known_key(fields: dict[str, str]) -> None:
    error = rejected(urlencode(fields).encode(), FORM_CT)
    assert error.reason == "unknown_request_type"


@pytest.mark.parametrize("body", [b"command", b"command=%2Fx&&text=y", b"command=%2Fx&text=%FF", b"a=1&"])
def test_malformed_form(body: bytes) -> None:
    assert rejected(body, FORM_CT).reason == "malformed_form"


def test_form_with_too_many_fields() -> None:
    body = "&".join(f"f{i}=1" for i in range(5000)).encode()
    assert rejected(body, FORM_CT).reason == "malformed_form"


@pytest.mark.parametrize("payload", ["{", "not json", "[]", '"block_actions"', "null"])
def test_malformed_payload(payload: str) -> None:
    assert rejected(urlencode({"payload": payload}).encode(), FORM_CT).reason == "malformed_payload"


@pytest.mark.parametrize("payload_type", ["block_action", "command", "brand_new_surface"])
def test_unknown_payload_type_is_classified_under_its_own_name(payload_type: str) -> None:
    inbound = parse_payload({"type": payload_type, "callback_id": "x", "team": {"id": "T0US00001"}})
    assert (inbound.type, inbound.name, inbound.routing.team_id) == (payload_type, "", "T0US00001")


@pytest.mark.parametrize("payload_type", ["", None, 7])
def test_missing_payload_type(payload_type: Any) -> None:
    payload = {"callback_id": "x"} if payload_type is None else {"type": payload_type, "callback_id": "x"}
    error = rejected(urlencode({"payload": json.dumps(payload)}).encode(), FORM_CT)
    assert error.reason == "unknown_request_type"


def test_payload_wins_over_command_key() -> None:
    fields = {"payload": json.dumps({"type": "shortcut", "callback_id": "cb"}), "command": "/x"}
    assert parse_form(fields).type == "shortcut"


# -- interactivity kinds --------------------------------------------------------------


def block_actions(**extra: Any) -> dict[str, Any]:
    """A block_actions payload from a message button."""
    data: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": "U0US00001", "username": "ada", "team_id": "T0US00001"},
        "api_app_id": "A0APP0001",
        "container": {"type": "message", "message_ts": "1.2", "channel_id": "C1"},
        "trigger_id": "tr-1",
        "team": {"id": "T0US00001", "domain": "acme"},
        "enterprise": None,
        "is_enterprise_install": False,
        "response_url": "https://hooks.slack.com/actions/T0US00001/1/x",
        "actions": [{"action_id": "approve", "block_id": "b1", "type": "button", "value": "v"}],
    }
    data.update(extra)
    return data


def test_block_actions() -> None:
    inbound = parse_payload(block_actions())
    assert (inbound.type, inbound.name, inbound.kind) == ("block_actions", "approve", "block_actions:approve")
    assert inbound.payload["type"] == "block_actions"
    assert inbound.trigger_id == "tr-1"
    assert inbound.response_url == "https://hooks.slack.com/actions/T0US00001/1/x"
    assert inbound.routing == RoutingKeys(team_id="T0US00001", app_id="A0APP0001", user_id="U0US00001")


def test_block_actions_name_is_the_first_action() -> None:
    actions = [{"action_id": "first", "type": "button"}, {"action_id": "second", "type": "button"}]
    assert parse_payload(block_actions(actions=actions)).name == "first"


@pytest.mark.parametrize("actions", [None, [], "approve", [{}], [{"action_id": ""}], [{"action_id": 3}], ["approve"]])
def test_block_actions_needs_an_action_id(actions: Any) -> None:
    payload = block_actions(actions=actions)
    if actions is None:
        del payload["actions"]
    error = rejected(urlencode({"payload": json.dumps(payload)}).encode(), FORM_CT)
    assert error.reason == "missing_field"


def test_block_suggestion() -> None:
    payload = {
        "type": "block_suggestion",
        "user": {"id": "U0US00001", "team_id": "T0US00001"},
        "api_app_id": "A0APP0001",
        "action_id": "assignee_lookup",
        "block_id": "assignee",
        "value": "gra",
        "team": {"id": "T0US00001", "domain": "acme"},
        "view": {"id": "V1", "callback_id": "m", "private_metadata": json.dumps({"organization": "acme"})},
    }
    inbound = parse_payload(payload)
    assert (inbound.type, inbound.name) == ("block_suggestion", "assignee_lookup")
    assert inbound.organization_hint == "acme"  # options loads honour the hint like other kinds


def test_view_submission_with_response_urls() -> None:
    payload = {
        "type": "view_submission",
        "team": {"id": "T0EU00001", "domain": "globex"},
        "user": {"id": "U0EU00001", "team_id": "T0EU00001"},
        "api_app_id": "A0APP0001",
        "trigger_id": "tr-2",
        "view": {"id": "V1", "team_id": "T0EU00001", "callback_id": "ticket_create", "private_metadata": ""},
        "response_urls": [
            {"block_id": "b", "action_id": "a", "channel_id": "C1", "response_url": "https://hooks.slack.com/app/1"},
            {"block_id": "c", "action_id": "d", "channel_id": "C2", "response_url": "https://hooks.slack.com/app/2"},
        ],
    }
    inbound = parse_payload(payload)
    assert (inbound.type, inbound.name) == ("view_submission", "ticket_create")
    assert inbound.response_url == "https://hooks.slack.com/app/1"
    assert inbound.trigger_id == "tr-2"


@pytest.mark.parametrize("response_urls", [[], None, "x", [None, {"response_url": ""}, {}]])
def test_view_submission_without_usable_response_urls(response_urls: Any) -> None:
    payload = {"type": "view_submission", "view": {"callback_id": "cb"}, "response_urls": response_urls}
    assert parse_payload(payload).response_url is None


def test_view_submission_skips_unusable_response_url_entries() -> None:
    payload = {
        "type": "view_submission",
        "view": {"callback_id": "cb"},
        "response_urls": [{}, {"response_url": "https://hooks.slack.com/app/3"}],
    }
    assert parse_payload(payload).response_url == "https://hooks.slack.com/app/3"


@pytest.mark.parametrize("payload_type", ["view_submission", "view_closed"])
@pytest.mark.parametrize("view", [None, {}, {"callback_id": None}, {"callback_id": ""}, "V1"])
def test_view_without_callback_id_has_empty_name(payload_type: str, view: Any) -> None:
    payload: dict[str, Any] = {"type": payload_type}
    if view is not None:
        payload["view"] = view
    inbound = parse_payload(payload)
    assert (inbound.type, inbound.name, inbound.kind) == (payload_type, "", payload_type)


def test_view_closed() -> None:
    payload = {"type": "view_closed", "team": {"id": "T1"}, "view": {"callback_id": "m1"}, "is_cleared": False}
    inbound = parse_payload(payload)
    assert (inbound.type, inbound.name) == ("view_closed", "m1")


@pytest.mark.parametrize(
    "payload_type",
    [
        "shortcut",
        "message_action",
        "interactive_message",
        "dialog_submission",
        "dialog_suggestion",
        "dialog_cancellation",
        "workflow_step_edit",
    ],
)
def test_callback_id_kinds(payload_type: str) -> None:
    payload = {"type": payload_type, "callback_id": "cb_1", "team": {"id": "T0US00001"}, "user": {"id": "U1"}}
    inbound = parse_payload(payload)
    assert (inbound.type, inbound.name, inbound.kind) == (payload_type, "cb_1", f"{payload_type}:cb_1")
    del payload["callback_id"]
    assert parse_payload(payload).name == ""


def test_global_shortcut_has_no_response_url() -> None:
    payload = {
        "type": "shortcut",
        "callback_id": "new_ticket",
        "trigger_id": "tr-3",
        "team": {"id": "T0BOTH001"},
        "user": {"id": "U1", "team_id": "T0BOTH001"},
    }
    inbound = parse_payload(payload)
    assert inbound.response_url is None
    assert inbound.trigger_id == "tr-3"


def test_message_action_response_url() -> None:
    payload = {"type": "message_action", "callback_id": "cb", "response_url": "https://hooks.slack.com/app/T/1/x"}
    assert parse_payload(payload).response_url == "https://hooks.slack.com/app/T/1/x"


def test_interactive_payload_content_type_may_be_missing() -> None:
    assert parse_payload(block_actions(), None).type == "block_actions"


# -- routing precedence ----------------------------------------------------------------


def test_org_wide_install_falls_back_to_user_team_id() -> None:
    payload = block_actions(
        team=None,
        enterprise={"id": "E0ENT0001", "name": "Acme"},
        is_enterprise_install=True,
        user={"id": "W1", "team_id": "T0BOTH001"},
        view={"id": "V1", "team_id": "T0EU00001"},
    )
    keys = parse_payload(payload).routing
    assert keys == RoutingKeys(
        team_id="T0BOTH001", enterprise_id="E0ENT0001", app_id="A0APP0001", user_id="W1", is_enterprise_install=True
    )


def test_org_wide_install_falls_back_to_view_team_id() -> None:
    payload = block_actions(team=None, enterprise={"id": "E0ENT0001"}, user={"id": "W1"}, view={"team_id": "T0EU00001"})
    assert parse_payload(payload).routing.team_id == "T0EU00001"


def test_app_installed_team_id_wins() -> None:
    payload = {
        "type": "view_submission",
        "team": {"id": "T0OTHER01"},
        "user": {"id": "U1", "team_id": "T0OTHER01"},
        "view": {"callback_id": "cb", "team_id": "T0OTHER01", "app_installed_team_id": "T0US00001"},
    }
    assert parse_payload(payload).routing.team_id == "T0US00001"


def test_enterprise_as_string_or_object() -> None:
    assert routing_keys({"enterprise": "E0ENT0001"}).enterprise_id == "E0ENT0001"
    assert routing_keys({"enterprise": {"id": "E0ENT0001", "name": "Acme"}}).enterprise_id == "E0ENT0001"


def test_team_as_string_or_object() -> None:
    assert routing_keys({"team": "T0US00001"}).team_id == "T0US00001"
    assert routing_keys({"team": {"id": "T0US00001"}}).team_id == "T0US00001"


def test_authorizations_fallback() -> None:
    payload = {
        "team_id": "T0OTHER01",
        "enterprise_id": "E0OTHER01",
        "authorizations": [{"team_id": "T0EU00001", "enterprise_id": "E0ENT0001", "is_enterprise_install": False}],
    }
    keys = routing_keys(payload)
    assert (keys.team_id, keys.enterprise_id) == ("T0EU00001", "E0ENT0001")


def test_null_authorizations_fall_through_to_top_level_ids() -> None:
    payload = {
        "team_id": "T0BOTH001",
        "enterprise_id": "E0ENT0001",
        "authorizations": [{"team_id": None, "enterprise_id": None, "is_enterprise_install": True}],
    }
    keys = routing_keys(payload)
    assert (keys.team_id, keys.enterprise_id) == ("T0BOTH001", "E0ENT0001")


@pytest.mark.parametrize("authorizations", [[], None, "x", [None], ["T1"]])
def test_unusable_authorizations_are_ignored(authorizations: Any) -> None:
    keys = routing_keys({"team_id": "T0US00001", "authorizations": authorizations})
    assert keys.team_id == "T0US00001"


def test_enterprise_precedence_order() -> None:
    full: dict[str, Any] = {
        "enterprise": {"id": "E1"},
        "authorizations": [{"enterprise_id": "E2"}],
        "enterprise_id": "E3",
        "team": {"id": "T1", "enterprise_id": "E4"},
    }
    assert routing_keys(full).enterprise_id == "E1"
    assert routing_keys({**full, "enterprise": None}).enterprise_id == "E2"
    assert routing_keys({**full, "enterprise": {"id": ""}, "authorizations": [{}]}).enterprise_id == "E3"
    assert routing_keys({**full, "enterprise": "", "authorizations": [], "enterprise_id": ""}).enterprise_id == "E4"
    assert routing_keys({"team": {"id": "T1"}}).enterprise_id is None


def test_team_precedence_order() -> None:
    full: dict[str, Any] = {
        "view": {"app_installed_team_id": "T1", "team_id": "T6"},
        "team": {"id": "T2"},
        "authorizations": [{"team_id": "T3"}],
        "team_id": "T4",
        "user": {"id": "U1", "team_id": "T5"},
    }
    assert routing_keys(full).team_id == "T1"
    step: dict[str, Any] = {**full, "view": {"app_installed_team_id": None, "team_id": "T6"}}
    assert routing_keys(step).team_id == "T2"
    step = {**step, "team": None}
    assert routing_keys(step).team_id == "T3"
    step = {**step, "authorizations": [{"team_id": None}]}
    assert routing_keys(step).team_id == "T4"
    step = {**step, "team_id": ""}
    assert routing_keys(step).team_id == "T5"
    step = {**step, "user": {"id": "U1"}}
    assert routing_keys(step).team_id == "T6"
    step = {**step, "view": {}}
    assert routing_keys(step).team_id is None


def test_user_id_sources() -> None:
    assert routing_keys({"user": {"id": "U1"}, "user_id": "U2"}).user_id == "U1"
    assert routing_keys({"user": "U3"}).user_id == "U3"
    assert routing_keys({"user_id": "U2", "event": {"user": "U4"}}).user_id == "U2"
    assert routing_keys({"event": {"user": "U4"}}).user_id == "U4"
    assert routing_keys({"event": {"user": {"id": "U5"}}}).user_id == "U5"
    assert routing_keys({"user": None, "event": None}).user_id is None


@pytest.mark.parametrize("junk", [None, "", 0, [], {}, ["T1"], 12.5, True])
def test_odd_values_never_break_routing(junk: Any) -> None:
    payload = {
        "team": junk,
        "enterprise": junk,
        "user": junk,
        "view": junk,
        "event": junk,
        "authorizations": junk,
        "team_id": junk,
        "enterprise_id": junk,
        "api_app_id": junk,
        "user_id": junk,
    }
    assert routing_keys(payload) == RoutingKeys()


# -- organization hints ---------------------------------------------------------------


def with_metadata(private_metadata: Any) -> dict[str, Any]:
    """A view_submission whose view carries ``private_metadata``."""
    return {"type": "view_submission", "view": {"callback_id": "cb", "private_metadata": private_metadata}}


def test_hint_from_private_metadata() -> None:
    assert parse_payload(with_metadata(json.dumps({"organization": "acme-us"}))).organization_hint == "acme-us"


def test_hint_from_first_action_value() -> None:
    actions = [{"action_id": "a", "value": json.dumps({"organization": "globex"})}, {"action_id": "b"}]
    assert parse_payload(block_actions(actions=actions)).organization_hint == "globex"


def test_private_metadata_wins_over_action_value() -> None:
    payload = block_actions(
        view={"private_metadata": json.dumps({"organization": "from-view"})},
        actions=[{"action_id": "a", "value": json.dumps({"organization": "from-action"})}],
    )
    assert parse_payload(payload).organization_hint == "from-view"


def test_unusable_private_metadata_falls_back_to_action_value() -> None:
    payload = block_actions(
        view={"private_metadata": "plain text"},
        actions=[{"action_id": "a", "value": json.dumps({"organization": "from-action"})}],
    )
    assert parse_payload(payload).organization_hint == "from-action"


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        "",
        "acme",
        "{",
        "{not json}",
        json.dumps(["organization", "acme"]),
        json.dumps({"org": "acme"}),
        json.dumps({"organization": 5}),
        json.dumps({"organization": ""}),
        json.dumps({"organization": None}),
        json.dumps({"organization": {"id": "acme"}}),
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        7,
    ],
)
def test_bad_hints_are_ignored(metadata: Any) -> None:
    assert parse_payload(with_metadata(metadata)).organization_hint is None
    actions = [{"action_id": "a", "value": metadata}]
    assert parse_payload(block_actions(actions=actions)).organization_hint is None


def test_commands_never_carry_a_hint() -> None:
    inbound = parse_form({**COMMAND, "text": json.dumps({"organization": "acme"})})
    assert inbound.organization_hint is None


# -- idempotency keys -----------------------------------------------------------------


def test_body_idempotency_key() -> None:
    body = urlencode(COMMAND).encode()
    inbound = parse_request(body=body, headers=headers(FORM_CT, TS))
    expected = hashlib.sha256(TS.encode() + b":" + body).hexdigest()
    assert inbound.idempotency_key == f"slack:body:{expected}"


def test_body_idempotency_key_without_timestamp() -> None:
    body = urlencode(COMMAND).encode()
    inbound = parse_request(body=body, headers=headers(FORM_CT, None))
    assert inbound.idempotency_key == "slack:body:" + hashlib.sha256(b":" + body).hexdigest()


def test_body_idempotency_key_depends_on_timestamp_and_body() -> None:
    body = urlencode(COMMAND).encode()
    first = parse_request(body=body, headers=headers(FORM_CT, TS)).idempotency_key
    assert parse_request(body=body, headers=headers(FORM_CT, TS)).idempotency_key == first
    assert parse_request(body=body, headers=headers(FORM_CT, "1700000001")).idempotency_key != first
    other = urlencode({**COMMAND, "text": "close"}).encode()
    assert parse_request(body=other, headers=headers(FORM_CT, TS)).idempotency_key != first


def test_event_idempotency_key_ignores_retries() -> None:
    """A retried event (new timestamp, same event_id) keeps its key."""
    body = json.dumps(event()).encode()
    first = parse_request(body=body, headers=headers(JSON_CT, TS))
    retry = parse_request(body=body, headers={**headers(JSON_CT, "1700000060"), "x-slack-retry-num": "1"})
    assert first.idempotency_key == retry.idempotency_key == "slack:event:Ev0000001"


def test_url_verification_uses_a_body_key() -> None:
    inbound = parse_json({"type": "url_verification", "challenge": "c"})
    assert inbound.idempotency_key.startswith("slack:body:")


# -- control and fallback answers -----------------------------------------------------


def test_control_answer_url_verification() -> None:
    answer = control_answer(parse_json({"type": "url_verification", "challenge": '3eZbrw1aBm"2'}))
    assert answer is not None
    assert answer.status == 200
    assert answer.content_type == "application/json"
    assert json.loads(answer.body) == {"challenge": '3eZbrw1aBm"2'}


@pytest.mark.parametrize(
    "inbound_factory",
    [
        lambda: parse_form({"ssl_check": "1", "token": "t"}),
        lambda: parse_json({"type": "app_rate_limited", "team_id": "T1", "api_app_id": "A1"}),
    ],
)
def test_control_answer_empty(inbound_factory: Any) -> None:
    answer = control_answer(inbound_factory())
    assert answer is not None
    assert (answer.status, answer.body) == (200, b"")


@pytest.mark.parametrize(
    "inbound_factory",
    [
        lambda: parse_json(event()),
        lambda: parse_form(COMMAND),
        lambda: parse_payload(block_actions()),
        lambda: parse_payload({"type": "block_suggestion", "action_id": "a"}),
        lambda: parse_payload({"type": "view_submission", "view": {"callback_id": "cb"}}),
    ],
)
def test_no_control_answer_for_forwarded_kinds(inbound_factory: Any) -> None:
    assert control_answer(inbound_factory()) is None


@pytest.mark.parametrize(
    "payload",
    [{"type": "block_suggestion", "action_id": "a"}, {"type": "dialog_suggestion", "callback_id": "c"}],
)
def test_fallback_for_option_requests_is_an_empty_option_list(payload: dict[str, Any]) -> None:
    answer = fallback_answer(parse_payload(payload))
    assert answer.status == 200
    assert answer.content_type == "application/json"
    assert json.loads(answer.body) == {"options": []}


@pytest.mark.parametrize(
    "inbound_factory",
    [
        lambda: parse_payload({"type": "view_submission", "view": {"callback_id": "cb"}}),
        lambda: parse_payload(block_actions()),
        lambda: parse_payload({"type": "shortcut", "callback_id": "cb"}),
        lambda: parse_payload({"type": "dialog_submission", "callback_id": "cb"}),
        lambda: parse_form(COMMAND),
        lambda: parse_json(event()),
    ],
)
def test_fallback_is_a_truly_empty_200(inbound_factory: Any) -> None:
    answer = fallback_answer(inbound_factory())
    assert (answer.status, answer.body) == (200, b"")


def test_provider_delegates() -> None:
    provider = SlackProvider(signing_secrets=["s"])
    body = json.dumps({"type": "url_verification", "challenge": "c"}).encode()
    inbound = provider.parse(body=body, headers=headers(JSON_CT))
    assert inbound == parse_request(body=body, headers=headers(JSON_CT))
    assert provider.control_answer(inbound) == control_answer(inbound)
    assert provider.fallback_answer(inbound) == fallback_answer(inbound)
