"""Slack request signing: known answers, freshness, rotation and every rejection reason."""

from __future__ import annotations

import hmac

import pytest
from django.http.request import HttpHeaders
from slack_sdk.signature import SignatureVerifier

from silo_router.exceptions import NotConfigured, SignatureError, SiloRouterConfigurationError
from silo_router.providers.slack import SlackProvider
from silo_router.providers.slack.verification import compute_signature, parse_timestamp, verify_signature

# Known-answer vector from Slack's "Verifying requests from Slack" documentation.
DOC_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
DOC_TIMESTAMP = "1531420618"
DOC_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V"
    b"&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    b"&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
    b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
DOC_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
DOC_NOW = float(DOC_TIMESTAMP)

SECRET = "tests-slack-signing-secret"
OLD_SECRET = "tests-slack-signing-secret-old"
NOW = 1_700_000_000.0
BODY = b'{"type":"event_callback","event_id":"Ev1","event":{"type":"app_mention"}}'


def signed(body: bytes = BODY, *, secret: str = SECRET, timestamp: str = "1700000000") -> dict[str, str]:
    """Lower-case Slack headers signing ``body`` with ``secret``."""
    return {
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": compute_signature(secret=secret, timestamp=timestamp, body=body),
    }


def check(
    headers: dict[str, str], *, body: bytes = BODY, secrets: tuple[str, ...] = (SECRET,), now: float = NOW
) -> None:
    """Run ``verify_signature`` over lower-case headers."""
    verify_signature(
        body=body,
        timestamp=headers.get("x-slack-request-timestamp"),
        signature=headers.get("x-slack-signature"),
        secrets=secrets,
        now=now,
    )


def rejection(headers: dict[str, str], **kwargs: object) -> SignatureError:
    """The ``SignatureError`` that ``check`` raises."""
    with pytest.raises(SignatureError) as caught:
        check(headers, **kwargs)  # type: ignore[arg-type]
    return caught.value


def test_known_answer_vector_from_slack_documentation() -> None:
    assert compute_signature(secret=DOC_SECRET, timestamp=DOC_TIMESTAMP, body=DOC_BODY) == DOC_SIGNATURE
    verify_signature(body=DOC_BODY, timestamp=DOC_TIMESTAMP, signature=DOC_SIGNATURE, secrets=[DOC_SECRET], now=DOC_NOW)


@pytest.mark.parametrize("body", [b"", DOC_BODY, BODY, "payload=%7B%22t%22%3A%22\u00e9%22%7D".encode()])
def test_compute_signature_matches_slack_sdk(body: bytes) -> None:
    expected = SignatureVerifier(signing_secret=SECRET).generate_signature(timestamp="1700000000", body=body)
    assert compute_signature(secret=SECRET, timestamp="1700000000", body=body) == expected


def test_good_signature_is_accepted() -> None:
    check(signed())


def test_signature_is_returned_as_v0_and_64_lower_hex() -> None:
    signature = compute_signature(secret=SECRET, timestamp="1", body=b"x")
    assert signature.startswith("v0=")
    assert len(signature) == 67
    assert signature[3:] == signature[3:].lower()
    int(signature[3:], 16)


def test_upper_case_hex_signature_is_accepted() -> None:
    headers = signed()
    headers["x-slack-signature"] = "v0=" + headers["x-slack-signature"][3:].upper()
    check(headers)


def test_wrong_secret_is_a_mismatch() -> None:
    assert rejection(signed(secret="someone-else")).reason == "signature_mismatch"


def test_tampered_body_is_a_mismatch() -> None:
    assert rejection(signed(), body=BODY.replace(b"Ev1", b"Ev2")).reason == "signature_mismatch"


def test_tampered_timestamp_is_a_mismatch() -> None:
    headers = signed()
    headers["x-slack-request-timestamp"] = "1700000001"
    assert rejection(headers).reason == "signature_mismatch"


def test_signature_of_another_body_is_a_mismatch() -> None:
    headers = signed(b"other body")
    assert rejection(headers).reason == "signature_mismatch"


@pytest.mark.parametrize("offset", [301, 3600, -301, -3600])
def test_timestamp_beyond_300_seconds_either_way_is_stale(offset: int) -> None:
    headers = signed(timestamp=str(int(NOW) + offset))
    error = rejection(headers)
    assert error.reason == "stale_timestamp"
    assert error.status == 401


@pytest.mark.parametrize("offset", [300, -300, 0, 299.5])
def test_timestamp_at_or_within_the_boundary_is_fresh(offset: float) -> None:
    check(signed(timestamp=str(int(NOW))), now=NOW + offset)


def test_custom_tolerance() -> None:
    headers = signed()
    verify_signature(
        body=BODY,
        timestamp=headers["x-slack-request-timestamp"],
        signature=headers["x-slack-signature"],
        secrets=[SECRET],
        now=NOW + 50,
        tolerance=60,
    )
    with pytest.raises(SignatureError) as caught:
        verify_signature(
            body=BODY,
            timestamp=headers["x-slack-request-timestamp"],
            signature=headers["x-slack-signature"],
            secrets=[SECRET],
            now=NOW + 61,
            tolerance=60,
        )
    assert caught.value.reason == "stale_timestamp"


def test_stale_check_runs_before_signature_check() -> None:
    """A replayed, correctly signed request is still refused for its age."""
    assert rejection(signed(), now=NOW + 10_000).reason == "stale_timestamp"


@pytest.mark.parametrize(
    "timestamp", ["abc", "nan", "inf", "-inf", "1e9", "-1700000000", " 1700000000", "1_700_000_000", "0x65", "9" * 400]
)
def test_non_numeric_or_non_finite_timestamp_is_invalid(timestamp: str) -> None:
    headers = signed(timestamp=timestamp)
    error = rejection(headers)
    assert error.reason == "invalid_timestamp"
    assert error.status == 401


@pytest.mark.parametrize("timestamp", [None, ""])
def test_missing_timestamp(timestamp: str | None) -> None:
    headers = signed()
    if timestamp is None:
        del headers["x-slack-request-timestamp"]
    else:
        headers["x-slack-request-timestamp"] = timestamp
    assert rejection(headers).reason == "missing_timestamp"


@pytest.mark.parametrize("signature", [None, ""])
def test_missing_signature(signature: str | None) -> None:
    headers = signed()
    if signature is None:
        del headers["x-slack-signature"]
    else:
        headers["x-slack-signature"] = signature
    assert rejection(headers).reason == "missing_signature"


@pytest.mark.parametrize(
    "signature",
    [
        "a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        "v1=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b50",
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b5033",
        "v0=g2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        " v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
        "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503,v0=00",
        "v0=\u00e92114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b50",
    ],
)
def test_malformed_signature(signature: str) -> None:
    headers = signed()
    headers["x-slack-signature"] = signature
    assert rejection(headers).reason == "malformed_signature"


def test_rotation_accepts_either_secret() -> None:
    both = (SECRET, OLD_SECRET)
    check(signed(secret=SECRET), secrets=both)
    check(signed(secret=OLD_SECRET), secrets=both)
    check(signed(secret=OLD_SECRET), secrets=(OLD_SECRET, SECRET))
    assert rejection(signed(secret="third"), secrets=both).reason == "signature_mismatch"


def test_every_secret_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    """No early exit: the comparison count does not reveal which secret matched."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("silo_router.providers.slack.verification.hmac.compare_digest", spy)
    check(signed(secret=SECRET), secrets=(SECRET, OLD_SECRET, "third"))
    assert len(calls) == 3


@pytest.mark.parametrize("secrets", [(), ("",), ("", "")])
def test_no_signing_secret_never_accepts_and_blames_the_server(secrets: tuple[str, ...]) -> None:
    headers = signed(secret="")
    with pytest.raises(NotConfigured) as caught:
        check(headers, secrets=secrets)
    assert caught.value.reason == "not_configured"
    assert caught.value.status == 503


def test_details_never_leak_the_secret_or_expected_signature() -> None:
    expected = signed()["x-slack-signature"]
    cases = [
        (signed(secret="wrong"), {}),
        (signed(), {"now": NOW + 9999}),
        ({**signed(), "x-slack-signature": "v0=zz"}, {}),
        ({**signed(), "x-slack-request-timestamp": "soon"}, {}),
    ]
    for headers, kwargs in cases:
        error = rejection(headers, **kwargs)
        for text in (error.detail, str(error), error.reason):
            assert SECRET not in text
            assert expected not in text
            assert expected[3:] not in text


def test_parse_timestamp() -> None:
    assert parse_timestamp("1531420618") == 1531420618.0
    assert parse_timestamp("1531420618.25") == 1531420618.25
    for value in (None, "", "x", "nan", "inf", "1e3", "+1", "-1", "1.", ".5"):
        assert parse_timestamp(value) is None


# -- the SlackProvider wrapper ---------------------------------------------------------


def test_provider_verifies_lower_case_headers() -> None:
    provider = SlackProvider(signing_secrets=[DOC_SECRET])
    headers = {"X-Slack-Request-Timestamp": DOC_TIMESTAMP, "X-Slack-Signature": DOC_SIGNATURE}
    provider.verify(body=DOC_BODY, headers={k.lower(): v for k, v in headers.items()}, now=DOC_NOW)


def test_provider_accepts_django_case_insensitive_headers() -> None:
    provider = SlackProvider(signing_secrets=[DOC_SECRET])
    headers = HttpHeaders({"HTTP_X_SLACK_REQUEST_TIMESTAMP": DOC_TIMESTAMP, "HTTP_X_SLACK_SIGNATURE": DOC_SIGNATURE})
    provider.verify(body=DOC_BODY, headers=headers, now=DOC_NOW)


def test_provider_rejects_and_maps_reasons() -> None:
    provider = SlackProvider(signing_secrets=[SECRET, OLD_SECRET])
    provider.verify(body=BODY, headers=signed(secret=OLD_SECRET), now=NOW)
    with pytest.raises(SignatureError) as caught:
        provider.verify(body=BODY, headers={"x-slack-signature": signed()["x-slack-signature"]}, now=NOW)
    assert caught.value.reason == "missing_timestamp"
    with pytest.raises(SignatureError) as caught:
        provider.verify(body=BODY + b" ", headers=signed(), now=NOW)
    assert caught.value.reason == "signature_mismatch"


def test_provider_tolerance_is_configurable() -> None:
    provider = SlackProvider(signing_secrets=[SECRET], tolerance=10)
    with pytest.raises(SignatureError) as caught:
        provider.verify(body=BODY, headers=signed(), now=NOW + 11)
    assert caught.value.reason == "stale_timestamp"


def test_provider_with_no_secrets_rejects() -> None:
    provider = SlackProvider(signing_secrets=[])
    with pytest.raises(NotConfigured) as caught:
        provider.verify(body=BODY, headers=signed(), now=NOW)
    assert caught.value.reason == "not_configured"


def test_provider_refuses_a_bare_string_or_negative_tolerance() -> None:
    with pytest.raises(SiloRouterConfigurationError):
        SlackProvider(signing_secrets=SECRET)
    with pytest.raises(SiloRouterConfigurationError):
        SlackProvider(signing_secrets=[SECRET], tolerance=-1)


def test_provider_sent_at() -> None:
    provider = SlackProvider(signing_secrets=[SECRET])
    assert provider.sent_at({"x-slack-request-timestamp": "1700000000"}) == 1_700_000_000.0
    assert provider.sent_at({}) is None
    assert provider.sent_at({"x-slack-request-timestamp": "yesterday"}) is None
    assert provider.sent_at({"x-slack-request-timestamp": "nan"}) is None


def test_provider_identity() -> None:
    assert SlackProvider.name == "slack"
    assert SlackProvider.forwarded_headers == (
        "content-type",
        "x-slack-request-timestamp",
        "x-slack-retry-num",
        "x-slack-retry-reason",
    )
