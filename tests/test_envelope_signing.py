"""The control-to-region hop: envelope format and its HMAC signature."""

from __future__ import annotations

import time

import pytest
from django.test import override_settings

from silo_router import signing
from silo_router.envelope import Envelope, seal, unseal
from silo_router.exceptions import EnvelopeRejected

KEYS = {"old": "o" * 40, "new": "n" * 40}


def make_envelope(**changes: object) -> Envelope:
    fields: dict[str, object] = {
        "id": Envelope.make_id("slack:event:Ev1", "us"),
        "idempotency_key": "slack:event:Ev1",
        "provider": "slack",
        "kind": "event_callback:app_mention",
        "region": "us",
        "body": '{"type":"event_callback"}',
        "headers": {"content-type": "application/json"},
        "strategy": "async",
        "organization_ids": ("101",),
    }
    fields.update(changes)
    return Envelope(**fields)  # type: ignore[arg-type]


def test_round_trip_keeps_every_field() -> None:
    envelope = make_envelope(control_response={"status": "opened", "view_id": "V1"}, trace={"sentry-trace": "a-b-1"})
    assert Envelope.from_json(envelope.to_json()) == envelope


def test_envelope_id_is_stable_per_request_and_region() -> None:
    assert Envelope.make_id("k", "us") == Envelope.make_id("k", "us")
    assert Envelope.make_id("k", "us") != Envelope.make_id("k", "eu")
    assert Envelope.make_id("k", "us") != Envelope.make_id("k2", "us")


def test_signature_verifies_and_names_its_key() -> None:
    body = make_envelope().to_json()
    header = signing.sign(body, key_id="new", key=KEYS["new"])
    assert signing.verify(body, header, keys=KEYS, max_age=300) == "new"


def test_rotation_accepts_old_key_while_listed() -> None:
    body = make_envelope().to_json()
    header = signing.sign(body, key_id="old", key=KEYS["old"])
    assert signing.verify(body, header, keys=KEYS, max_age=300) == "old"
    with pytest.raises(EnvelopeRejected) as info:
        signing.verify(body, header, keys={"new": KEYS["new"]}, max_age=300)
    assert info.value.reason == "unknown_key"


@pytest.mark.parametrize("skew", [-301, 301])
def test_replay_window_both_directions(skew: int) -> None:
    body = b"{}"
    header = signing.sign(body, key_id="new", key=KEYS["new"], timestamp=time.time() + skew)
    with pytest.raises(EnvelopeRejected) as info:
        signing.verify(body, header, keys=KEYS, max_age=300)
    assert info.value.reason == "stale_signature"
    assert info.value.status == 403


def test_tampered_body_and_forged_mac_are_refused() -> None:
    body = make_envelope().to_json()
    header = signing.sign(body, key_id="new", key=KEYS["new"])
    with pytest.raises(EnvelopeRejected) as info:
        signing.verify(body.replace(b"us", b"eu"), header, keys=KEYS, max_age=300)
    assert info.value.reason == "signature_mismatch"
    forged = signing.sign(body, key_id="new", key="attacker-key" * 4)
    with pytest.raises(EnvelopeRejected) as info:
        signing.verify(body, forged, keys=KEYS, max_age=300)
    assert info.value.reason == "signature_mismatch"
    assert KEYS["new"] not in info.value.detail


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        ("v1=abc", "malformed_signature"),
        ("t=1,kid=x,v1=" + "g" * 64, "malformed_signature"),
    ],
)
def test_missing_or_malformed_header(header: str | None, reason: str) -> None:
    with pytest.raises(EnvelopeRejected) as info:
        signing.verify(b"{}", header, keys=KEYS, max_age=300)
    assert info.value.reason == reason


def test_seal_and_unseal_use_settings() -> None:
    envelope = make_envelope()
    sealed = seal(envelope)
    assert unseal(sealed.body, sealed.signature) == envelope
    with override_settings(SILO_ROUTER={"SIGNING_KEYS": {"other": "x" * 40}, "SIGNING_KEY_ID": "other"}):
        with pytest.raises(EnvelopeRejected):
            unseal(sealed.body, sealed.signature)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "malformed_envelope"),
        (b"[]", "malformed_envelope"),
        (b'{"version": 99}', "unsupported_version"),
        (b'{"version": 1}', "malformed_envelope"),
    ],
)
def test_malformed_envelopes(raw: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeRejected) as info:
        Envelope.from_json(raw)
    assert info.value.reason == reason
    assert info.value.status == 400
