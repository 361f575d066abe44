"""Bad requests over real HTTP: precise 4xx answers that leak nothing, and nothing stored or forwarded."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from example_project.cluster import Cluster
from example_project.fake_slack import Sent

from .helpers import (
    ASYNC_TIMEOUT,
    FORM,
    JSON,
    US_TEAM,
    issue_button,
    new_payloads,
    payload_ids,
    payloads,
    processed,
    wait_until,
)

pytestmark = pytest.mark.e2e

#: The library's default ``MAX_BODY_SIZE`` (the example project keeps it).
MAX_BODY_SIZE = 1024 * 1024
VALID_EVENT = json.dumps({"type": "event_callback", "team_id": US_TEAM, "event_id": "EvE2EREJECT"}).encode()


@pytest.fixture
def nothing_stored(cluster: Cluster) -> Iterator[None]:
    """Assert that the test stored no payload in control and forwarded nothing to any region."""
    payloads_before = payload_ids(cluster)
    yield
    assert payload_ids(cluster) == payloads_before
    for region in ("us", "eu"):  # every region record stems from a payload control stored earlier
        assert set(processed(cluster, region)) <= payloads_before


def error_of(sent: Sent) -> str:
    """The ``error`` field of a JSON rejection."""
    assert sent.headers["Content-Type"].startswith(JSON), sent.headers["Content-Type"]
    return str(sent.json()["error"])


def test_bad_signature_is_401_signature_mismatch_without_secrets(cluster: Cluster, nothing_stored: None) -> None:
    """A wrong signature: 401 naming the reason; neither the secret nor the expected signature in the body."""
    sender = cluster.sender()
    timestamp = str(int(time.time()))
    correct = sender.sign(VALID_EVENT, timestamp)
    wrong = "v0=" + ("0" if correct[3] != "0" else "1") * 64

    sent = sender.send_raw(VALID_EVENT, content_type=JSON, timestamp=timestamp, signature=wrong)

    assert sent.status == 401
    assert error_of(sent) == "signature_mismatch"
    for secret in (cluster.signing_secret, correct, correct[3:]):
        assert secret not in sent.text


def test_missing_signature_is_401(cluster: Cluster, nothing_stored: None) -> None:
    """No X-Slack-Signature header at all: 401."""
    sent = cluster.sender().send_raw(VALID_EVENT, content_type=JSON, extra_headers={"X-Slack-Signature": None})

    assert sent.status == 401
    assert error_of(sent) == "missing_signature"


def test_stale_timestamp_is_401_even_when_correctly_signed(cluster: Cluster, nothing_stored: None) -> None:
    """A correct signature over a timestamp 10 minutes old (a replay): 401."""
    sender = cluster.sender()
    stale = str(int(time.time()) - 600)  # Slack's tolerance is 300 s

    sent = sender.send_raw(VALID_EVENT, content_type=JSON, timestamp=stale, signature=sender.sign(VALID_EVENT, stale))

    assert sent.status == 401
    assert error_of(sent) == "stale_timestamp"


def test_malformed_json_is_400(cluster: Cluster, nothing_stored: None) -> None:
    """A signed JSON body that does not parse: 400."""
    sent = cluster.sender().send_raw(b'{"type": "event_callback",', content_type=JSON)

    assert sent.status == 400
    assert error_of(sent) == "malformed_json"


def test_form_without_payload_or_command_is_400(cluster: Cluster, nothing_stored: None) -> None:
    """A signed form with neither ``payload`` nor ``command`` (its text merely says "payload"): 400."""
    sent = cluster.sender().send_raw(b"team_id=T0US00001&text=payload", content_type=FORM)

    assert sent.status == 400
    assert error_of(sent) == "unknown_request_type"


def test_oversized_body_is_413(cluster: Cluster, nothing_stored: None) -> None:
    """A body over ``MAX_BODY_SIZE`` (1 MiB): 413."""
    body = b"payload=" + b"x" * MAX_BODY_SIZE

    sent = cluster.sender().send_raw(body, content_type=FORM)

    assert sent.status == 413
    assert error_of(sent) == "payload_too_large"


def test_valid_request_no_handler_wants_is_200_and_kept_for_a_later_handler(cluster: Cluster) -> None:
    """Unknown action id: 200 (a 4xx would count as a failure at Slack), kept and retried, not recorded."""
    before = payload_ids(cluster)

    sent = cluster.sender().click_button(team_id=US_TEAM, action_id="e2e_nobody_listens", value=issue_button("acme", 1))

    assert (sent.status, sent.body) == (200, b"")
    [payload] = new_payloads(cluster, before)
    assert (payload.kind, payload.region) == ("block_actions:e2e_nobody_listens", "us")
    retried = wait_until(
        lambda: next((p for p in payloads(cluster, [payload.id]) if p.attempts >= 1 and p.state == "pending"), None),
        timeout=ASYNC_TIMEOUT,
        what="the unhandled payload to be scheduled for another attempt",
    )
    assert retried.last_error == "no handler for block_actions:e2e_nobody_listens in region us"
    assert processed(cluster, "us", [payload.id]) == {}
