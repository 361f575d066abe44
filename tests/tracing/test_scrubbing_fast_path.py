"""The scrubbers' fast path (a string is searched only for what it can hold) redacts exactly what a full search does."""

from __future__ import annotations

import random
import re
import sys
import urllib.parse
from typing import Any

import pytest

from silo_router import redaction, tracing

BOT_TOKEN = "xoxb-1111-2222-fastpathtoken"
TRIGGER_ID = "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
HOOK = "https://hooks.slack.com/actions/T1/2/fastpathCapability"
SIGNATURE = "v0=" + "a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
ENVELOPE_SIGNATURE = "v1=" + "0" * 64
#: Configured secrets with none of the literals of the value shapes (no dot, colon, ``=``, ``xox``).
PLAIN_SECRET = "plainsecretwithoutpunctuation"
PLAIN_KEY = "PlainRegionKeyABCDEFGH"
PREFIX = "http://127.0.0.1:8010/response/"


@pytest.fixture(autouse=True)
def configured(settings: Any) -> None:
    silo = settings.SILO_ROUTER
    settings.SILO_ROUTER = {
        **silo,
        "SLACK": {**silo.get("SLACK", {}), "SIGNING_SECRETS": [PLAIN_SECRET]},
        "SIGNING_KEYS": {**silo.get("SIGNING_KEYS", {}), "plain": PLAIN_KEY},
        "REDACTED_URL_PREFIXES": [PREFIX],
    }


def full_scrub(text: str) -> str:
    """What scrubbing a string means, with every search run on every string (the reference)."""
    for secret in redaction.known_secrets():
        text = text.replace(secret, redaction.REDACTED)
    for prefix in redaction.url_prefixes():
        for variant, pattern in redaction._prefix_patterns(prefix):
            text = pattern.sub(variant + redaction.REDACTED, text)
    for pattern in redaction._VALUE_PATTERNS:
        text = pattern.sub(redaction.REDACTED, text)
    return redaction._KEY_VALUE.sub(lambda m: m.group("key") + m.group("sep") + redaction.REDACTED, text)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("xoxb-1-abc", "xoxb-1-abc"),
        ("xoxp-99-user", "xoxp-99-user"),
        ("xapp-1-A01-abc", "xapp-1-A01-abc"),
        (SIGNATURE, SIGNATURE[3:]),
        (ENVELOPE_SIGNATURE, ENVELOPE_SIGNATURE[3:]),
        (TRIGGER_ID, TRIGGER_ID),
        ("1.2.803a0bc887a14d10d2c447fce8b6703c", "803a0bc887a14d10d2c447fce8b6703c"),
        (HOOK, "fastpathCapability"),
        ("HTTPS://HOOKS.SLACK.COM/actions/T1/2/upperCapability", "upperCapability"),
        ("https://hoo\u212aſ.slack.com/actions/T1/2/foldedCapability", "foldedCapability"),  # Kelvin sign, long s
        (urllib.parse.quote(HOOK, safe=""), "fastpathCapability"),
        (HOOK.replace("/", "\\/"), "fastpathCapability"),
        (PREFIX + "proxyCapability", "proxyCapability"),
        (PLAIN_SECRET, PLAIN_SECRET),
        (PLAIN_KEY, PLAIN_KEY),
        (BOT_TOKEN, BOT_TOKEN),
        ("token=abc123", "abc123"),
        ("TOKEN:abc123", "abc123"),
        ("response_url%3Dabc123", "abc123"),
        ("response-url%3aabc123", "abc123"),
        ('{"trigger_id": "abc123"}', "abc123"),
        ("{'Authorization': 'Bearer'}", "Bearer"),
        ("signing_keys=k1", "k1"),
        ("interactivity_pointer=p1", "p1"),
    ],
)
def test_every_shape_is_redacted_when_it_is_all_a_string_holds(text: str, secret: str) -> None:
    scrubbed = redaction.scrub_text(text)
    assert secret not in scrubbed, scrubbed
    assert redaction.REDACTED in scrubbed
    assert scrubbed == full_scrub(text)


def test_the_fast_path_changes_exactly_what_a_full_search_changes() -> None:
    fragments = [
        "silo_router.control.request", "2026-12-02T19:45:17.625490Z", "a1b2c3d4e5f60718", "ok", " ", ":", "=",
        "&", ",", '"', "'", "%3A", "%3d", "%22", ".", "/", "\\/", "token", "Response_URL", "trigger-id",
        "signature", "xox", "xoxb-", "xapp-", "v0=", "v1=", "0" * 32, "803a0bc887a14d10d2c447fce8b6703c", "12",
        "hooks.slack.com", "HOOKS.Slack.COM", "https://", "http%3A%2F%2F", "\u212a", "ſ", PREFIX, PLAIN_SECRET,
        PLAIN_KEY, BOT_TOKEN, TRIGGER_ID, HOOK, SIGNATURE, "INSERT INTO \"payload\"", "3.11.7", "body",
    ]  # fmt: skip
    chooser = random.Random(8)
    for _ in range(4000):
        text = "".join(chooser.choice(fragments) for _ in range(chooser.randint(1, 7)))
        assert redaction.scrub_text(text) == full_scrub(text), text


def test_case_folding_finds_every_spelling_the_hooks_search_accepts() -> None:
    for letter in set("hooks.slack.com"):
        accepts = re.compile(re.escape(letter), re.IGNORECASE)
        for code in range(sys.maxunicode + 1):
            if accepts.fullmatch(chr(code)):
                assert letter in chr(code).casefold(), (letter, hex(code))


def test_every_capability_key_holds_a_key_stem() -> None:
    for key in redaction.CAPABILITY_KEYS:
        assert any(stem in key for stem in redaction._KEY_STEMS), key


def test_a_secret_configured_later_is_redacted_at_once(settings: Any) -> None:
    assert redaction.scrub_text("latersecretvalue99") == "latersecretvalue99"
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SIGNING_KEYS": {"later": "latersecretvalue99"}}
    assert redaction.scrub_text("latersecretvalue99") == redaction.REDACTED
    event = {"spans": [{"data": {"note": "latersecretvalue99"}}]}
    assert "latersecretvalue99" not in str(tracing.before_send_transaction(event, {}))


def test_values_that_cannot_hold_a_capability_pass_unchanged() -> None:
    event: dict[str, Any] = {
        "timestamp": 1764700000.5,
        "count": 3,
        "sampled": True,
        "nothing": None,
        "empty": "",
        "span_id": "a1b2c3d4e5f60718",
        "op": "silo_router.control.request",
        "at": "2026-12-02T19:45:17.625490Z",
    }
    assert redaction.scrub(event) == event


def test_a_whole_event_is_redacted_by_key_and_by_value_in_one_pass() -> None:
    event = {
        "type": "transaction",
        "spans": [
            {"op": "http.client", "description": f"POST {HOOK}", "data": {"url": HOOK, "trigger_id": "t"}},
            {"op": "silo_router.control.verify", "data": {"silo_router.kind": "block_actions", "note": PLAIN_KEY}},
        ],
        "tags": {"token": BOT_TOKEN},
        "breadcrumbs": {"values": [{"message": f"opened a modal with {TRIGGER_ID}"}]},
    }
    sent = str(tracing.before_send_transaction(event, {}))
    for secret in ("fastpathCapability", PLAIN_KEY, BOT_TOKEN, TRIGGER_ID, "'t'"):
        assert secret not in sent, secret
    assert "block_actions" in sent and "silo_router.control.verify" in sent
