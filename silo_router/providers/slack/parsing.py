"""Classify a verified Slack request into an ``InboundRequest``.

Slack posts every kind of request to the same few URLs, as JSON (Events API) or as
an urlencoded form (slash commands, ``ssl_check``, and interactivity, whose JSON sits
in the ``payload`` form field). Classification looks at exact field names only, never
at substrings of the body: a slash command whose text says "payload" is a command.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs

from silo_router.exceptions import MalformedRequest
from silo_router.providers.base import InboundRequest, RoutingKeys

PROVIDER = "slack"

#: More form fields than any Slack request carries; a guard against abuse.
MAX_FORM_FIELDS = 1000

_TYPE_DETAIL_LIMIT = 64

JsonObject = Mapping[str, Any]


def parse_request(*, body: bytes, headers: Mapping[str, str]) -> InboundRequest:
    """Parse, classify and extract routing keys from a Slack request body.

    ``headers`` has lower-case keys. Raises ``MalformedRequest`` (with a specific
    ``reason``) for anything that is not a well-formed Slack request of a known kind.
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
    """Decide the body encoding from the content type, sniffing only when it is unknown."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        return True
    if media_type == "application/x-www-form-urlencoded":
        return False
    return body.lstrip().startswith(b"{")


def _load_json_object(text: str, *, reason: str, what: str) -> dict[str, Any]:
    """Decode ``text`` as a JSON object or raise ``MalformedRequest`` with ``reason``."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise MalformedRequest(f"The {what} is not valid JSON.", reason=reason) from None
    if not isinstance(value, dict):
        raise MalformedRequest(f"The {what} is not a JSON object.", reason=reason)
    return value


# -- JSON bodies (Events API) ------------------------------------------------------


def _parse_json_body(text: str, *, body: bytes, headers: Mapping[str, str]) -> InboundRequest:
    """Classify an Events API JSON body."""
    data = _load_json_object(text, reason="malformed_json", what="request body")
    request_type = data.get("type")
    if request_type == "url_verification":
        if not isinstance(data.get("challenge"), str):
            raise _missing("challenge", request_type)
        return _build(data, request_type="url_verification", name="", encoding="json", body=body, headers=headers)
    if request_type == "event_callback":
        event = data.get("event")
        if not isinstance(event, dict) or not _str(event.get("type")):
            raise _missing("event.type", request_type)
        event_id = _str(data.get("event_id"))
        if event_id is None:
            raise _missing("event_id", request_type)
        return _build(
            data,
            request_type="event_callback",
            name=event["type"],
            encoding="json",
            body=body,
            headers=headers,
            event_id=event_id,
        )
    if request_type == "app_rate_limited":
        return _build(data, request_type="app_rate_limited", name="", encoding="json", body=body, headers=headers)
    raise _unknown_type(request_type, "JSON body")


# -- form bodies (commands, ssl_check, interactivity) --------------------------------


def _parse_form_body(text: str, *, body: bytes, headers: Mapping[str, str]) -> InboundRequest:
    """Classify an urlencoded form body."""
    try:
        fields = parse_qs(
            text, keep_blank_values=True, strict_parsing=True, errors="strict", max_num_fields=MAX_FORM_FIELDS
        )
    except ValueError:
        raise MalformedRequest("The request body is not a valid urlencoded form.", reason="malformed_form") from None
    form = {key: values[0] for key, values in fields.items()}
    if "payload" in form:
        payload = _load_json_object(form["payload"], reason="malformed_payload", what="payload form field")
        return _parse_interactive(payload, body=body, headers=headers)
    if "command" in form:
        return _build(form, request_type="command", name=form["command"], encoding="form", body=body, headers=headers)
    if form.get("ssl_check") == "1":
        return _build(form, request_type="ssl_check", name="", encoding="form", body=body, headers=headers)
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

#: Kinds whose organization hint is never read (their answer cannot wait for one).
_NO_HINT_TYPES = frozenset({"block_suggestion", "command", "ssl_check"})


def _parse_interactive(payload: dict[str, Any], *, body: bytes, headers: Mapping[str, str]) -> InboundRequest:
    """Classify the JSON object carried in an interactivity ``payload`` field."""
    request_type = payload.get("type")
    if not isinstance(request_type, str) or request_type not in _INTERACTIVE_NAMERS:
        raise _unknown_type(request_type, "interactivity payload")
    name = _INTERACTIVE_NAMERS[request_type](payload)
    return _build(payload, request_type=request_type, name=name, encoding="form", body=body, headers=headers)


# -- assembling the result -----------------------------------------------------------


def _build(
    payload: dict[str, Any],
    *,
    request_type: str,
    name: str,
    encoding: str,
    body: bytes,
    headers: Mapping[str, str],
    event_id: str | None = None,
) -> InboundRequest:
    """Assemble an ``InboundRequest`` from a classified payload."""
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
        routing=routing_keys(payload),
        idempotency_key=idempotency_key,
        encoding=encoding,
        trigger_id=_str(payload.get("trigger_id")),
        response_url=_response_url(payload),
        organization_hint=None if request_type in _NO_HINT_TYPES else organization_hint(payload),
        event_id=event_id,
    )


def routing_keys(payload: JsonObject) -> RoutingKeys:
    """Extract the installation keys with the precedence Slack's own SDKs use.

    enterprise: ``enterprise`` (string or ``.id``), ``authorizations[0].enterprise_id``,
    ``enterprise_id``, then ``team.enterprise_id`` (legacy payloads carry only that).
    team: ``view.app_installed_team_id``, ``team`` (string or ``.id``),
    ``authorizations[0].team_id``, ``team_id``, ``user.team_id``, ``view.team_id``
    (``team`` is null in interactivity payloads of org-wide installs).
    Null and empty values count as absent.
    """
    view = _obj(payload.get("view"))
    team = payload.get("team")
    user = payload.get("user")
    event = _obj(payload.get("event"))
    authorizations = payload.get("authorizations")
    authorization = _obj(authorizations[0]) if isinstance(authorizations, list) and authorizations else {}
    enterprise_id = _first(
        _id_of(payload.get("enterprise")),
        _str(authorization.get("enterprise_id")),
        _str(payload.get("enterprise_id")),
        _str(_obj(team).get("enterprise_id")),
    )
    team_id = _first(
        _str(view.get("app_installed_team_id")),
        _id_of(team),
        _str(authorization.get("team_id")),
        _str(payload.get("team_id")),
        _str(_obj(user).get("team_id")),
        _str(view.get("team_id")),
    )
    user_id = _first(_id_of(user), _str(payload.get("user_id")), _id_of(event.get("user")))
    return RoutingKeys(
        team_id=team_id, enterprise_id=enterprise_id, app_id=_str(payload.get("api_app_id")), user_id=user_id
    )


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
    if not isinstance(value, str) or not value.lstrip().startswith("{"):
        return None
    try:
        decoded = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return _str(decoded.get("organization")) if isinstance(decoded, dict) else None


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


def _unknown_type(value: Any, where: str) -> MalformedRequest:
    """The error for a missing or unrecognised ``type``, naming the value (truncated)."""
    if value is None:
        detail = f"The {where} has no type field."
    elif isinstance(value, str):
        detail = f"Unknown Slack request type {value[:_TYPE_DETAIL_LIMIT]!r} in the {where}."
    else:
        detail = f"The type field of the {where} is a {type(value).__name__}, not a string."
    return MalformedRequest(detail, reason="unknown_request_type")
