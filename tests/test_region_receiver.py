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
from silo_router.exceptions import EnvelopeRejected
from silo_router.region.handlers import slack
from silo_router.region.models import ProcessedEnvelope

from .envelope_corpus import MALFORMED_FIELDS, NOT_OBJECTS
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


def answer(response: Any) -> Any:
    """The JSON an endpoint answered (a receipt streams after a leading accepted marker)."""
    if response.streaming:
        raw = b"".join(response.streaming_content)
        assert raw[:1] == b" "
        return json.loads(raw)
    return json.loads(response.content)


def deliver(client: Client, envelope: Envelope) -> Any:
    sealed = seal(envelope)
    response = post(client, sealed.body, sealed.signature)
    assert response.status_code == 200
    return answer(response)


def test_handler_runs_once_however_often_the_envelope_arrives(client: Client) -> None:
    runs: list[str] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        runs.append(request.payload["event_id"])

    envelope = envelope_for(json.dumps(event_callback(event_id="EvR")).encode(), kind="event_callback:app_mention")
    sealed = seal(envelope)
    first = post(client, sealed.body, sealed.signature)
    assert first.status_code == 200
    assert answer(first) == {"outcome": "handled", "response": None}
    assert deliver(client, envelope)["outcome"] == "duplicate"
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


def test_handler_failure_rolls_back_its_effects_and_says_so(client: Client) -> None:
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
    assert response.status_code == 200  # accepted: the region is up, the handler failed
    assert answer(response) == {
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
        data = deliver(client, envelope)
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

    envelope = envelope_for(
        json.dumps(event_callback(event_id="EvT")).encode(), kind="event_callback:app_mention", key="k-tx"
    )
    assert deliver(client, envelope)["outcome"] == "handled"
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


KEY = "tests-control-to-region-key-0123456789abcdef"


def signed(data: Any) -> tuple[bytes, str]:
    body = json.dumps(data).encode()
    return body, signing.sign(body, key_id="k1", key=KEY)


def good_fields() -> dict[str, Any]:
    envelope = envelope_for(json.dumps(event_callback(event_id="EvM")).encode(), kind="event_callback:app_mention")
    return json.loads(envelope.to_json())


def test_an_envelope_with_no_handler_is_not_recorded_and_runs_once_one_exists(client: Client) -> None:
    envelope = envelope_for(json.dumps(event_callback(event_id="EvLate")).encode(), kind="event_callback:app_mention")
    assert deliver(client, envelope) == {"outcome": "unhandled", "response": None}
    assert not ProcessedEnvelope.objects.exists()
    runs: list[str] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        runs.append(request.payload["event_id"])

    assert deliver(client, envelope)["outcome"] == "handled"
    assert deliver(client, envelope)["outcome"] == "duplicate"
    assert runs == ["EvLate"]


@pytest.mark.parametrize(("change", "reason"), MALFORMED_FIELDS)
def test_malformed_but_signed_envelopes_are_refused_with_a_reason(
    client: Client, change: dict[str, Any], reason: str
) -> None:
    runs: list[Any] = []
    slack.event("app_mention")(runs.append)
    body, signature = signed({**good_fields(), **change})
    response = post(client, body, signature)
    assert response.status_code == 400
    assert answer(response)["error"] == reason
    assert runs == []
    assert not ProcessedEnvelope.objects.exists()


@pytest.mark.parametrize("raw", NOT_OBJECTS)
def test_envelopes_that_are_not_json_objects_are_400(client: Client, raw: bytes) -> None:
    response = post(client, raw, signing.sign(raw, key_id="k1", key=KEY))
    assert response.status_code == 400
    assert answer(response)["error"] == "malformed_envelope"


@pytest.mark.parametrize("region", ["", "mars", "eu"])
def test_a_monolith_refuses_envelopes_for_regions_it_does_not_serve(client: Client, settings: Any, region: str) -> None:
    """This monolith is ``us`` and reaches ``eu`` over http: only ``us`` envelopes run here."""
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "REGIONS": {"us": {"TRANSPORT": "local"}, "eu": {"TRANSPORT": "http", "URL": "http://127.0.0.1:9/"}},
    }
    runs: list[Any] = []
    slack.event("app_mention")(runs.append)
    body, signature = signed({**good_fields(), "region": region, "id": Envelope.make_id("k", region)})
    response = post(client, body, signature)
    assert response.status_code == 403
    assert answer(response)["error"] == "wrong_region"
    assert runs == []


US_KEY = "us-region-hop-key-0123456789abcdefghijklmnop"
EU_KEY = "eu-region-hop-key-0123456789abcdefghijklmnop"


def test_a_region_holds_only_its_own_key_so_another_regions_key_mints_nothing(client: Client, settings: Any) -> None:
    """A compromised eu silo holds eu's key: envelopes it mints for us are refused by us."""
    settings.SILO_ROUTER = {"MODE": "region", "REGION": "us", "SIGNING_KEYS": {"us-1": US_KEY}}
    runs: list[Any] = []
    slack.event("app_mention")(runs.append)
    body = envelope_for(json.dumps(event_callback()).encode(), kind="event_callback:app_mention").to_json()
    for key_id, key, why in (("eu-1", EU_KEY, "unknown_key"), ("us-1", EU_KEY, "signature_mismatch")):
        response = post(client, body, signing.sign(body, key_id=key_id, key=key))
        assert response.status_code == 403
        assert answer(response)["error"] == why
    assert runs == []
    response = post(client, body, signing.sign(body, key_id="us-1", key=US_KEY))
    assert answer(response)["outcome"] == "handled"
    assert len(runs) == 1


def test_control_signs_each_region_with_that_regions_key(settings: Any) -> None:
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "MODE": "control",
        "SIGNING_KEYS": {},
        "SIGNING_KEY_ID": None,
        "REGIONS": {
            "us": {"TRANSPORT": "local", "SIGNING_KEYS": {"us-1": US_KEY}},
            "eu": {
                "TRANSPORT": "local",
                "SIGNING_KEYS": {"eu-old": "o" * 40, "eu-2": EU_KEY},
                "SIGNING_KEY_ID": "eu-2",
            },
        },
    }
    for region, key_id, key in (("us", "us-1", US_KEY), ("eu", "eu-2", EU_KEY)):
        sealed = seal(envelope_for(b"{}", kind="event_callback:app_mention", region=region))
        assert signing.verify(sealed.body, sealed.signature, keys={key_id: key}, max_age=300) == key_id
    sealed = seal(envelope_for(b"{}", kind="event_callback:app_mention", region="eu"))
    with pytest.raises(EnvelopeRejected):
        signing.verify(sealed.body, sealed.signature, keys={"us-1": US_KEY}, max_age=300)


@pytest.fixture
def atomic_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)


def test_atomic_requests_do_not_turn_the_handlers_transaction_into_a_savepoint(
    client: Client, atomic_requests: None
) -> None:
    """The handler's transaction is a real one: what it commits is committed when it returns."""
    seen: list[tuple[bool, list[str]]] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        seen.append((connection.in_atomic_block, list(connection.savepoint_ids)))

    envelope = envelope_for(json.dumps(event_callback(event_id="EvA")).encode(), kind="event_callback:app_mention")
    assert deliver(client, envelope)["outcome"] == "handled"
    assert seen == [(True, [])]


def test_request_says_while_its_transaction_is_open(client: Client) -> None:
    seen: list[tuple[str, bool, bool]] = []

    @slack.event("app_mention")
    def in_transaction(request: Any) -> None:
        seen.append(("atomic", request.in_transaction, connection.in_atomic_block))

    @slack.event("reaction_added", atomic=False)
    def outside(request: Any) -> None:
        seen.append(("non-atomic", request.in_transaction, connection.in_atomic_block))
        assert not ProcessedEnvelope.objects.filter(pk=request.envelope.id).exists()  # recorded after it returns

    for event_type, key in (("app_mention", "k-a"), ("reaction_added", "k-b")):
        body = json.dumps(event_callback(event_type=event_type, event_id=key)).encode()
        assert deliver(client, envelope_for(body, kind=f"event_callback:{event_type}", key=key))["outcome"] == "handled"
    assert seen == [("atomic", True, True), ("non-atomic", False, False)]
    assert ProcessedEnvelope.objects.count() == 2


def test_a_non_atomic_handler_that_fails_is_not_recorded(client: Client) -> None:
    runs: list[int] = []

    @slack.event("reaction_added", atomic=False)
    def flaky(request: Any) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("upstream down")

    body = json.dumps(event_callback(event_type="reaction_added", event_id="EvF")).encode()
    envelope = envelope_for(body, kind="event_callback:reaction_added", key="k-f")
    assert deliver(client, envelope)["error"] == "handler_failed"
    assert deliver(client, envelope)["outcome"] == "handled"
    assert runs == [1, 1]


def test_after_commit_work_runs_once_the_receipt_has_been_written(client: Client) -> None:
    """A reply that waits on Slack does not hold back the receipt control is waiting for."""
    replies: list[str] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        request.after_commit(lambda: replies.append("sent"))

    sealed = seal(
        envelope_for(json.dumps(event_callback(event_id="EvW")).encode(), kind="event_callback:app_mention", key="k-w")
    )
    response = post(client, sealed.body, sealed.signature)
    chunks = iter(response.streaming_content)
    assert next(chunks) == b" "
    assert json.loads(next(chunks))["outcome"] == "handled"
    assert replies == []  # the whole receipt is out, the reply has not run yet
    assert list(chunks) == []
    response.close()
    assert replies == ["sent"]


def test_envelope_body_is_read_with_its_own_limit_not_djangos_upload_limit(client: Client, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    runs: list[int] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        runs.append(len(request.payload["event"]["text"]))

    event = event_callback(event_id="EvBig")
    event["event"]["text"] = "é😀" * 5000
    envelope = envelope_for(json.dumps(event, ensure_ascii=False).encode(), kind="event_callback:app_mention")
    assert deliver(client, envelope)["outcome"] == "handled"
    assert runs == [10000]
