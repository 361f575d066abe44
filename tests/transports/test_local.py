"""The local transport: a total deadline in-process, replies after the receipt, errors mapped."""

from __future__ import annotations

import ast
import threading
from pathlib import Path
from typing import Any

import pytest

import silo_router.transports.local as local_module
from silo_router.envelope import seal
from silo_router.plugins import clear_caches
from silo_router.region.handlers import slack
from silo_router.region.models import ProcessedEnvelope
from silo_router.transports import DeliveryError, DeliveryTimeout, transport_for
from silo_router.transports.base import Transport

from .conftest import make_envelope

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_slow_handler_costs_at_most_the_deadline_in_process() -> None:
    release = threading.Event()

    @slack.event("app_mention", atomic=False)  # see test_http: one shared in-memory SQLite
    def slow(request: Any) -> None:
        release.wait(10)

    try:
        with pytest.raises(DeliveryTimeout) as info:
            transport_for("us").deliver(seal(make_envelope(event_id="EvLocalSlow")), timeout=0.5, wait=True)
    finally:
        release.set()
    assert not info.value.region_fault  # it had accepted the envelope


def test_after_commit_replies_run_after_the_receipt_is_returned() -> None:
    reply_may_finish = threading.Event()
    replied = threading.Event()

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        def reply() -> None:
            reply_may_finish.wait(10)
            replied.set()

        request.after_commit(reply)

    receipt = transport_for("us").deliver(seal(make_envelope(event_id="EvLocalReply")), timeout=5.0, wait=True)
    assert receipt.outcome == "handled"
    assert not replied.is_set()  # the receipt came back while the reply was still waiting
    reply_may_finish.set()
    assert replied.wait(10)


def test_any_region_exception_becomes_a_delivery_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(body: bytes, signature: str | None, *, region: str, on_accept: Any, hop: Any) -> Any:
        on_accept()
        raise RuntimeError("the region's database is gone")

    monkeypatch.setattr(local_module, "_receiver", broken)
    with pytest.raises(DeliveryError) as info:
        transport_for("us").deliver(seal(make_envelope()), timeout=5.0, wait=True)
    assert info.value.retryable and info.value.region_fault
    assert "RuntimeError" in info.value.reason


def test_a_wrongly_signed_envelope_holds_instead_of_failing() -> None:
    sealed = seal(make_envelope())
    other = seal(make_envelope(event_id="EvOther"))
    with pytest.raises(DeliveryError) as info:
        transport_for("us").deliver(type(sealed)(body=sealed.body, signature=other.signature), timeout=5.0, wait=True)
    assert (info.value.reason, info.value.hold) == ("signature_mismatch", True)
    assert not ProcessedEnvelope.objects.exists()


def test_a_body_at_max_body_size_of_wide_characters_is_handled_in_process(settings: Any) -> None:
    from .test_http import wide_text

    seen: list[int] = []

    @slack.event("app_mention")
    def mention(request: Any) -> None:
        seen.append(len(request.payload["event"]["text"].encode()))

    text = wide_text(settings)
    receipt = transport_for("us").deliver(
        seal(make_envelope(event_id="EvWideLocal", text=text)), timeout=30.0, wait=False
    )
    assert receipt.outcome == "handled"
    assert seen == [len(text.encode())]


def test_the_local_transport_does_not_import_the_region() -> None:
    tree = ast.parse(Path(local_module.__file__).read_text())
    imported = {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} | {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert not [name for name in imported if name.startswith("silo_router.region")]


class ClosingTransport(Transport):
    closed: list[str] = []

    def deliver(self, sealed: Any, *, timeout: float, wait: bool) -> Any:
        raise DeliveryError("not used", retryable=False)

    def close(self) -> None:
        ClosingTransport.closed.append(self.region)


def test_cached_transports_are_closed_when_dropped(settings: Any) -> None:
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "REGIONS": {"ap": {"TRANSPORT": "tests.transports.test_local.ClosingTransport"}},
    }
    assert transport_for("ap") is transport_for("ap")
    clear_caches()
    assert ClosingTransport.closed == ["ap"]
