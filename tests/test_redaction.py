"""Capabilities and secrets are redacted from text, nested data, log records and Sentry events."""

from __future__ import annotations

import json
import logging
import urllib.parse
from typing import Any

import pytest

from silo_router import redaction, signing, tracing
from silo_router.checks import check_settings

from .slack_signing import block_actions, interactive_body

#: Slack's documented example: a slash command's form body (slack-platform.md).
RESPONSE_URL = "https://hooks.slack.com/commands/T1DC2JH3J/397700885554/96rGlfmibIGlgcZRskXaIFfN"
TRIGGER_ID = "398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
LEGACY_TOKEN = "xyzz0WbapA4vBCDEFasx0q6G"
COMMAND_BODY = (
    f"token={LEGACY_TOKEN}&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar"
    "&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text="
    f"&response_url={urllib.parse.quote(RESPONSE_URL, safe='')}&trigger_id={TRIGGER_ID}"
)
SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
PROXY_PREFIX = "http://127.0.0.1:8010/response/"
PROXY_URL = PROXY_PREFIX + "SeCrEtCaPaBiLiTy0123"
SECRETS = (RESPONSE_URL, "96rGlfmibIGlgcZRskXaIFfN", TRIGGER_ID, LEGACY_TOKEN, SIGNATURE, "SeCrEtCaPaBiLiTy0123")


@pytest.fixture(autouse=True)
def proxy_prefix(settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "REDACTED_URL_PREFIXES": [PROXY_PREFIX]}


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def test_a_slash_command_body_keeps_nothing_secret() -> None:
    scrubbed = redaction.scrub_text(COMMAND_BODY)
    assert leaks(scrubbed) == []
    assert "team_id=T1DC2JH3J" in scrubbed and "user_name=roadrunner" in scrubbed


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({"response_url": RESPONSE_URL, "trigger_id": TRIGGER_ID, "token": LEGACY_TOKEN}),
        json.dumps({"response_url": RESPONSE_URL}).replace("/", "\\/"),  # Slack escapes slashes in JSON
        repr({"response_url": PROXY_URL, "trigger_id": TRIGGER_ID}),
        interactive_body({**block_actions(trigger_id=TRIGGER_ID), "response_url": PROXY_URL}).decode(),
        repr(interactive_body({**block_actions(trigger_id=TRIGGER_ID), "response_url": RESPONSE_URL})),
        f"http.client POST {PROXY_URL}",
        f"Sending a request - url: {RESPONSE_URL}, body: {{}}",
        f"headers: {{'X-Slack-Signature': '{SIGNATURE}', 'Authorization': 'Bearer xoxb-1234-abcd'}}",
    ],
)
def test_capabilities_in_every_encoding_are_redacted(text: str) -> None:
    scrubbed = redaction.scrub_text(text)
    assert leaks(scrubbed) == [], scrubbed
    assert "xoxb-1234-abcd" not in scrubbed
    assert redaction.REDACTED in scrubbed


def test_configured_secrets_are_redacted_wherever_they_appear(settings: Any) -> None:
    bot_token = settings.SILO_ROUTER["SLACK"]["BOT_TOKEN"]
    key = settings.SILO_ROUTER["SIGNING_KEYS"]["k1"]
    secret = settings.SLACK_SIGNING_SECRET
    scrubbed = redaction.scrub_text(f"using {bot_token} and {key} and {secret}")
    assert bot_token not in scrubbed and key not in scrubbed and secret not in scrubbed


def test_nested_data_is_scrubbed_by_key_and_by_value() -> None:
    data = {
        "trigger_id": "opaque-value",
        "X-Slack-Signature": SIGNATURE,
        "body": COMMAND_BODY,
        "nested": [{"note": f"see {PROXY_URL}"}, ("t", RESPONSE_URL)],
        "team_id": "T1DC2JH3J",
    }
    scrubbed = redaction.scrub(data)
    assert "opaque-value" not in json.dumps(scrubbed)
    assert leaks(json.dumps(scrubbed)) == []
    assert scrubbed["team_id"] == "T1DC2JH3J"


def test_redact_url_keeps_the_host() -> None:
    assert redaction.redact_url(RESPONSE_URL) == "https://hooks.slack.com/" + redaction.REDACTED
    assert redaction.redact_url("https://slack.com/api/chat.postMessage") == "https://slack.com/api/chat.postMessage"


def test_log_records_are_redacted_for_every_logger_and_level(caplog: pytest.LogCaptureFixture) -> None:
    """Installed by the apps' ready(): slack_sdk's DEBUG lines and child loggers of silo_router too."""
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("slack_sdk.webhook.client").debug("Sending a request - url: %s", PROXY_URL)
        logging.getLogger("silo_router.region.deep.child").warning("body %r", COMMAND_BODY.encode())
        try:
            raise RuntimeError(f"could not post to {RESPONSE_URL}")
        except RuntimeError:
            logging.getLogger("example_project.issues").exception("reply failed for trigger %s", TRIGGER_ID)
    assert len(caplog.records) == 3
    for record in caplog.records:
        assert leaks(logging.Formatter().format(record)) == []


def test_a_record_with_a_broken_format_string_is_redacted_too() -> None:
    """Logging reports such a record with its msg and args: both must be clean."""
    record = logging.LogRecord("silo_router", logging.INFO, __file__, 1, f"to {PROXY_URL}: %s %s", (TRIGGER_ID,), None)
    redaction.redact_record(record)
    assert leaks(repr(record.msg) + repr(record.args)) == []


def test_before_send_scrubs_every_part_of_an_event() -> None:
    event = {
        "exception": {
            "values": [
                {
                    "value": f"could not post to {RESPONSE_URL}",
                    "stacktrace": {
                        "frames": [{"vars": {"response_url": f"'{PROXY_URL}'", "inbound": repr(COMMAND_BODY)}}]
                    },
                }
            ]
        },
        "request": {
            "url": PROXY_URL,
            "data": {"payload": json.dumps({"trigger_id": TRIGGER_ID})},
            "headers": {"X-Slack-Signature": SIGNATURE},
        },
        "breadcrumbs": {"values": [{"message": f"POST {PROXY_URL}", "data": {"url": RESPONSE_URL}}]},
        "extra": {"celery-job": {"args": [COMMAND_BODY]}},
        "contexts": {"trace": {"trace_id": "0" * 32}},
        "spans": [{"description": f"POST {RESPONSE_URL}", "data": {"url": PROXY_URL}, "tags": {"t": TRIGGER_ID}}],
        "logentry": {"message": "body %s for %s", "params": [COMMAND_BODY, PROXY_URL]},
    }
    assert leaks(json.dumps(tracing.before_send(event, {}))) == []
    assert leaks(json.dumps(tracing.before_send_transaction(event, {}))) == []
    assert tracing.before_send(event, {})["contexts"]["trace"]["trace_id"] == "0" * 32
    assert tracing.before_send(event, {})["request"]["data"] == redaction.REDACTED  # a signed Slack request


def test_the_body_of_an_unsigned_request_is_kept_scrubbed() -> None:
    event = {"request": {"url": "/tickets/", "data": {"title": "printer", "response_url": RESPONSE_URL}}}
    assert tracing.before_send(event, {})["request"]["data"] == {"title": "printer", "response_url": redaction.REDACTED}


@pytest.mark.parametrize("prefixes", ["https://hooks.example.com/", ["hooks.example.com/x"], ["https://host-only"]])
def test_redacted_url_prefixes_that_are_not_url_prefixes_are_e040(settings: Any, prefixes: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "REDACTED_URL_PREFIXES": prefixes}
    assert "silo_router.E023" in {m.id for m in check_settings()}


def test_an_envelope_signature_is_redacted_by_value_and_by_key() -> None:
    header = signing.sign(b"{}", key_id="k1", key="a-hop-key-of-some-length")
    mac = header.rsplit("v1=", 1)[1]
    assert mac not in redaction.scrub_text(f"refused {header}")
    scrubbed = redaction.scrub({"frame": {"signature": header, "note": f"got {header}"}})
    assert mac not in json.dumps(scrubbed)
    assert scrubbed["frame"]["signature"] == redaction.REDACTED
