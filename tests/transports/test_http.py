"""The http transport: a total deadline, accepted versus slow, and what each answer means."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from silo_router import signing
from silo_router.control import circuits, delivery
from silo_router.control.models import Payload, RegionCircuit
from silo_router.envelope import SealedEnvelope, seal
from silo_router.region.handlers import slack
from silo_router.transports import DeliveryError, DeliveryTimeout, transport_for
from silo_router.transports.http import HttpTransport

from .conftest import make_envelope
from .servers import Piece, ScriptedServer, dribble, http_answer

pytestmark = pytest.mark.django_db(transaction=True)

RECEIPT = json.dumps({"outcome": "handled", "response": None}).encode()
#: The region takes this long per byte; the whole answer would take many deadlines.
DRIBBLE_EVERY = 0.5


def transport(url: str, **options: Any) -> HttpTransport:
    return HttpTransport("us", {"URL": url, **options})


def test_a_region_that_dribbles_its_answer_is_cut_off_at_the_deadline() -> None:
    """Each byte comes well within any per-read timeout; only a total deadline stops it."""
    answer = http_answer("200 OK", RECEIPT)
    with ScriptedServer(dribble(answer, every=DRIBBLE_EVERY)) as server:
        with pytest.raises(DeliveryTimeout) as info:
            transport(server.url, CONNECT_TIMEOUT=1.0).deliver(seal(make_envelope()), timeout=1.0, wait=True)
        server.wait_for_connections(1)
    assert info.value.region_fault  # it never even sent its status line: the region is unwell
    assert server.finished == [False]
    assert server.sent[0] < len(answer)


def test_a_region_that_accepted_then_dribbles_is_slow_not_down() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n \r\n"
    rest = f"{len(RECEIPT):x}\r\n".encode() + RECEIPT + b"\r\n0\r\n\r\n"
    with ScriptedServer([Piece(head), *dribble(rest, every=DRIBBLE_EVERY)]) as server:
        with pytest.raises(DeliveryTimeout) as info:
            transport(server.url, CONNECT_TIMEOUT=1.0).deliver(seal(make_envelope()), timeout=1.5, wait=True)
        server.wait_for_connections(1)
    assert not info.value.region_fault
    assert server.finished == [False]


def test_a_connection_reset_is_a_delivery_error() -> None:
    with ScriptedServer([]) as server:  # reads the request, closes without a word
        with pytest.raises(DeliveryError) as info:
            transport(server.url).deliver(seal(make_envelope()), timeout=2.0, wait=False)
    assert info.value.retryable and info.value.region_fault
    assert not info.value.hold


def test_retry_after_is_passed_through_uncapped() -> None:
    answer = http_answer("503 Service Unavailable", b'{"error": "busy"}', ["Retry-After: 900"])
    with ScriptedServer([Piece(answer)]) as server:
        with pytest.raises(DeliveryError) as info:
            transport(server.url).deliver(seal(make_envelope()), timeout=2.0, wait=False)
    assert info.value.retry_after == 900.0  # control caps it with RETRY_AFTER_MAX


@pytest.mark.parametrize(
    ("status", "body"),
    [
        ("401 Unauthorized", b"<html>sign in</html>"),
        ("403 Forbidden", b'{"error": "unknown_key"}'),
        ("404 Not Found", b"<html>no such route</html>"),
        ("405 Method Not Allowed", b""),
        ("400 Bad Request", b'{"error": "unsupported_version"}'),
    ],
)
def test_fleet_wide_faults_hold_the_region(status: str, body: bytes) -> None:
    with ScriptedServer([Piece(http_answer(status, body))]) as server:
        with pytest.raises(DeliveryError) as info:
            transport(server.url).deliver(seal(make_envelope()), timeout=2.0, wait=False)
    assert info.value.hold
    assert info.value.retryable


def test_a_malformed_envelope_stays_terminal_for_that_payload() -> None:
    answer = http_answer("400 Bad Request", b'{"error": "malformed_envelope"}')
    with ScriptedServer([Piece(answer)]) as server:
        with pytest.raises(DeliveryError) as info:
            transport(server.url).deliver(seal(make_envelope()), timeout=2.0, wait=False)
    assert not info.value.retryable
    assert not info.value.hold


def test_the_real_endpoint_refusals_hold_for_keys_and_versions(http_region: str) -> None:
    envelope = make_envelope(event_id="EvKeys")
    body = envelope.to_json()
    forged = SealedEnvelope(body=body, signature=signing.sign(body, key_id="k1", key="not-this-regions-key" * 3))
    stale_version = envelope.replace(version=2)
    newer = SealedEnvelope(body=stale_version.to_json(), signature=seal(stale_version).signature)
    for sealed, reason in ((forged, "http_403: signature_mismatch"), (newer, "http_400: unsupported_version")):
        with pytest.raises(DeliveryError) as info:
            transport_for("us").deliver(sealed, timeout=5.0, wait=False)
        assert (info.value.reason, info.value.hold) == (reason, True)


#: The slow handlers below hold no transaction: the test database is one in-memory SQLite
#: shared by control and region, which lets only one connection write at a time.
def test_a_slow_handler_times_out_without_blaming_the_region(http_region: str) -> None:
    release = threading.Event()

    @slack.event("app_mention", atomic=False)
    def slow(request: Any) -> None:
        release.wait(10)

    try:
        with pytest.raises(DeliveryTimeout) as info:
            transport_for("us").deliver(seal(make_envelope(event_id="EvSlow")), timeout=1.0, wait=False)
    finally:
        release.set()
    assert not info.value.region_fault


@pytest.fixture
def one_failure_opens(settings: Any, http_region: str) -> None:
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "DELIVERY_TIMEOUT": 1.0,
        "CIRCUIT_FAILURE_THRESHOLD": 1,
        "RETRY_JITTER": 0,
    }


def circuit_state(region: str) -> str:
    row = RegionCircuit.objects.filter(region=region).first()
    return row.state if row else circuits.State.CLOSED


def test_a_healthy_region_with_a_slow_handler_keeps_its_circuit_closed(one_failure_opens: None) -> None:
    release = threading.Event()

    @slack.event("app_mention", atomic=False)
    def slow(request: Any) -> None:
        release.wait(10)

    (payload,) = delivery.store([make_envelope(event_id="EvSlowCircuit")])
    try:
        delivery.deliver(str(payload.pk))
    finally:
        release.set()
    assert circuit_state("us") == circuits.State.CLOSED
    assert Payload.objects.get(pk=payload.pk).state == Payload.State.PENDING  # retried later, not failed


def test_a_reply_waiting_on_slacks_rate_limit_does_not_delay_the_receipt(
    one_failure_opens: None, settings: Any
) -> None:
    from example_project.fake_slack import FakeSlack

    with FakeSlack(signing_secret=settings.SLACK_SIGNING_SECRET, bot_token="xoxb-tests") as fake:
        settings.SILO_ROUTER = {
            **settings.SILO_ROUTER,
            "SLACK": {**settings.SILO_ROUTER["SLACK"], "API_URL": fake.api_url},
        }
        fake.fail_next("chat.postMessage", status=429, retry_after=2)

        @slack.event("app_mention")
        def mention(request: Any) -> None:
            request.after_commit(lambda: request.client.chat_postMessage(channel="C0CHAN001", text="done"))

        (payload,) = delivery.store([make_envelope(event_id="EvRateLimited")])
        assert delivery.deliver(str(payload.pk)) == Payload.State.DELIVERED
        assert circuit_state("us") == circuits.State.CLOSED
        calls = fake.wait_for("chat.postMessage", count=2, timeout=10)
        assert [c.error for c in calls] == ["ratelimited", None]


#: Control accepts bodies up to MAX_BODY_SIZE bytes; these characters take 2 and 4 bytes.
WIDE = "é😀"


def wide_text(settings: Any) -> str:
    room = settings.SILO_ROUTER.get("MAX_BODY_SIZE", 1024 * 1024) - len(json.dumps(make_envelope().body).encode())
    text = WIDE * (room // len(WIDE.encode()))
    return text + "x" * (room - len(text.encode()))


def test_a_body_at_max_body_size_of_wide_characters_is_delivered_and_handled(http_region: str, settings: Any) -> None:
    seen: list[int] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        seen.append(len(request.payload["event"]["text"].encode()))

    text = wide_text(settings)
    envelope = make_envelope(event_id="EvWide", text=text)
    assert len(envelope.body.encode()) <= 1024 * 1024
    receipt = transport_for("us").deliver(seal(envelope), timeout=30.0, wait=False)
    assert receipt.outcome == "handled"
    assert seen == [len(text.encode())]
