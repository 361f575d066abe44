"""Keeping capabilities and secrets out of what sentry-sdk sends: ``before_send`` and
``before_send_transaction``."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from .. import redaction

#: Query parameters of the install flow that are credentials: Slack's OAuth code, the
#: state that goes with it, a region's install grant.
INSTALL_FLOW_PARAMS = frozenset({"code", "state", "grant"})


def before_send(event: dict[str, Any], hint: Mapping[str, Any]) -> dict[str, Any]:
    """A ``before_send`` for ``sentry_sdk.init``: redacts capabilities and secrets in the event.

    A signed request's body (a Slack request, an envelope) is dropped, and so is the
    query string of an install-flow request (an OAuth code and state, a grant). Every part is
    scrubbed (frame locals, request data and headers, breadcrumbs,
    extra, contexts, tags, messages, span descriptions and data) with
    :func:`silo_router.redaction.scrub`: by key (``response_url``, ``trigger_id``,
    ``token``, signature headers...) and by value shape (Slack's hooks URLs and the
    ``REDACTED_URL_PREFIXES``, tokens, trigger ids, the configured secrets).
    """
    scrubbed: dict[str, Any] = redaction.scrub(event)
    request = scrubbed.get("request")
    if isinstance(request, dict) and redaction.is_signed_request(request.get("headers")):
        request["data"] = redaction.REDACTED  # a raw Slack body or envelope: never sent whole
    if isinstance(request, dict) and _has_install_flow_params(request.get("query_string")):
        request["query_string"] = redaction.REDACTED
    logentry = event.get("logentry")
    if isinstance(logentry, Mapping) and logentry.get("params"):
        scrubbed["logentry"] = {"message": redaction.scrub_text(_formatted(logentry)), "params": []}
    return scrubbed


def _has_install_flow_params(query: Any) -> bool:
    """Whether a request's query string (text or mapping) carries an OAuth code, state or grant."""
    if isinstance(query, str):
        names = {name for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)}
    elif isinstance(query, Mapping):
        names = {str(name) for name in query}
    else:
        return False
    return not INSTALL_FLOW_PARAMS.isdisjoint(names)


def _formatted(logentry: Mapping[str, Any]) -> str:
    """A log entry's message with its params merged (params alone are not recognisable)."""
    message, params = str(logentry.get("message") or ""), logentry.get("params")
    try:
        return message % (tuple(params) if isinstance(params, list | tuple) else params)
    except (TypeError, ValueError, KeyError):
        return f"{message} {params!r}"


def before_send_transaction(event: dict[str, Any], hint: Mapping[str, Any]) -> dict[str, Any]:
    """A ``before_send_transaction`` for ``sentry_sdk.init``: the same scrubbing as :func:`before_send`.

    It covers the ``http.client`` spans that sentry-sdk records for outgoing requests,
    whose description and data hold the URL (a ``response_url``, say).
    """
    return before_send(event, hint)
