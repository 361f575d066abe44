"""Build signed Slack requests for Django's test client (Slack's own signer, slack_sdk)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.parse
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.test import Client
from slack_sdk.signature import SignatureVerifier

from silo_router.transports import local

SLACK_URL = "/extensions/slack/"


def signed_headers(body: bytes, *, timestamp: float | None = None, secret: str | None = None) -> dict[str, str]:
    """Slack's v0 headers; slack_sdk signs text, so raw HMAC for bodies that are not UTF-8."""
    ts = str(int(time.time() if timestamp is None else timestamp))
    key = secret or settings.SLACK_SIGNING_SECRET
    try:
        signature = SignatureVerifier(key).generate_signature(timestamp=ts, body=body.decode())
    except UnicodeDecodeError:
        mac = hmac.new(key.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
        signature = f"v0={mac}"
    return {"HTTP_X_SLACK_REQUEST_TIMESTAMP": ts, "HTTP_X_SLACK_SIGNATURE": signature}


def form_body(fields: dict[str, Any]) -> bytes:
    return urllib.parse.urlencode(fields).encode()


def interactive_body(payload: dict[str, Any]) -> bytes:
    return form_body({"payload": json.dumps(payload)})


def post_slack(
    client: Client,
    body: bytes,
    *,
    content_type: str = "application/x-www-form-urlencoded",
    timestamp: float | None = None,
    extra: dict[str, str] | None = None,
) -> HttpResponse:
    headers = signed_headers(body, timestamp=timestamp)
    headers.update(extra or {})
    response = client.post(SLACK_URL, data=body, content_type=content_type, **headers)
    # In-process deliveries send their replies after the receipt: let them finish.
    assert local.wait_until_idle(timeout=30), "an in-process delivery did not finish"
    return response


def block_actions(
    *,
    team_id: str = "T0US00001",
    action_id: str = "resolve_dialog",
    value: str = "1",
    trigger_id: str = "trig-1",
    **extra: Any,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": team_id, "domain": "acme"},
        "user": {"id": "U0USER001", "team_id": team_id},
        "api_app_id": "A0APP0001",
        "trigger_id": trigger_id,
        "response_url": "https://hooks.slack.com/actions/T/1/x",
        "channel": {"id": "C0CHAN001", "name": "general"},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0CHAN001"},
        "actions": [
            {"type": "button", "action_id": action_id, "block_id": "b1", "value": value, "action_ts": "1700000001.1"}
        ],
    }
    payload.update(extra)
    return payload


def event_callback(
    *, team_id: str = "T0US00001", event_type: str = "app_mention", event_id: str = "Ev0001"
) -> dict[str, Any]:
    return {
        "type": "event_callback",
        "token": "unused",
        "team_id": team_id,
        "api_app_id": "A0APP0001",
        "event": {"type": event_type, "user": "U0USER001", "text": "hi", "ts": "1700000000.1", "channel": "C0CHAN001"},
        "event_id": event_id,
        "event_time": 1700000000,
        "authorizations": [{"enterprise_id": None, "team_id": team_id, "user_id": "U0BOT0001", "is_bot": True}],
    }


def block_suggestion(*, team_id: str = "T0US00001", action_id: str = "pick_issue", value: str = "") -> dict[str, Any]:
    return {
        "type": "block_suggestion",
        "team": {"id": team_id, "domain": "acme"},
        "user": {"id": "U0USER001", "team_id": team_id},
        "api_app_id": "A0APP0001",
        "action_id": action_id,
        "block_id": "b1",
        "value": value,
        "container": {"type": "view", "view_id": "V1"},
    }
