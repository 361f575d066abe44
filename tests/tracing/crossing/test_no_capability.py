"""Nothing the hop's spans and events carry holds a capability or a secret, over any transport."""

from __future__ import annotations

import json
from typing import Any

import pytest

from silo_router import signing
from silo_router.envelope import SealedEnvelope, seal
from silo_router.region.handlers import slack

from ...sentry_capture import Captured
from .conftest import SIDES
from .support import HANDLER, RECEIVE, RESPONSE_URL, TRIGGER_ID, Crossing, click_envelope, give_up_at_once

pytestmark = pytest.mark.django_db(transaction=True)

FORGING_KEY = "forging-key-0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.mark.parametrize("sides", [SIDES[0]], indirect=True, ids=lambda sides: sides.id)
def test_no_capability_in_anything_sentry_sdk_emitted(
    crossing: Crossing, captured: Captured, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    give_up_at_once(monkeypatch)

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        url, trigger = request.inbound.response_url, request.inbound.trigger_id  # capabilities in frame locals
        request.after_commit(lambda: None)
        if request.envelope.idempotency_key.endswith("fails"):
            raise RuntimeError(f"could not answer {url} for {trigger}")

    handled = seal(click_envelope(key="slack:click:handled"))
    fails = seal(click_envelope(key="slack:click:fails"))
    refused = seal(click_envelope(key="slack:click:refused"))
    forged = SealedEnvelope(body=refused.body, signature=signing.sign(refused.body, key_id="k1", key=FORGING_KEY))
    crossing.send(click_envelope(key="slack:click:handled"), sealed=handled)
    crossing.send(click_envelope(key="slack:click:fails"), sealed=fails)
    crossing.send(click_envelope(key="slack:click:refused"), sealed=forged)
    captured.wait_for(RECEIVE, count=3)
    captured.wait_for(HANDLER, count=2)

    secrets = [RESPONSE_URL, RESPONSE_URL.rsplit("/", 1)[1], TRIGGER_ID, FORGING_KEY]
    secrets += [_mac(sealed.signature) for sealed in (handled, fails, forged)]
    secrets += list(settings.SILO_ROUTER["SIGNING_KEYS"].values())
    emitted = captured.everything()
    assert "silo_router.region.receive" in emitted
    assert [secret for secret in secrets if secret in emitted] == []
    assert [secret for secret in secrets if json.dumps(secret)[1:-1] in emitted] == []


def _mac(signature: str) -> str:
    """The MAC of a signature header (``t=..,kid=..,v1=<mac>``): what proves the signer held the key."""
    return signature.rsplit("v1=", 1)[1]
