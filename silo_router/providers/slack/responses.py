"""The answers the control silo gives Slack itself, without any region."""

from __future__ import annotations

import json
from typing import Any

from silo_router.providers.base import InboundRequest, ProviderResponse

JSON_CONTENT_TYPE = "application/json"

#: Kinds whose synchronous answer must list options (an empty list is valid).
_OPTIONS_TYPES = frozenset({"block_suggestion", "dialog_suggestion"})


def _json_response(data: Any) -> ProviderResponse:
    """A 200 answer with a compact JSON body."""
    body = json.dumps(data, separators=(",", ":")).encode("utf-8")
    return ProviderResponse(status=200, body=body, content_type=JSON_CONTENT_TYPE)


def control_answer(inbound: InboundRequest) -> ProviderResponse | None:
    """Answer URL verification, SSL checks and rate-limit notices; ``None`` for the rest."""
    if inbound.type == "url_verification":
        return _json_response({"challenge": inbound.payload["challenge"]})
    if inbound.type in ("ssl_check", "app_rate_limited"):
        return ProviderResponse(status=200, body=b"")
    return None


def fallback_answer(inbound: InboundRequest) -> ProviderResponse:
    """The answer when no region answered in time.

    Option requests get an empty option list; everything else an empty 200, which
    for ``view_submission`` closes the modal (the body must be truly empty).
    """
    if inbound.type in _OPTIONS_TYPES:
        return _json_response({"options": []})
    return ProviderResponse(status=200, body=b"")
