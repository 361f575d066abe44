"""Batches of envelopes: ``deliver_many`` on every transport, the region's batch endpoint, and the fallback."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.test import Client

from silo_router import signing
from silo_router.envelope import Envelope, Outcome, SealedEnvelope, seal
from silo_router.region import views
from silo_router.region.handlers import slack
from silo_router.region.models import ProcessedEnvelope
from silo_router.transports import (
    DeliveryError,
    DeliveryTimeout,
    Hop,
    NotSent,
    Receipt,
    delivering_batch,
    transport_for,
)
from silo_router.transports.http import HttpTransport
from silo_router.transports.local import LocalTransport

from .conftest import ENVELOPE_PATH, make_envelope
from .servers import Piece, ScriptedServer, http_answer

pytestmark = pytest.mark.django_db(transaction=True)

BATCH_PATH = ENVELOPE_PATH + "batch/"


def envelopes(count: int, *, tag: str) -> list[Envelope]:
    return [make_envelope(event_id=f"Ev{tag}{i:03d}") for i in range(count)]


def forged(envelope: Envelope) -> SealedEnvelope:
    body = envelope.to_json()
    return SealedEnvelope(body=body, signature=signing.sign(body, key_id="k1", key="not-this-regions-key" * 3))


@pytest.fixture
def mentions() -> list[str]:
    """An ``app_mention`` handler that records the event ids it ran for."""
    seen: list[str] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        seen.append(request.payload["event_id"])

    return seen


def handled_ids() -> set[str]:
    return {str(pk) for pk in ProcessedEnvelope.objects.values_list("pk", flat=True)}


def test_a_batch_is_one_post_with_a_receipt_per_envelope_in_order(http_region: str, mentions: list[str]) -> None:
    batch = envelopes(5, tag="Order")
    results = transport_for("us").deliver_many([seal(e) for e in batch], timeout=10.0, wait=False)
    assert [r.outcome for r in results if isinstance(r, Receipt)] == ["handled"] * 5
    assert mentions == [f"EvOrder{i:03d}" for i in range(5)]
    again = transport_for("us").deliver_many([seal(e) for e in batch], timeout=10.0, wait=False)
    assert [r.outcome for r in again if isinstance(r, Receipt)] == ["duplicate"] * 5  # once per envelope


def test_a_forged_envelope_in_a_batch_is_refused_alone(http_region: str, mentions: list[str]) -> None:
    first, second, third = envelopes(3, tag="Forged")
    results = transport_for("us").deliver_many([seal(first), forged(second), seal(third)], timeout=10.0, wait=False)
    assert isinstance(results[0], Receipt) and isinstance(results[2], Receipt)
    refused = results[1]
    assert isinstance(refused, DeliveryError)
    assert (refused.reason, refused.hold) == ("http_403: signature_mismatch", True)
    assert handled_ids() == {first.id, third.id}


def test_the_batch_endpoint_verifies_each_envelope_and_answers_a_line_each(mentions: list[str]) -> None:
    good, bad = envelopes(2, tag="Lines")
    items = [
        {"body": seal(good).body.decode(), "signature": seal(good).signature, "attempt": 1},
        {"body": forged(bad).body.decode(), "signature": forged(bad).signature},
        {"body": "{}", "signature": seal(good).signature},
    ]
    response = Client().post(BATCH_PATH, data=json.dumps({"envelopes": items}), content_type="application/json")
    assert response.status_code == 200
    raw = b"".join(response.streaming_content)  # type: ignore[attr-defined]
    assert raw.startswith(b" ")
    lines = [json.loads(line) for line in raw[1:].splitlines()]
    assert lines[0] == {"outcome": "handled", "response": None}
    assert (lines[1]["status"], lines[1]["error"]) == (403, "signature_mismatch")
    assert lines[2]["status"] in (400, 403)
    assert mentions == ["EvLines000"]


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"envelopes": []}', b'{"envelopes": [{"body": 1, "signature": "x"}]}', b'{"other": 1}'],
)
def test_a_body_that_is_not_a_batch_is_a_400(body: bytes) -> None:
    response = Client().post(BATCH_PATH, data=body, content_type="application/json")
    assert (response.status_code, response.json()["error"]) == (400, "malformed_batch")


def test_a_batch_with_too_many_envelopes_is_refused_whole() -> None:
    item = {"body": "{}", "signature": "t=1,kid=k1,v1=" + "0" * 64}
    response = Client().post(BATCH_PATH, data=json.dumps({"envelopes": [item] * 101}), content_type="application/json")
    assert (response.status_code, response.json()["error"]) == (413, "batch_too_large")


def test_a_handler_failure_fails_its_envelope_and_not_the_others(http_region: str) -> None:
    @slack.event("app_mention")
    def mention(request: Any) -> None:
        if request.payload["event_id"].endswith("001"):
            raise ValueError("this one")

    batch = envelopes(3, tag="Fails")
    results = transport_for("us").deliver_many([seal(e) for e in batch], timeout=10.0, wait=False)
    assert isinstance(results[0], Receipt) and isinstance(results[2], Receipt)
    failed = results[1]
    assert isinstance(failed, DeliveryError)
    assert (failed.reason, failed.retryable, failed.region_fault) == ("handler_failed", True, False)
    assert handled_ids() == {batch[0].id, batch[2].id}


def test_an_envelope_the_region_never_reached_in_time_is_not_sent(http_region: str) -> None:
    release = threading.Event()

    @slack.event("app_mention", atomic=False)
    def mention(request: Any) -> None:
        if request.payload["event_id"].endswith("001"):
            release.wait(10)

    batch = envelopes(3, tag="Late")
    try:
        results = transport_for("us").deliver_many([seal(e) for e in batch], timeout=1.5, wait=False)
    finally:
        release.set()
    assert isinstance(results[0], Receipt)
    assert isinstance(results[1], DeliveryTimeout) and not results[1].region_fault  # slow, not down
    assert isinstance(results[2], NotSent)


class OldRegion:
    """A region of an older release: the one-envelope endpoint only (404 for the batch endpoint)."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.paths.append(self.path)
                if self.path.endswith("/batch/"):
                    status, raw = 404, b"<html>not found</html>"
                else:
                    status, raw = 200, b" " + json.dumps({"outcome": "handled", "response": None}).encode() + b"\n"
                self.send_response(status)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{ENVELOPE_PATH}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def old_region() -> Iterator[OldRegion]:
    region = OldRegion()
    yield region
    region.stop()


def test_a_region_without_the_batch_endpoint_gets_envelopes_one_by_one(old_region: OldRegion) -> None:
    transport = HttpTransport("us", {"URL": old_region.url})
    batch = [seal(e) for e in envelopes(3, tag="Old")]
    results = transport.deliver_many(batch, timeout=10.0, wait=False)
    assert [r.outcome for r in results if isinstance(r, Receipt)] == ["handled"] * 3
    assert old_region.paths == [BATCH_PATH, ENVELOPE_PATH, ENVELOPE_PATH, ENVELOPE_PATH]
    transport.deliver_many(batch, timeout=10.0, wait=False)  # remembered: no batch tried again for a while
    assert old_region.paths[4:] == [ENVELOPE_PATH] * 3


def test_a_batch_refused_as_a_whole_is_one_failure_and_the_rest_not_sent() -> None:
    answer = http_answer("503 Service Unavailable", b'{"error": "overloaded"}')
    with ScriptedServer([Piece(answer)]) as server:
        results = HttpTransport("us", {"URL": server.url}).deliver_many(
            [seal(e) for e in envelopes(3, tag="Down")], timeout=5.0, wait=False
        )
    first, *rest = results
    assert isinstance(first, DeliveryError) and first.region_fault and not isinstance(first, NotSent)
    assert all(isinstance(r, NotSent) for r in rest)


def test_each_envelope_of_a_batch_carries_its_own_attempt_number(
    http_region: str, mentions: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hops: list[Hop] = []
    original = views.accept

    def recording(body: bytes, signature: str | None, **kwargs: Any) -> Any:
        accepted = original(body, signature, **kwargs)
        hops.append(accepted.hop)
        return accepted

    monkeypatch.setattr(views, "accept", recording)
    with delivering_batch([(3, None), (1, 2)]):
        transport_for("us").deliver_many([seal(e) for e in envelopes(2, tag="Numbers")], timeout=10.0, wait=False)
    assert [(hop.attempt, hop.replays) for hop in hops] == [(3, None), (1, 2)]


class FlakyLocal(LocalTransport):
    """The local transport, with the region failing as a whole on one envelope."""

    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        if Envelope.from_json(sealed.body).id == self.options["DOWN_AT"]:
            raise DeliveryError("connection_error: ConnectionRefusedError", retryable=True)
        return super().deliver(sealed, timeout=timeout, wait=wait)


def test_the_default_deliver_many_stops_at_a_region_fault(mentions: list[str]) -> None:
    batch = envelopes(3, tag="Local")
    transport = FlakyLocal("us", {"DOWN_AT": batch[1].id})
    results = transport.deliver_many([seal(e) for e in batch], timeout=10.0, wait=False)
    assert isinstance(results[0], Receipt) and results[0].outcome == Outcome.HANDLED
    assert isinstance(results[1], DeliveryError) and results[1].region_fault
    assert isinstance(results[2], NotSent)
    assert mentions == ["EvLocal000"]
