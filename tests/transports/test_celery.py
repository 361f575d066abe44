"""The celery transport and confirmations: a real worker on an in-memory broker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from celery.signals import before_task_publish

from silo_router import signing
from silo_router.control import delivery
from silo_router.control.models import Payload
from silo_router.control.tasks import confirm_delivery
from silo_router.envelope import SealedEnvelope, decrypt_from_queue, encrypt_for_queue, seal
from silo_router.exceptions import EnvelopeRejected
from silo_router.region.handlers import slack
from silo_router.transports import DeliveryError, transport_for

from ..celery_app import app
from .conftest import make_envelope

pytestmark = pytest.mark.django_db(transaction=True)

US_KEY = "us-region-hop-key-0123456789abcdefghijklmnop"
EU_KEY = "eu-region-hop-key-0123456789abcdefghijklmnop"


@pytest.fixture
def per_region_keys(settings: Any) -> None:
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "SIGNING_KEYS": {},
        "SIGNING_KEY_ID": None,
        "REGIONS": {
            "us": {"TRANSPORT": "celery", "SIGNING_KEYS": {"us-1": US_KEY}},
            "eu": {"TRANSPORT": "celery", "SIGNING_KEYS": {"eu-1": EU_KEY}},
        },
    }


def test_a_region_can_only_confirm_its_own_payloads(per_region_keys: None) -> None:
    """eu holds eu's key: a confirmation it signs for a us payload is refused."""
    (payload,) = delivery.store([make_envelope(event_id="EvConfirm", region="us")])
    pid = str(payload.pk)
    assert delivery.claim(pid) is not None
    message = signing.confirmation_message(pid, "failed", "forged")
    with pytest.raises(EnvelopeRejected):
        confirm_delivery(pid, "failed", "forged", signing.sign(message, key_id="eu-1", key=EU_KEY))
    assert Payload.objects.get(pk=pid).state == Payload.State.IN_FLIGHT
    good = signing.sign(signing.confirmation_message(pid, "handled", ""), key_id="us-1", key=US_KEY)
    assert confirm_delivery(pid, "handled", "", good) == Payload.State.DELIVERED


@pytest.fixture
def region_worker(settings: Any) -> Iterator[None]:
    """A real Celery worker thread consuming region us's queue, with an in-memory result backend.

    It has a Celery app of its own (made current for the test), so the suite's eager app
    and whatever backend it already built are left alone.
    """
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "REGIONS": {"us": {"TRANSPORT": "celery"}}}
    import silo_router.region.tasks  # noqa: F401 - the region task the worker runs (a shared task)

    worker_app = Celery("region-worker-tests", broker="memory://", backend="cache+memory://")
    worker_app.set_current()
    try:
        with start_worker(worker_app, pool="solo", perform_ping_check=False, queues=["silo_router.region.us"]):
            yield
    finally:
        app.set_current()
        app.set_default()  # start_worker made the worker's app the default of every new thread


def test_a_synchronous_answer_comes_back_through_the_result_backend(region_worker: None) -> None:
    @slack.event("app_mention")
    def mention(request: Any) -> dict[str, Any]:
        return {"seen": request.payload["event_id"]}

    receipt = transport_for("us").deliver(seal(make_envelope(event_id="EvCel")), timeout=10.0, wait=True)
    assert (receipt.outcome, receipt.response) == ("handled", {"seen": "EvCel"})


def test_a_region_worker_refusing_the_key_holds(region_worker: None) -> None:
    sealed = seal(make_envelope(event_id="EvCelKey"))
    forged = SealedEnvelope(body=sealed.body, signature=signing.sign(sealed.body, key_id="k1", key="x" * 40))
    with pytest.raises(DeliveryError) as info:
        transport_for("us").deliver(forged, timeout=10.0, wait=True)
    assert (info.value.reason, info.value.hold) == ("signature_mismatch", True)


def test_the_broker_message_holds_no_capability_in_clear(region_worker: None) -> None:
    """The envelope body (response_url, trigger_id) crosses the broker encrypted, and still runs."""
    capability = "https://hooks.slack.com/actions/T0US00001/1/SeCrEtCaPaBiLiTy"
    published: list[Any] = []

    def capture(body: Any = None, **kwargs: Any) -> None:
        published.append(repr(body))

    ran: list[str] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        ran.append(request.payload["event"]["text"])

    before_task_publish.connect(capture, weak=False)
    try:
        receipt = transport_for("us").deliver(
            seal(make_envelope(event_id="EvEnc", text=capability)), timeout=10.0, wait=True
        )
    finally:
        before_task_publish.disconnect(capture)
    assert receipt.outcome == "handled"
    assert ran == [capability]
    assert published, "no message was published"
    assert all("SeCrEtCaPaBiLiTy" not in message and "hooks.slack.com" not in message for message in published)


def test_a_queued_envelope_sealed_for_another_region_does_not_open(per_region_keys: None) -> None:
    sealed = seal(make_envelope(event_id="EvOther", region="eu"))
    token = encrypt_for_queue(sealed, region="eu")
    with pytest.raises(EnvelopeRejected):
        decrypt_from_queue(token, sealed.signature.replace("kid=eu-1", "kid=us-1"), region="us")
    assert decrypt_from_queue(token, sealed.signature, region="eu") == sealed.body
