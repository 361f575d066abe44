"""The limits control and region share when they parse a Slack body: depth, storable ids, installations."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from silo_router.exceptions import MalformedRequest
from silo_router.providers.base import InboundRequest
from silo_router.providers.slack.decoding import MAX_JSON_DEPTH
from silo_router.providers.slack.parsing import parse_request

JSON_CT = "application/json"
FORM_CT = "application/x-www-form-urlencoded"
HEADERS = {"x-slack-request-timestamp": "1700000000"}
#: Frames a region already has on the stack when it re-parses (Django, Celery, Sentry, the test runner).
DEEP_STACK_FRAMES = 600


def nested(depth: int) -> Any:
    """A value nesting ``depth`` objects and arrays (the outermost is the event body's ``x``)."""
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


def deep_event(depth: int) -> bytes:
    """An event body whose whole JSON nests exactly ``depth`` levels."""
    body = {
        "type": "event_callback",
        "event_id": "Ev1",
        "team_id": "T0US00001",
        "event": {"type": "app_mention", "x": nested(depth - 2)},
    }
    return json.dumps(body).encode()


def deep_payload(depth: int) -> bytes:
    payload = {"type": "block_actions", "actions": [{"action_id": "a"}], "team": {"id": "T1"}, "x": nested(depth - 1)}
    return urlencode({"payload": json.dumps(payload)}).encode()


def parse(body: bytes, content_type: str) -> InboundRequest:
    return parse_request(body=body, headers={**HEADERS, "content-type": content_type})


def reason(body: bytes, content_type: str) -> str:
    with pytest.raises(MalformedRequest) as caught:
        parse(body, content_type)
    assert caught.value.status == 400
    return caught.value.reason


def at_stack_depth(frames: int, work: Callable[[], Any]) -> Any:
    """Run ``work`` with ``frames`` more Python frames on the stack."""
    if frames == 0:
        return work()
    return at_stack_depth(frames - 1, work)


@pytest.mark.parametrize(("make", "content_type"), [(deep_event, JSON_CT), (deep_payload, FORM_CT)])
def test_json_nested_past_the_limit_is_too_deep(make: Callable[[int], bytes], content_type: str) -> None:
    assert reason(make(MAX_JSON_DEPTH + 1), content_type) == "too_deep"


@pytest.mark.parametrize(("make", "content_type"), [(deep_event, JSON_CT), (deep_payload, FORM_CT)])
def test_json_nested_at_the_limit_parses_in_a_deep_call_stack(make: Callable[[int], bytes], content_type: str) -> None:
    body = make(MAX_JSON_DEPTH)
    inbound = at_stack_depth(DEEP_STACK_FRAMES, lambda: parse(body, content_type))
    assert inbound.type in ("event_callback", "block_actions")


def test_the_depth_limit_leaves_room_below_the_recursion_limit() -> None:
    import sys

    assert MAX_JSON_DEPTH + DEEP_STACK_FRAMES < sys.getrecursionlimit() - 100


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"type":' + b"[" * 5000 + b"]" * 5000 + b"}"])
def test_pathologically_deep_json_is_too_deep(body: bytes) -> None:
    assert reason(body, JSON_CT) == "too_deep"


BAD_CHARACTERS = {"surrogate": "\ud800", "nul": "\x00", "too long": "x" * 300}


def event_with(path: str, bad: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "event_callback",
        "event_id": "Ev1",
        "team_id": "T0US00001",
        "api_app_id": "A0APP0001",
        "event": {"type": "app_mention", "user": "U1", "channel": "C1"},
    }
    target: dict[str, Any] = body
    *parents, leaf = path.split(".")
    for key in parents:
        target = target[key]
    target[leaf] = bad
    return body


@pytest.mark.parametrize("bad", BAD_CHARACTERS.values(), ids=BAD_CHARACTERS.keys())
@pytest.mark.parametrize(
    "path",
    ["team_id", "api_app_id", "event_id", "event.type", "event.user", "event.channel", "enterprise_id", "type"],
)
def test_unstorable_id_in_an_event_is_invalid_field(path: str, bad: str) -> None:
    body = json.dumps(event_with(path, bad)).encode()  # \ud800 and \x00 travel as JSON escapes
    assert reason(body, JSON_CT) == "invalid_field"


INTERACTIVE = {
    "action_id": lambda bad: {"type": "block_actions", "team": {"id": "T1"}, "actions": [{"action_id": bad}]},
    "callback_id": lambda bad: {"type": "shortcut", "team": {"id": "T1"}, "callback_id": bad},
    "view.callback_id": lambda bad: {"type": "view_submission", "team": {"id": "T1"}, "view": {"callback_id": bad}},
    "team.id": lambda bad: {"type": "shortcut", "team": {"id": bad}, "callback_id": "c"},
    "enterprise.id": lambda bad: {"type": "shortcut", "enterprise": {"id": bad}, "callback_id": "c"},
    "user.id": lambda bad: {"type": "shortcut", "team": {"id": "T1"}, "user": {"id": bad}, "callback_id": "c"},
    "channel.id": lambda bad: {"type": "shortcut", "team": {"id": "T1"}, "channel": {"id": bad}, "callback_id": "c"},
    "type": lambda bad: {"type": bad, "team": {"id": "T1"}},
}


@pytest.mark.parametrize("bad", BAD_CHARACTERS.values(), ids=BAD_CHARACTERS.keys())
@pytest.mark.parametrize("field", INTERACTIVE)
def test_unstorable_id_in_an_interactivity_payload_is_invalid_field(field: str, bad: str) -> None:
    body = urlencode({"payload": json.dumps(INTERACTIVE[field](bad))}).encode()
    assert reason(body, FORM_CT) == "invalid_field"


@pytest.mark.parametrize("field", ["command", "team_id", "user_id", "channel_id", "enterprise_id", "api_app_id"])
def test_nul_in_a_command_field_is_invalid_field(field: str) -> None:
    fields = {"command": "/ticket", "team_id": "T1", "user_id": "U1", "channel_id": "C1", field: "x\x00y"}
    body = "&".join(f"{k}={quote(v)}" for k, v in fields.items()).encode()
    assert reason(body, FORM_CT) == "invalid_field"


def test_message_text_may_hold_any_character() -> None:
    """Only ids are restricted: free text (stored inside the body, as JSON escapes) is not."""
    body = event_with("event.type", "app_mention")
    body["event"]["text"] = "nul \x00 and \ud800 surrogate"
    assert parse(json.dumps(body).encode(), JSON_CT).kind == "event_callback:app_mention"


# -- which installation: authorizations[0], as Bolt reads it ------------------------------


def test_authorizations_decide_the_installation_of_a_shared_channel_event() -> None:
    """An event from another org's workspace, delivered for our workspace install."""
    body = {
        "type": "event_callback",
        "event_id": "Ev1",
        "team_id": "T0THEIRS1",
        "enterprise_id": "E0THEIRS1",
        "is_enterprise_install": True,
        "event": {"type": "message", "team": "T0THEIRS1"},
        "authorizations": [{"team_id": "T0US00001", "enterprise_id": None, "is_enterprise_install": False}],
    }
    keys = parse(json.dumps(body).encode(), JSON_CT).routing
    assert (keys.team_id, keys.enterprise_id, keys.is_enterprise_install) == ("T0US00001", None, False)


def test_org_wide_authorization_marks_an_enterprise_install() -> None:
    body = {
        "type": "event_callback",
        "event_id": "Ev1",
        "team_id": "T0BOTH001",
        "enterprise_id": "E0ENT0001",
        "is_enterprise_install": False,
        "event": {"type": "app_mention"},
        "authorizations": [{"team_id": None, "enterprise_id": "E0ENT0001", "is_enterprise_install": True}],
    }
    keys = parse(json.dumps(body).encode(), JSON_CT).routing
    assert (keys.enterprise_id, keys.is_enterprise_install) == ("E0ENT0001", True)


def test_command_of_an_org_wide_install_says_so_as_a_form_value() -> None:
    body = b"command=%2Fx&team_id=T1&enterprise_id=E1&is_enterprise_install=true"
    assert parse(body, FORM_CT).routing.is_enterprise_install is True


def test_capabilities_and_the_payload_stay_out_of_the_repr() -> None:
    """Frame locals and log lines show reprs: no trigger_id, response_url or raw payload in them."""
    payload = {
        "type": "block_actions",
        "team": {"id": "T1"},
        "trigger_id": "1.2.SeCrEtTrIgGeR",
        "response_url": "https://hooks.slack.com/actions/T1/1/SeCrEtUrL",
        "token": "SeCrEtToKeN",
        "actions": [{"action_id": "a"}],
    }
    inbound = parse(urlencode({"payload": json.dumps(payload)}).encode(), FORM_CT)
    assert inbound.trigger_id and inbound.response_url
    assert "SeCrEt" not in repr(inbound)
