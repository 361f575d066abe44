"""A refused envelope's receive span: the reason, in the trace of the attempt that sent it, nothing more."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client

from silo_router import signing
from silo_router.envelope import seal

from ...sentry_capture import Captured
from .conftest import SIDES
from .support import RECEIVE, click_envelope

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/silo-router/envelopes/"
TRACE_ID, ATTEMPT_SPAN = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
ATTEMPT_HEADERS = {"HTTP_SENTRY_TRACE": f"{TRACE_ID}-{ATTEMPT_SPAN}-1", "HTTP_X_SILO_ROUTER_ATTEMPT": "3"}


def _refusals(settings: Any) -> dict[str, tuple[bytes, dict[str, str]]]:
    sealed = seal(click_envelope(key="slack:click:refusals"))
    key_id, key = next(iter(settings.SILO_ROUTER["SIGNING_KEYS"].items()))
    stale = signing.sign(sealed.body, key_id=key_id, key=key, timestamp=time.time() - 3600)
    not_json = b"{not json"
    not_json_signature = signing.sign(not_json, key_id=key_id, key=key)
    return {
        "missing_signature": (sealed.body, {}),
        "stale_signature": (sealed.body, {"HTTP_X_SILO_ROUTER_SIGNATURE": stale}),
        "signature_mismatch": (sealed.body + b" ", {"HTTP_X_SILO_ROUTER_SIGNATURE": sealed.signature}),
        "malformed_envelope": (not_json, {"HTTP_X_SILO_ROUTER_SIGNATURE": not_json_signature}),
    }


@pytest.mark.parametrize("reason", ["missing_signature", "stale_signature", "signature_mismatch", "malformed_envelope"])
@pytest.mark.parametrize("sides", [SIDES[2]], indirect=True, ids=lambda sides: sides.id)
def test_a_refused_envelope_has_a_receive_span_with_the_reason(
    reason: str, captured: Captured, client: Client, settings: Any
) -> None:
    body, headers = _refusals(settings)[reason]
    response = client.post(URL, data=body, content_type="application/json", **headers, **ATTEMPT_HEADERS)
    assert 400 <= response.status_code < 500
    assert response.json()["error"] == reason

    (receive,) = [span for span in captured.spans() if span.op == RECEIVE]
    assert (receive.trace_id, receive.parent_span_id) == (TRACE_ID, ATTEMPT_SPAN)
    assert {key: receive.data.get(f"silo_router.{key}") for key in ("outcome", "reason", "attempt", "region")} == {
        "outcome": "rejected",
        "reason": reason,
        "attempt": 3,
        "region": "us",
    }
    assert receive.status == "internal_error"
    assert receive.data["messaging.operation.type"] == "receive"
    assert not {"silo_router.envelope_id", "silo_router.kind", "messaging.message.id"} & set(receive.data)


@pytest.mark.parametrize("sides", [SIDES[2]], indirect=True, ids=lambda sides: sides.id)
def test_an_envelope_over_the_size_limit_has_a_receive_span_too(captured: Captured, client: Client) -> None:
    response = client.generic("POST", URL, b"{}", content_type="application/json", CONTENT_LENGTH="999999999999")
    assert (response.status_code, response.json()["error"]) == (413, "envelope_too_large")
    (receive,) = [span for span in captured.spans() if span.op == RECEIVE]
    assert (receive.data["silo_router.outcome"], receive.data["silo_router.reason"]) == (
        "rejected",
        "envelope_too_large",
    )
