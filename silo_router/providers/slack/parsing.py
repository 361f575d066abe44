"""Classify a verified Slack request into an ``InboundRequest``.

Slack posts every kind of request to the same few URLs, as JSON (Events API) or as
an urlencoded form (slash commands, ``ssl_check``, and interactivity, whose JSON sits
in the ``payload`` form field). Classification looks at exact field names only, never
at substrings of the body: a slash command whose text says "payload" is a command.

Control and region parse with this one module, so they accept the same bodies: the
same JSON depth limit and the same rules for the fields that are stored or queried.
A type this module does not know (Slack adds new ones) is classified under its own
name, not refused: whether it is forwarded is the routing table's decision.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from silo_router.exceptions import MalformedRequest
from silo_router.providers.base import InboundRequest, RoutingKeys
from silo_router.providers.slack.decoding import decode_form, load_json_object

PROVIDER = "slack"

#: Longest id accepted (Slack documents 255 characters for action and callback ids).
MAX_ID_LENGTH = 255

#: Lone surrogates (not encodable as UTF-8, so no database stores them, yet JSON's
#: ``\u`` escapes can put them in a string) and NUL (PostgreSQL refuses it).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")

JsonObject = Mapping[str, Any]

#: The ``metadata.event_type`` of a notification's message.
NOTIFICATION_EVENT_TYPE = "silo_router_notification"
#: The key of the notification id in ``metadata.event_payload`` and in a modal's
#: ``private_metadata`` (a JSON object text).
NOTIFICATION_KEY = "notification_id"
#: What separates a block's own id from the notification id appended to it.
NOTIFICATION_BLOCK_MARK = "~notification:"
#: A notification id: 32 lower-case hex digits (a UUID4's), not all zero.
_NOTIFICATION_ID = re.compile(r"[0-9a-f]{32}")
#: Request types that can answer a notification: a click on it, or a modal opened from it.
_NOTIFICATION_TYPES = frozenset({"block_actions", "view_submission", "view_closed"})


def parse_request(*, body: bytes, headers: Mapping[str, str]) -> InboundRequest:
    """Parse, classify and extract routing keys from a Slack request body.

    ``headers`` has lower-case keys. Raises ``MalformedRequest`` (with a specific
    ``reason``) for anything that is not a well-formed Slack request: ``too_deep``
    for JSON nested past ``MAX_JSON_DEPTH``, ``invalid_field`` for an id a database
    cannot store.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedRequest("The request body is not valid UTF-8.", reason="not_utf8") from None
    if _is_json(headers.get("content-type"), body):
        return _parse_json_body(text, body=body, headers=headers)
    return _parse_form_body(text, body=body, headers=headers)


# -- encoding --------------------------------------------------------------------


def _is_json(content_type: str | None, body: bytes) -> bool:
    """JSON when the content type says so or the body is a JSON object, as Bolt decides.

    A form body never starts with ``{`` (Slack's fields are ``payload=``, ``command=``...).
    """
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or body.lstrip().startswith(b"{")


# -- JSON bodies (Events API) ------------------------------------------------------


def _parse_json_body(text: str, *, body: bytes, headers: Mapping[str, str]) -> InboundRequest:
    """Classify a JSON body (the Events API)."""
    data = load_json_object(text, reason="malformed_json", what="request body")
    return _classify(data, where="JSON body", body=body, headers=headers)


def _classify(data: dict[str, Any], *, where: str, body: bytes, headers: Mapping[str, str]) -> InboundRequest:
    """Classify a decoded JSON object by its ``type``, whichever encoding carried it (as Bolt does)."""
    request_type = _request_type(data.get("type"), where)
    if request_type == "url_verification":
        if not isinstance(data.get("challenge"), str):
            raise _missing("challenge", request_type)
        return _build(data, request_type="url_verification", name="", body=body, headers=headers)
    if request_type == "event_callback":
        event = data.get("event")
        if not isinstance(event, dict) or not _str(event.get("type")):
            raise _missing("event.type", request_type)
        # Slack always sends event_id; without one, the body hash is the idempotency key.
        return _build(
            data,
            request_type="event_callback",
            name=event["type"],
            body=body,
            headers=headers,
            event_id=_str(data.get("event_id")),
        )
    namer = _INTERACTIVE_NAMERS.get(request_type)
    name = namer(data) if namer is not None else ""
    return _build(data, request_type=request_type, name=name, body=body, headers=headers)


# -- form bodies (commands, ssl_check, interactivity) --------------------------------


def _parse_form_body(text: str, *, body: bytes, headers: Mapping[str, str]) -> InboundRequest:
    """Classify an urlencoded form body."""
    form = decode_form(text)
    if "payload" in form:
        payload = load_json_object(form["payload"], reason="malformed_payload", what="payload form field")
        return _classify(payload, where="interactivity payload", body=body, headers=headers)
    # ssl_check first, as Bolt answers it: a command body with ssl_check=1 is answered, not run.
    if form.get("ssl_check") == "1":
        return _build(form, request_type="ssl_check", name="", body=body, headers=headers)
    if "command" in form:
        return _build(form, request_type="command", name=form["command"], body=body, headers=headers)
    raise MalformedRequest("The form body has neither payload, command nor ssl_check.", reason="unknown_request_type")


def _block_actions_name(payload: JsonObject) -> str:
    """The first action's ``action_id``; a block_actions payload must have one."""
    actions = payload.get("actions")
    first = actions[0] if isinstance(actions, list) and actions else None
    action_id = _str(first.get("action_id")) if isinstance(first, dict) else None
    if action_id is None:
        raise _missing("actions[0].action_id", "block_actions")
    return action_id


def _callback_id(payload: JsonObject) -> str:
    """The top-level ``callback_id`` (shortcuts, legacy messages and dialogs)."""
    return _str(payload.get("callback_id")) or ""


def _view_callback_id(payload: JsonObject) -> str:
    """The modal's ``view.callback_id``."""
    view = payload.get("view")
    return (_str(view.get("callback_id")) if isinstance(view, dict) else None) or ""


def _action_id(payload: JsonObject) -> str:
    """The top-level ``action_id`` (block_suggestion)."""
    return _str(payload.get("action_id")) or ""


#: Interactivity payload type -> how its handler name is found.
_INTERACTIVE_NAMERS: dict[str, Callable[[JsonObject], str]] = {
    "block_actions": _block_actions_name,
    "block_suggestion": _action_id,
    "view_submission": _view_callback_id,
    "view_closed": _view_callback_id,
    "shortcut": _callback_id,
    "message_action": _callback_id,
    "interactive_message": _callback_id,
    "dialog_submission": _callback_id,
    "dialog_suggestion": _callback_id,
    "dialog_cancellation": _callback_id,
    "workflow_step_edit": _callback_id,
}

#: Kinds that carry no organization hint (no ``view`` and no ``actions``).
_NO_HINT_TYPES = frozenset({"command", "ssl_check"})


# -- assembling the result -----------------------------------------------------------


def _build(
    payload: dict[str, Any],
    *,
    request_type: str,
    name: str,
    body: bytes,
    headers: Mapping[str, str],
    event_id: str | None = None,
) -> InboundRequest:
    """Assemble an ``InboundRequest`` from a classified payload, refusing ids a database cannot store."""
    routing = routing_keys(payload)
    hint = None if request_type in _NO_HINT_TYPES else organization_hint(payload)
    _check_storable(
        [
            ("type", request_type),
            ("name", name),
            ("event_id", event_id),
            ("team_id", routing.team_id),
            ("enterprise_id", routing.enterprise_id),
            ("api_app_id", routing.app_id),
            ("user_id", routing.user_id),
            ("channel_id", _channel_id(payload)),
            ("organization hint", hint),
            *_raw_ids(payload),
        ]
    )
    if event_id is not None:
        idempotency_key = f"slack:event:{event_id}"
    else:
        timestamp = headers.get("x-slack-request-timestamp") or ""
        digest = hashlib.sha256(timestamp.encode("utf-8", "backslashreplace") + b":" + body).hexdigest()
        idempotency_key = f"slack:body:{digest}"
    return InboundRequest(
        provider=PROVIDER,
        type=request_type,
        name=name,
        payload=payload,
        routing=routing,
        idempotency_key=idempotency_key,
        trigger_id=_str(payload.get("trigger_id")),
        response_url=_response_url(payload),
        organization_hint=hint,
        notification_id=notification_id_of(payload) if request_type in _NOTIFICATION_TYPES else None,
    )


def _check_storable(ids: list[tuple[str, str | None]]) -> None:
    """Refuse any id (a ``(field, value)``) with NUL, a lone surrogate, or more than ``MAX_ID_LENGTH`` characters."""
    for field, value in ids:
        if value is None:
            continue
        if len(value) > MAX_ID_LENGTH or ("\x00" in value if value.isascii() else _UNSTORABLE.search(value)):
            raise MalformedRequest(
                f"The {field} is longer than {MAX_ID_LENGTH} characters or holds characters that cannot be stored.",
                reason="invalid_field",
            )


def _raw_ids(payload: JsonObject) -> list[tuple[str, str | None]]:
    """Every id field as sent, including the ones that lose to a higher-precedence one."""
    event, user, view = _obj(payload.get("event")), _obj(payload.get("user")), _obj(payload.get("view"))
    authorizations = payload.get("authorizations")
    authorization = _obj(authorizations[0]) if isinstance(authorizations, list) and authorizations else {}
    return [
        ("team_id", _str(payload.get("team_id"))),
        ("team.id", _id_of(payload.get("team"))),
        ("enterprise_id", _str(payload.get("enterprise_id"))),
        ("enterprise.id", _id_of(payload.get("enterprise"))),
        ("user.team_id", _str(user.get("team_id"))),
        ("event.team", _id_of(event.get("team"))),
        ("event.user", _id_of(event.get("user"))),
        ("view.id", _str(view.get("id"))),
        ("view.team_id", _str(view.get("team_id"))),
        ("authorizations[0].team_id", _str(authorization.get("team_id"))),
        ("authorizations[0].enterprise_id", _str(authorization.get("enterprise_id"))),
    ]


def _channel_id(payload: JsonObject) -> str | None:
    """The channel id as interactivity (``channel.id``), commands and events carry it."""
    event = _obj(payload.get("event"))
    return _first(_id_of(payload.get("channel")), _str(payload.get("channel_id")), _id_of(event.get("channel")))


def routing_keys(payload: JsonObject) -> RoutingKeys:
    """Extract the installation keys with the precedence Bolt for Python uses.

    ``authorizations[0]`` is Slack's answer to "which installation is this for"; in
    shared channels it differs from the ids of the event's own workspace and org, so
    when it names an installation it decides the enterprise and the team.
    enterprise: ``enterprise`` (string or ``.id``), then ``authorizations[0].enterprise_id``
    when ``authorizations[0]`` is present, else ``enterprise_id``, ``team.enterprise_id``,
    ``event.enterprise_id``.
    team: ``view.app_installed_team_id``, ``team`` (string or ``.id``), then
    ``authorizations[0].team_id`` when ``authorizations[0]`` is present (none for an
    org-wide install), else ``team_id``, ``event.team`` (or ``.team_id``),
    ``user.team_id``, ``view.team_id`` (``team`` is null in interactivity payloads of
    org-wide installs). An ``authorizations[0]`` with neither id is ignored. Null and
    empty values count as absent.
    """
    view = _obj(payload.get("view"))
    team = payload.get("team")
    user = payload.get("user")
    event = _obj(payload.get("event"))
    authorization = _authorization(payload)
    if authorization:
        enterprise_fallback: str | None = _str(authorization.get("enterprise_id"))
    else:
        enterprise_fallback = _first(
            _str(payload.get("enterprise_id")), _str(_obj(team).get("enterprise_id")), _str(event.get("enterprise_id"))
        )
    enterprise_id = _first(_id_of(payload.get("enterprise")), enterprise_fallback)
    if authorization:
        team_fallback: str | None = _str(authorization.get("team_id"))
    else:
        team_fallback = _first(
            _str(payload.get("team_id")),
            _id_of(event.get("team")),
            _str(event.get("team_id")),
            _str(_obj(user).get("team_id")),
            _str(view.get("team_id")),
        )
    team_id = _first(_str(view.get("app_installed_team_id")), _id_of(team), team_fallback)
    user_id = _first(_id_of(user), _str(payload.get("user_id")), _id_of(event.get("user")))
    return RoutingKeys(
        team_id=team_id,
        enterprise_id=enterprise_id,
        app_id=_str(payload.get("api_app_id")),
        user_id=user_id,
        is_enterprise_install=_is_enterprise_install(payload, authorization),
    )


def _authorization(payload: JsonObject) -> JsonObject:
    """``authorizations[0]`` when it names an installation (a team or an enterprise id), else ``{}``."""
    authorizations = payload.get("authorizations")
    first = _obj(authorizations[0]) if isinstance(authorizations, list) and authorizations else {}
    return first if _str(first.get("team_id")) or _str(first.get("enterprise_id")) else {}


def _is_enterprise_install(payload: JsonObject, authorization: JsonObject) -> bool:
    """Slack's flag for an org-wide install: ``authorizations[0]`` first, as Bolt reads it.

    In an Events API body the top-level flag describes the event's workspace, while
    ``authorizations[0]`` names the installation the event was delivered for (shared
    channels); commands send the flag as the form value ``"true"``.
    """
    flag = (authorization or payload).get("is_enterprise_install")
    return flag is True or flag == "true"


def organization_hint(payload: JsonObject) -> str | None:
    """The ``organization`` an app stored in ``view.private_metadata`` or ``actions[0].value``.

    Either must be a JSON object text with a string ``organization`` key; anything
    else (absent, not JSON, another shape) gives ``None``, never an error.
    """
    view = _obj(payload.get("view"))
    actions = payload.get("actions")
    first_action = _obj(actions[0]) if isinstance(actions, list) and actions else {}
    return _first(_hint_from(view.get("private_metadata")), _hint_from(first_action.get("value")))


def _hint_from(value: Any) -> str | None:
    """The string ``organization`` key of a JSON object text, else ``None``."""
    return _str(_json_object_text(value).get("organization"))


# -- notifications --------------------------------------------------------------------


def is_notification_id(value: Any) -> bool:
    """Whether ``value`` is a notification id: 32 lower-case hex digits, not all zero."""
    return isinstance(value, str) and _NOTIFICATION_ID.fullmatch(value) is not None and value != "0" * 32


def notification_id_of(payload: JsonObject) -> str | None:
    """The notification a click (or a modal opened from one) answers, or ``None``.

    Read, in this order, from the ``block_id`` of the action (``<block id>~notification:<id>``,
    which every ``block_actions`` payload carries), the message's ``metadata`` (when Slack
    includes it and its ``event_type`` is this library's) and the modal's
    ``private_metadata`` (a JSON object text with a ``notification_id`` key). Anything
    else (absent, malformed, another app's metadata) gives ``None``, never an error.
    """
    actions = payload.get("actions")
    first_action = _obj(actions[0]) if isinstance(actions, list) and actions else {}
    block_id = first_action.get("block_id")
    if isinstance(block_id, str):
        _, mark, carried = block_id.rpartition(NOTIFICATION_BLOCK_MARK)
        if mark and is_notification_id(carried):
            return carried
    metadata = _obj(_obj(payload.get("message")).get("metadata"))
    if metadata.get("event_type") == NOTIFICATION_EVENT_TYPE:
        found = _obj(metadata.get("event_payload")).get(NOTIFICATION_KEY)
        if is_notification_id(found):
            return str(found)
    private = _json_object_text(_obj(payload.get("view")).get("private_metadata"))
    found = private.get(NOTIFICATION_KEY)
    return str(found) if is_notification_id(found) else None


def strip_notification(block_id: str) -> str:
    """A ``block_id`` without the notification id a notification appended to it."""
    head, mark, tail = block_id.rpartition(NOTIFICATION_BLOCK_MARK)
    return head if mark and is_notification_id(tail) else block_id


def _json_object_text(value: Any) -> JsonObject:
    """The JSON object a text holds (``private_metadata``, an action value), else ``{}``."""
    if not isinstance(value, str) or not value.lstrip().startswith("{"):
        return {}
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        return {}
    return decoded if isinstance(decoded, dict) else {}


def _response_url(payload: JsonObject) -> str | None:
    """``response_url``, else the first ``response_urls[].response_url`` (view_submission)."""
    direct = _str(payload.get("response_url"))
    if direct is not None:
        return direct
    entries = payload.get("response_urls")
    if isinstance(entries, list):
        for entry in entries:
            url = _str(entry.get("response_url")) if isinstance(entry, dict) else None
            if url is not None:
                return url
    return None


# -- events the app caused itself -----------------------------------------------------

#: Event types kept even when the app's own bot is their user, as Bolt keeps them: the
#: bot joining or leaving a conversation is news to the app.
SELF_EVENTS_KEPT = frozenset({"member_joined_channel", "member_left_channel"})


def is_self_event(inbound: InboundRequest) -> bool:
    """Whether an ``event_callback`` was caused by the installation's own bot (Bolt's rule).

    The event's user (``routing.user_id``) is the installation's bot user, or its
    ``bot_id`` is the installation's bot id (``bot_message`` events have no user); the
    types in ``SELF_EVENTS_KEPT`` never count. Without an authorization (or one that
    does not know its bot), nothing counts.
    """
    authorization = inbound.authorization
    if inbound.type != "event_callback" or authorization is None or inbound.name in SELF_EVENTS_KEPT:
        return False
    event = _obj(inbound.payload.get("event"))
    user_id = inbound.routing.user_id
    bot_id = _str(event.get("bot_id"))
    return (user_id is not None and user_id == authorization.bot_user_id) or (
        bot_id is not None and bot_id == authorization.bot_id
    )


# -- small value helpers -------------------------------------------------------------


def _str(value: Any) -> str | None:
    """``value`` if it is a non-empty string, else ``None``."""
    return value if isinstance(value, str) and value else None


def _obj(value: Any) -> JsonObject:
    """``value`` if it is a JSON object, else an empty mapping."""
    return value if isinstance(value, dict) else {}


def _id_of(value: Any) -> str | None:
    """An id given either as a bare string or as an object's ``id``."""
    if isinstance(value, dict):
        return _str(value.get("id"))
    return _str(value)


def _first(*candidates: str | None) -> str | None:
    """The first candidate that is not ``None``."""
    for candidate in candidates:
        if candidate is not None:
            return candidate
    return None


def _missing(field: str, request_type: str) -> MalformedRequest:
    """The error for a required field that is absent or of the wrong type."""
    return MalformedRequest(f"A {request_type} request needs the {field} field.", reason="missing_field")


def _request_type(value: Any, where: str) -> str:
    """``value`` if it is a usable request type (known or not), else ``MalformedRequest``."""
    if isinstance(value, str) and value:
        return value
    if value is None:
        detail = f"The {where} has no type field."
    else:
        detail = f"The type field of the {where} is a {type(value).__name__}, not a non-empty string."
    raise MalformedRequest(detail, reason="unknown_request_type")
