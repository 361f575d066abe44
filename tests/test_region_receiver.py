"""The region endpoint: forged, stale and misaddressed envelopes; handlers run once."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.db import connection
from django.test import Client, override_settings

from silo_router import signing
from silo_router.envelope import Envelope, seal
from silo_router.region.handlers import slack
from silo_router.region.models import ProcessedEnvelope

from .slack_signing import block_actions, event_callback, interactive_body

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/silo-router/envelopes/"


def envelope_for(
    body: bytes, *, kind: str, region: str = "us", key: str = "slack:event:EvR", content_type: str = "application/json"
) -> Envelope:
    return Envelope(
        id=Envelope.make_id(key, region),
        idempotency_key=key,
        provider="slack",
        kind=kind,
        region=region,
        body=body.decode(),
        headers={"content-type": content_type},
        strategy="async",
        organization_ids=("101",),
    )


def post(client: Client, body: bytes, signature: str | None) -> Any:
    headers = {"HTTP_X_SILO_ROUTER_SIGNATURE": signature} if signature else {}
    return client.post(URL, data=body, content_type="application/json", **headers)


def test_handler_runs_once_however_often_the_envelope_arrives(client: Client) -> None:
    runs: list[str] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        runs.append(request.payload["event_id"])

    envelope = envelope_for(json.dumps(event_callback(event_id="EvR")).encode(), kind="event_callback:app_mention")
    sealed = seal(envelope)
    first = post(client, sealed.body, sealed.signature)
    assert first.status_code == 200
    assert first.json() == {"outcome": "handled", "response": None}
    again = seal(envelope)
    second = post(client, again.body, again.signature)
    assert second.json()["outcome"] == "duplicate"
    assert runs == ["EvR"]


def test_forged_stale_and_unsigned_envelopes_are_403_with_a_reason(client: Client) -> None:
    envelope = envelope_for(json.dumps(event_callback()).encode(), kind="event_callback:app_mention")
    body = envelope.to_json()
    forged = signing.sign(body, key_id="k1", key="not-the-real-key-at-all-0123456789")
    stale = signing.sign(
        body, key_id="k1", key="tests-control-to-region-key-0123456789abcdef", timestamp=time.time() - 600
    )
    for signature, why in ((forged, "signature_mismatch"), (stale, "stale_signature"), (None, "missing_signature")):
        response = post(client, body, signature)
        assert response.status_code == 403
        assert response.json()["error"] == why
    assert not ProcessedEnvelope.objects.exists()


def test_region_mode_refuses_envelopes_for_another_region(client: Client, settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "MODE": "region", "REGION": "eu"}
    sealed = seal(envelope_for(json.dumps(event_callback()).encode(), kind="event_callback:app_mention", region="us"))
    response = post(client, sealed.body, sealed.signature)
    assert response.status_code == 403
    assert response.json()["error"] == "wrong_region"


def test_handler_failure_rolls_back_its_effects_and_is_500(client: Client) -> None:
    @slack.action("resolve_dialog")
    def failing(request: Any) -> None:
        ProcessedEnvelope.objects.create(
            id="00000000-0000-0000-0000-000000000001", kind="effect", idempotency_key="x", outcome="x"
        )
        raise ValueError("database said no")

    body = interactive_body(block_actions())
    sealed = seal(
        envelope_for(
            body, kind="block_actions:resolve_dialog", key="k-fail", content_type="application/x-www-form-urlencoded"
        )
    )
    response = post(client, sealed.body, sealed.signature)
    assert response.status_code == 500
    assert response.json() == {
        "error": "handler_failed",
        "detail": "ValueError in the block_actions:resolve_dialog handler",
    }
    assert not ProcessedEnvelope.objects.exists()


def test_handler_answer_is_returned_and_kept_for_duplicates(client: Client) -> None:
    @slack.view("new_issue")
    def submit(request: Any) -> dict[str, Any]:
        return {"response_action": "errors", "errors": {"title": "Too short"}}

    payload = {
        "type": "view_submission",
        "team": {"id": "T0US00001"},
        "user": {"id": "U1"},
        "view": {"id": "V1", "callback_id": "new_issue"},
    }
    envelope = envelope_for(
        interactive_body(payload),
        kind="view_submission:new_issue",
        key="k-view",
        content_type="application/x-www-form-urlencoded",
    )
    for expected in ("handled", "duplicate"):
        sealed = seal(envelope)
        data = post(client, sealed.body, sealed.signature).json()
        assert data == {
            "outcome": expected,
            "response": {"response_action": "errors", "errors": {"title": "Too short"}},
        }


def test_no_transaction_is_open_when_a_reply_goes_out(client: Client) -> None:
    """Reply helpers run after commit: the handler's transaction is closed by then."""
    observed: list[bool] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        request.after_commit(lambda: observed.append(connection.in_atomic_block))

    sealed = seal(
        envelope_for(json.dumps(event_callback(event_id="EvT")).encode(), kind="event_callback:app_mention", key="k-tx")
    )
    assert post(client, sealed.body, sealed.signature).status_code == 200
    assert observed == [False]


@override_settings(
    SILO_ROUTER={
        "MODE": "region",
        "REGION": "us",
        "SIGNING_KEYS": {"k1": "tests-control-to-region-key-0123456789abcdef"},
    }
)
def test_malformed_envelope_is_400(client: Client) -> None:
    body = b'{"version": 1}'
    response = post(client, body, signing.sign(body, key_id="k1", key="tests-control-to-region-key-0123456789abcdef"))
    assert response.status_code == 400
    assert response.json()["error"] == "malformed_envelope"
