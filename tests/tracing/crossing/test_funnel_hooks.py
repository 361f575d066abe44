"""The region tells the notification funnel when a click was acted on and when it was handled."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from silo_router.envelope import Envelope, seal
from silo_router.region import funnel
from silo_router.region.handlers import slack
from silo_router.transports import DeliveryError, transport_for

from .support import click_envelope

pytestmark = pytest.mark.django_db(transaction=True)

NOTIFICATION = "6b0f5c1e2d3a4b5c8d7e6f5a4b3c2d1e"


@pytest.fixture
def stages(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The funnel hooks' calls, in order: ``("acted", envelope id)``, ``("handled", envelope id, ok, error)``."""
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(funnel, "on_acted", lambda envelope: calls.append(("acted", envelope.id)))
    monkeypatch.setattr(
        funnel,
        "on_handled",
        lambda envelope, *, ok, error=None: calls.append(("handled", envelope.id, ok, error)),
    )
    return calls


def deliver(envelope: Envelope) -> Any:
    try:
        return transport_for("us").deliver(seal(envelope), timeout=10.0, wait=True).outcome
    except DeliveryError as exc:
        return exc.reason


def test_a_click_is_acted_on_once_and_handled(stages: list[tuple[Any, ...]]) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        pass

    envelope = click_envelope(key="slack:click:funnel", notification_id=NOTIFICATION)
    assert [deliver(envelope), deliver(envelope)] == ["handled", "duplicate"]
    assert stages == [("acted", envelope.id), ("handled", envelope.id, True, None)]


def test_a_failing_handler_is_handled_not_ok_with_the_error_class(stages: list[tuple[Any, ...]]) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        raise KeyError(request.inbound.response_url)

    envelope = click_envelope(key="slack:click:funnel-fails", notification_id=NOTIFICATION)
    assert "KeyError" in deliver(envelope)
    assert stages == [("acted", envelope.id), ("handled", envelope.id, False, "KeyError")]


def test_a_click_with_no_handler_is_acted_on_only(stages: list[tuple[Any, ...]]) -> None:
    envelope = click_envelope(key="slack:click:funnel-unhandled", notification_id=NOTIFICATION)
    assert deliver(envelope) == "unhandled"
    assert stages == [("acted", envelope.id)]


def test_an_envelope_of_no_notification_tells_the_funnel_nothing(stages: list[tuple[Any, ...]]) -> None:
    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        pass

    assert deliver(click_envelope(key="slack:click:no-funnel")) == "handled"
    assert stages == []


def test_a_funnel_hook_that_raises_does_not_fail_the_delivery(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(envelope: Envelope, **facts: Any) -> None:
        raise RuntimeError("the funnel's table is gone")

    monkeypatch.setattr(funnel, "on_acted", broken)
    monkeypatch.setattr(funnel, "on_handled", broken)
    ran: list[str] = []

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        ran.append(request.envelope.id)

    envelope = click_envelope(key="slack:click:funnel-broken", notification_id=NOTIFICATION)
    with caplog.at_level(logging.ERROR, logger="silo_router.region"):
        assert deliver(envelope) == "handled"
    assert ran == [envelope.id]
    failures = [record for record in caplog.records if "funnel" in record.getMessage()]
    assert len(failures) == 2 and all(record.exc_info for record in failures)
