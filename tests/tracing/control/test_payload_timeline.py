"""The payload's timeline in the admin: stored, attempts, delivered, handled, and its trace."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from silo_router.control.models import Payload, PayloadAttempt
from silo_router.region.handlers import slack

from ...sentry_capture import Captured
from ...slack_signing import block_actions, interactive_body, post_slack

pytestmark = pytest.mark.django_db(transaction=True)

TRIGGER_ID = "13345224609.738474920.TrIgGeRsEcReT"
RESPONSE_URL = "https://hooks.slack.com/actions/T0US00001/1/ReSpOnSeUrLsEcReT"
TRACE_URL = "https://sentry.example.com/organizations/acme/traces/{trace_id}/"


@pytest.fixture
def staff(settings: Any) -> Client:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    User.objects.create_user("operator", password="pw-operator", is_staff=True, is_superuser=True)
    browser = Client()
    assert browser.login(username="operator", password="pw-operator")
    return browser


def clicked(client: Client) -> Payload:
    """A click with capabilities in it, delivered and handled."""

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        pass

    payload = {**block_actions(trigger_id=TRIGGER_ID), "response_url": RESPONSE_URL}
    assert post_slack(client, interactive_body(payload)).status_code == 200
    return Payload.objects.get()


def page_of(staff: Client, payload: Payload) -> str:
    response = staff.get(f"/admin/silo_router_control/payload/{payload.pk}/change/")
    assert response.status_code == 200
    return response.content.decode()


def timeline_rows(page: str) -> list[list[str]]:
    """The timeline's rows as cell texts (what, outcome, duration, detail, trace), without the time."""
    table = page[page.index('class="silo-router-timeline"') :]
    body = table[table.index("<tbody>") : table.index("</tbody>")]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    cells = [
        [html.unescape(re.sub(r"<[^>]+>", "", cell)).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
        for row in rows
    ]
    return [row[1:] for row in cells]


def test_the_timeline_shows_every_step_and_the_trace(
    client: Client, installations: Any, captured: Captured, staff: Client, settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "TRACE_URL": TRACE_URL}
    payload = clicked(client)
    request = captured.one("silo_router.control.request")
    assert payload.trace_id == request.trace_id
    # An earlier attempt that failed, with a capability in its error text.
    PayloadAttempt.objects.create(
        payload=payload,
        number=1,
        started_at=payload.created_at,
        duration_ms=12.5,
        outcome="retry",
        error=f"http_502: proxy said see {RESPONSE_URL}",
    )
    page = page_of(staff, payload)
    text = html.unescape(page)
    attempt = PayloadAttempt.objects.get(payload=payload, outcome="delivered")
    trace = request.trace_id
    assert attempt.trace_id == trace
    rows = timeline_rows(page)
    assert [row[:2] for row in rows] == [
        ["stored", "async"],
        ["attempt 1", "retry"],
        ["attempt 1", "delivered"],
        ["handled", "handled"],
        ["delivered", "-"],
    ]
    assert rows[0][4] == trace
    assert rows[1][2:] == ["12.5 ms", "http_502: proxy said see [redacted]", "-"]
    assert rows[2][2].endswith(" ms")
    assert rows[2][4] == trace
    assert rows[3][3] == "the region's receipt"
    assert f'<a href="{TRACE_URL.format(trace_id=trace)}">{trace}</a>' in page
    for secret in (TRIGGER_ID, RESPONSE_URL, "TrIgGeRsEcReT", "ReSpOnSeUrLsEcReT"):
        assert secret not in text, secret


def test_without_a_trace_url_the_trace_id_is_shown_unlinked(
    client: Client, installations: Any, captured: Captured, staff: Client
) -> None:
    payload = clicked(client)
    page = page_of(staff, payload)
    assert payload.trace_id and payload.trace_id in page
    assert "/traces/" not in page


def test_a_trace_url_without_its_placeholder_links_nothing(
    client: Client, installations: Any, captured: Captured, staff: Client, settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "TRACE_URL": "javascript:alert(1)//{trace}"}
    payload = clicked(client)
    page = page_of(staff, payload)
    assert "javascript:" not in page
    assert payload.trace_id in page


def test_a_failed_payload_says_where_it_stopped(client: Client, installations: Any, staff: Client) -> None:
    payload = clicked(client)
    Payload.objects.filter(pk=payload.pk).update(state="failed", delivered_at=None, last_error="http_500: boom")
    PayloadAttempt.objects.filter(payload=payload).update(receipt="", outcome="failed", error="http_500: boom")
    payload.refresh_from_db()
    rows = timeline_rows(page_of(staff, payload))
    assert [row[0] for row in rows] == ["stored", "attempt 1", "failed"]
    assert rows[-1][3] == "http_500: boom"
