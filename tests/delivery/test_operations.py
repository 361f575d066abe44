"""What operators use: the admin's region summary and replay action, and the two commands."""

from __future__ import annotations

import datetime
import io
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from silo_router.control.models import Payload, RegionCircuit

from .conftest import RegionServer
from .test_delivery import make

pytestmark = pytest.mark.django_db(transaction=True)


def fail(ids: list[str], *, error: str = "http_500: handler_failed") -> None:
    Payload.objects.filter(pk__in=ids).update(state="failed", attempts=12, last_error=error)


@pytest.fixture
def staff() -> Client:
    User.objects.create_user("operator", password="pw-operator-1", is_staff=True, is_superuser=True)
    client = Client()
    assert client.login(username="operator", password="pw-operator-1")
    return client


def test_admin_lists_payloads_with_a_summary_per_region(
    staff: Client, http_regions: RegionServer, published: list[Any]
) -> None:
    fail(make(2, region="us", key="a"))
    make(3, region="eu", key="b")
    RegionCircuit.objects.create(region="eu", state="open", retry_at=timezone.now() + datetime.timedelta(minutes=1))
    page = staff.get("/admin/silo_router_control/payload/").content.decode()
    assert "Delivery by region" in page
    rows = re.findall(r"<tr>\s*<td>(\w+)</td><td>(\d+)</td><td>(\d+)</td>\s*<td>(\d+)</td>", page)
    assert ("eu", "3", "0", "0") in rows and ("us", "0", "0", "2") in rows
    assert "open until" in page
    assert staff.get("/admin/silo_router_control/payload/?state__exact=failed&region=us").status_code == 200


def test_replay_by_filter_from_the_admin(staff: Client, http_regions: RegionServer, published: list[Any]) -> None:
    us_failed = make(2, region="us", key="a")
    eu_failed = make(2, region="eu", key="b")
    fail(us_failed + eu_failed)
    response = staff.post(
        "/admin/silo_router_control/payload/?region=us&state__exact=failed",
        {"action": "replay_selected", "select_across": "1", "index": "0", "_selected_action": us_failed[:1]},
    )
    assert response.status_code == 302
    pending = {str(pk) for pk in Payload.objects.filter(state="pending").values_list("pk", flat=True)}
    assert pending == set(us_failed)
    assert {pid for pid, _ in published} == set(us_failed)
    assert Payload.objects.filter(pk__in=eu_failed, state="failed").count() == 2


def test_status_command(http_regions: RegionServer, published: list[Any]) -> None:
    make(2, region="us")
    fail(make(1, region="eu", key="x"))
    out = io.StringIO()
    call_command("silo_router_status", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:7] == ["region", "pending", "in_flight", "failed", "unroutable", "delivered", "oldest"]
    assert lines[1].split()[:6] == ["eu", "0", "0", "1", "0", "0"]
    assert lines[2].split()[:6] == ["us", "2", "0", "0", "0", "0"]
    assert "unroutable" not in out.getvalue().split("\n", 1)[1]  # no advice when there is nothing to do


def test_replay_command_with_filters(http_regions: RegionServer, published: list[Any]) -> None:
    us = make(2, region="us", key="a")
    eu = make(1, region="eu", key="b")
    fail(us + eu)
    out = io.StringIO()
    call_command("silo_router_replay", "--region", "us", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "would replay 2 payloads"
    call_command("silo_router_replay", "--region", "us", "--kind", "event_callback:app_mention", stdout=out)
    assert "replayed 2 payloads" in out.getvalue()
    assert Payload.objects.filter(state="failed").count() == 1
    future = (timezone.now() + datetime.timedelta(days=1)).isoformat()
    call_command("silo_router_replay", "--since", future, stdout=out)
    assert "replayed 0 payloads" in out.getvalue()
