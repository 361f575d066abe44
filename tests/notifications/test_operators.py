"""Operators see where one notification stopped and how many reached each stage: command and admin."""

from __future__ import annotations

import datetime
import io
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from example_project.fake_slack import FakeSlack
from silo_router.region import funnel
from silo_router.region.management.commands.silo_router_funnel import parse_since
from silo_router.region.notifications import Notification

from ..workspaces.conftest import T1, T2, Installed
from .conftest import click_envelope, send

pytestmark = pytest.mark.django_db(transaction=True)

ADMIN_LIST = "/admin/silo_router_region/notification/"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("silo_router_funnel", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def two_notifications(fake: FakeSlack, workspaces: dict[str, Installed]) -> tuple[Notification, Notification, Any]:
    """One notification clicked whose handler failed; one that Slack refused."""
    clicked = send(workspaces[T1])
    click = fake.message_click(channel=clicked.channel, ts=str(clicked.ts), action_id="acknowledge")
    envelope = click_envelope(workspaces[T1], click, notification_id=clicked.id)
    funnel.on_acted(envelope)  # where the receiver calls it: the envelope arrived
    funnel.on_handled(envelope, ok=False, error="LookupError")  # and its handler raised
    refused = send(workspaces[T1], name="deploy_finished", channel=workspaces[T2].channel)
    return clicked, refused, click


def test_the_command_shows_where_one_notification_stopped(two_notifications: Any) -> None:
    clicked, refused, click = two_notifications
    out = run("--notification", clicked.id)
    lines = out.splitlines()
    assert lines[0].startswith(f"notification {clicked.id} 'incident_opened' to {clicked.channel} ts {clicked.ts}")
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("stage")) + 1 : -1]
    assert [line.split()[0] for line in table] == ["triggered", "sent", "acted", "handled"]
    assert "FAILED" in lines[-2] and "LookupError" in lines[-2]
    assert lines[-1] == "stopped at handled: failed (LookupError)"
    assert click["response_url"] not in out and click["trigger_id"] not in out
    assert run("--notification", refused.id).splitlines()[-1] == "stopped at sent: failed (channel_not_found)"


def test_the_command_counts_each_stage_and_the_failures(two_notifications: Any) -> None:
    out = run()
    assert out.splitlines()[0] == "2 notifications"
    rows = {line.split()[0]: line.split(None, 3)[1:] for line in out.splitlines()[2:]}
    assert rows["triggered"] == ["2", "0", "-"]
    assert rows["sent"] == ["1", "1", "channel_not_found 1"]
    assert rows["acted"] == ["1", "0", "-"]
    assert rows["handled"] == ["0", "1", "LookupError 1"]
    assert rows["replied"] == ["0", "0", "-"]
    by_name = run("--name", "deploy_finished", "--since", "1d")
    assert by_name.splitlines()[0].startswith("1 notifications (name 'deploy_finished', since ")
    assert "0 notifications" in run("--since", "2999-01-01")


def test_the_command_refuses_what_it_cannot_show(db: None) -> None:
    with pytest.raises(CommandError, match="32 hex digits"):
        run("--notification", "not-an-id")
    with pytest.raises(CommandError, match="No notification"):
        run("--notification", "ab" * 16)
    with pytest.raises(CommandError, match="--since"):
        run("--since", "last tuesday")


def test_since_reads_dates_datetimes_and_ages() -> None:
    now = datetime.datetime(2026, 12, 2, 12, 0, tzinfo=datetime.UTC)
    assert parse_since("24h", now=now) == now - datetime.timedelta(hours=24)
    assert parse_since("30m", now=now) == now - datetime.timedelta(minutes=30)
    assert parse_since("2026-12-01") == datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)
    assert parse_since("2026-12-01T08:30:00+01:00") == datetime.datetime(2026, 12, 1, 7, 30, tzinfo=datetime.UTC)


def test_the_admin_shows_each_notifications_furthest_stage_and_the_funnel(
    client: Client, two_notifications: Any
) -> None:
    clicked, refused, click = two_notifications
    client.force_login(get_user_model().objects.create_superuser("ops", "ops@example.com", "pw"))
    listing = client.get(ADMIN_LIST)
    assert listing.status_code == 200
    page = listing.content.decode()
    assert "handled (failed: LookupError)" in page
    assert "sent (failed: channel_not_found)" in page
    assert "Funnel of 2 notifications" in page
    assert "channel_not_found 1" in page and "LookupError 1" in page
    named = client.get(ADMIN_LIST, {"name__exact": "deploy_finished"}).content.decode()
    assert "Funnel of 1 notifications" in named and "named deploy_finished" in named

    detail = client.get(f"{ADMIN_LIST}{clicked.id}/change/")
    assert detail.status_code == 200
    html = detail.content.decode()
    for stage in ("triggered", "sent", "acted", "handled"):
        assert f"<td>{stage}</td>" in html
    assert "<td>LookupError</td>" in html
    assert f"trace {clicked.id}" in html
    for capability in (click["response_url"], click["trigger_id"]):
        assert capability not in page and capability not in html
    assert client.get(f"{ADMIN_LIST}add/").status_code == 403
