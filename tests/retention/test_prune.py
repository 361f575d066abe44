"""Retention: which payloads go when, with their attempts, in batches, never loaded into Python."""

from __future__ import annotations

import datetime
import io
import json
import urllib.parse
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models.signals import post_delete, pre_delete
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from silo_router.control import beat, delivery, rerouting, retention, tasks
from silo_router.control.models import Payload, PayloadAttempt
from silo_router.envelope import Envelope

pytestmark = pytest.mark.django_db

DAY = datetime.timedelta(days=1)
RESPONSE_URL = "https://hooks.slack.com/actions/T0US00001/1/SeCrEtCaPaBiLiTy"


def envelope(key: str, region: str = "us") -> Envelope:
    body = {"type": "block_actions", "team": {"id": "T0US00001"}, "response_url": RESPONSE_URL, "user": {"id": "U1"}}
    return Envelope(
        id=Envelope.make_id(key, region),
        idempotency_key=key,
        provider="slack",
        kind="block_actions:resolve_dialog",
        region=region,
        body=urllib.parse.urlencode({"payload": json.dumps(body)}),
        headers={"content-type": "application/x-www-form-urlencoded", "x-slack-signature": "v0=abc"},
        strategy="async",
        organization_ids=("101",),
        integration_id="7",
        trace={"sentry-trace": "0" * 31 + "1-" + "0" * 15 + "1-1"},
    )


def stored(
    key: str,
    *,
    state: str,
    age: datetime.timedelta,
    delivered_ago: datetime.timedelta | None = None,
    attempted_ago: datetime.timedelta | None = None,
    attempts: int = 0,
    region: str = "us",
) -> str:
    """A payload created ``age`` ago in ``state``, with ``attempts`` timeline rows."""
    (row,) = delivery.store([envelope(key, region=region)])
    now = timezone.now()
    Payload.objects.filter(pk=row.pk).update(
        state=state,
        created_at=now - age,
        delivered_at=now - delivered_ago if delivered_ago is not None else None,
        last_attempt_at=now - attempted_ago if attempted_ago is not None else None,
        region="" if state == "unroutable" else region,
    )
    for number in range(1, attempts + 1):
        PayloadAttempt.objects.create(
            payload_id=row.pk, number=number, started_at=now - age, outcome="delivered", receipt="handled"
        )
    return str(row.pk)


def remaining() -> set[str]:
    return {str(pk) for pk in Payload.objects.values_list("pk", flat=True)}


def test_delivered_payloads_go_after_seven_days_with_their_attempts() -> None:
    old = stored("old", state="delivered", age=9 * DAY, delivered_ago=8 * DAY, attempts=2)
    recent = stored("recent", state="delivered", age=8 * DAY, delivered_ago=6 * DAY, attempts=1)
    fresh = stored("fresh", state="delivered", age=DAY, delivered_ago=DAY)
    result = retention.prune()
    assert remaining() == {recent, fresh}
    assert result.rows["delivered"] == 1 and result.attempts["delivered"] == 2
    assert not PayloadAttempt.objects.filter(payload_id=old).exists()
    assert PayloadAttempt.objects.filter(payload_id=recent).count() == 1


def test_failed_and_unroutable_payloads_stay_thirty_days_and_active_ones_always() -> None:
    kept = {
        stored("failed-recent", state="failed", age=29 * DAY, attempted_ago=29 * DAY),
        # Created long ago, but attempted again (a replay that failed) within the period.
        stored("failed-retried", state="failed", age=40 * DAY, attempted_ago=3 * DAY),
        stored("unroutable-recent", state="unroutable", age=29 * DAY),
        stored("pending-old", state="pending", age=90 * DAY),
        stored("in-flight-old", state="in_flight", age=90 * DAY, attempted_ago=90 * DAY),
    }
    stored("failed-old", state="failed", age=31 * DAY, attempted_ago=31 * DAY, attempts=12)
    stored("failed-never-attempted", state="failed", age=31 * DAY)
    stored("unroutable-old", state="unroutable", age=31 * DAY)
    result = retention.prune()
    assert remaining() == kept
    assert (result.rows["failed"], result.rows["unroutable"], result.attempts["failed"]) == (2, 1, 12)


def test_settings_change_the_periods(settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "DELIVERED_RETENTION": 3600, "FAILED_RETENTION": 2 * 86400}
    stored("delivered-2h", state="delivered", age=DAY, delivered_ago=datetime.timedelta(hours=2))
    stored("failed-3d", state="failed", age=3 * DAY, attempted_ago=3 * DAY)
    kept = stored("failed-1d", state="failed", age=DAY, attempted_ago=DAY)
    retention.prune()
    assert remaining() == {kept}


def test_batches_are_small_and_load_no_row(settings: Any) -> None:
    """Each batch deletes at most PRUNE_BATCH rows; no payload is read into Python, no signal runs."""
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "PRUNE_BATCH": 3}
    for n in range(10):
        stored(f"old-{n}", state="delivered", age=10 * DAY, delivered_ago=9 * DAY, attempts=1)
    signalled: list[Any] = []

    def receiver(**kwargs: Any) -> None:
        signalled.append(kwargs["instance"])

    pre_delete.connect(receiver, sender=Payload)
    post_delete.connect(receiver, sender=PayloadAttempt)
    try:
        with CaptureQueriesContext(connection) as queries:
            result = retention.prune()
    finally:
        pre_delete.disconnect(receiver, sender=Payload)
        post_delete.disconnect(receiver, sender=PayloadAttempt)
    assert result.rows["delivered"] == 10 and result.attempts["delivered"] == 10
    assert result.batches >= 4  # 3 + 3 + 3 + 1 delivered, then one empty batch per other category
    assert signalled == []
    selects = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("SELECT")]
    assert selects and not any('"envelope"' in sql for sql in selects)
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("DELETE")]
    assert all("LIMIT 3" in sql or "IN (" in sql for sql in deletes)


def test_a_run_stops_at_its_time_limit_and_the_next_goes_on(settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "PRUNE_BATCH": 2}
    for n in range(5):
        stored(f"old-{n}", state="delivered", age=10 * DAY, delivered_ago=9 * DAY)
    first = retention.prune(max_seconds=1e-9)
    assert not first.finished and len(remaining()) == 5
    second = retention.prune(max_seconds=60)
    assert second.finished and remaining() == set()


def test_a_dry_run_counts_and_deletes_nothing(settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "BODY_RETENTION": 3600}
    stored("old", state="delivered", age=9 * DAY, delivered_ago=8 * DAY)
    stored("body-old", state="delivered", age=DAY, delivered_ago=DAY)
    stored("failed-old", state="failed", age=31 * DAY, attempted_ago=31 * DAY)
    before = {str(p.pk): p.envelope for p in Payload.objects.all()}
    result = retention.prune(dry_run=True)
    assert result.rows == {"delivered": 1, "failed": 1, "unroutable": 0, "bodies": 2}
    assert {str(p.pk): p.envelope for p in Payload.objects.all()} == before


def test_bodies_are_dropped_after_body_retention_and_the_rest_is_kept(settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "BODY_RETENTION": 3600}
    old = stored("delivered-2h", state="delivered", age=DAY, delivered_ago=datetime.timedelta(hours=2))
    young = stored("delivered-10m", state="delivered", age=DAY, delivered_ago=datetime.timedelta(minutes=10))
    failed = stored("failed", state="failed", age=DAY, attempted_ago=DAY)
    untouched = {pk: Payload.objects.get(pk=pk).envelope for pk in (young, failed)}
    result = retention.prune()
    assert result.rows["bodies"] == 1
    row = Payload.objects.get(pk=old)
    assert retention.is_body_dropped(row.envelope)
    stub = json.loads(row.envelope)
    assert "body" not in stub and "headers" not in stub and RESPONSE_URL not in row.envelope
    assert stub["id"] == old and stub["region"] == "us" and stub["kind"] == "block_actions:resolve_dialog"
    assert stub["organization_ids"] == ["101"] and stub["integration_id"] == "7" and stub["trace"]
    assert row.state == "delivered" and row.delivered_at is not None and row.idempotency_key == "delivered-2h"
    assert {pk: Payload.objects.get(pk=pk).envelope for pk in (young, failed)} == untouched
    assert retention.prune().rows["bodies"] == 0  # a stub is not dropped again


def test_without_body_retention_bodies_stay() -> None:
    pk = stored("delivered-6d", state="delivered", age=6 * DAY, delivered_ago=6 * DAY)
    before = Payload.objects.get(pk=pk).envelope
    assert retention.prune().rows["bodies"] == 0
    assert Payload.objects.get(pk=pk).envelope == before


def test_a_stored_envelope_begins_with_its_body() -> None:
    """The body index relies on it: canonical JSON, sorted keys, and no field sorts before ``body``."""
    raw = envelope("prefix").to_json().decode()
    assert raw.startswith(retention.ENVELOPE_PREFIX)
    stub = retention.stub_of(raw, dropped_at=timezone.now())
    assert stub.startswith(retention.BODY_DROPPED_PREFIX) and not stub.startswith(retention.ENVELOPE_PREFIX)


def test_a_corrupt_envelope_becomes_a_stub_too(settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "BODY_RETENTION": 60}
    pk = stored("corrupt", state="delivered", age=DAY, delivered_ago=DAY)
    Payload.objects.filter(pk=pk).update(envelope='{"body": "unterminated')
    assert retention.prune().rows["bodies"] == 1
    assert json.loads(Payload.objects.get(pk=pk).envelope)["corrupt"] is True


@pytest.fixture
def body_dropped(settings: Any) -> str:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "BODY_RETENTION": 3600}
    pk = stored("dropped", state="delivered", age=DAY, delivered_ago=DAY, attempts=1)
    retention.prune()
    return pk


def test_a_replay_of_a_dropped_body_is_refused_with_its_reason(body_dropped: str) -> None:
    result = rerouting.replay([body_dropped])
    assert (result.replayed, result.body_dropped) == (0, 1)
    assert "1 not replayed: its body was dropped after BODY_RETENTION" in result.summary()
    assert delivery.replay([body_dropped]) == 0
    assert Payload.objects.get(pk=body_dropped).state == "delivered"
    out = io.StringIO()
    call_command("silo_router_replay", "--state", "delivered", "--id", body_dropped, stdout=out)
    assert "replayed 0 payloads; 1 refused: its body was dropped" in out.getvalue()


def test_the_admin_shows_and_refuses_a_dropped_body(body_dropped: str, settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    User.objects.create_superuser("root", password="pw-root")
    client = Client()
    assert client.login(username="root", password="pw-root")
    page = client.get(f"/admin/silo_router_control/payload/{body_dropped}/change/")
    assert page.status_code == 200 and "body_dropped_at" in page.content.decode()
    assert client.get("/admin/silo_router_control/payload/").status_code == 200
    answer = client.post(
        "/admin/silo_router_control/payload/",
        {"action": "replay_selected", "_selected_action": [body_dropped], "index": "0"},
        follow=True,
    )
    assert "its body was dropped after BODY_RETENTION" in answer.content.decode()
    assert Payload.objects.get(pk=body_dropped).state == "delivered"


def test_the_command_prints_one_line_per_category(settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "BODY_RETENTION": 3600}
    stored("old", state="delivered", age=9 * DAY, delivered_ago=8 * DAY, attempts=3)
    stored("young", state="delivered", age=DAY, delivered_ago=DAY)
    out = io.StringIO()
    call_command("silo_router_prune", "--dry-run", stdout=out)
    assert out.getvalue().splitlines() == [
        "delivered: 1 payloads would be deleted (delivered more than 7 days ago)",
        "failed: 0 payloads would be deleted (created and last attempted more than 30 days ago, not replayed)",
        "unroutable: 0 payloads would be deleted (created more than 30 days ago, not routed)",
        "bodies: 2 would be dropped (delivered more than 1 hours ago)",
    ]
    assert Payload.objects.count() == 2
    out = io.StringIO()
    call_command("silo_router_prune", "--batch-size", "10", "--max-seconds", "60", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0] == "delivered: 1 payloads deleted (delivered more than 7 days ago, with 3 attempts)"
    assert lines[3] == "bodies: 1 dropped (delivered more than 1 hours ago)"
    assert Payload.objects.count() == 1


def test_the_command_refuses_bad_arguments() -> None:
    for argv in (["--batch-size", "0"], ["--batch-size", "many"], ["--max-seconds", "-1"]):
        with pytest.raises(CommandError):
            call_command("silo_router_prune", *argv)


def test_the_command_says_when_bodies_are_kept() -> None:
    out = io.StringIO()
    call_command("silo_router_prune", stdout=out)
    assert out.getvalue().splitlines()[-1] == "bodies: kept (BODY_RETENTION is None)"


def test_the_task_and_its_beat_entry() -> None:
    stored("old", state="delivered", age=9 * DAY, delivered_ago=8 * DAY)
    entry = beat.retention_schedule(every=600)["silo-router-prune"]
    assert entry["task"] == beat.PRUNE_TASK == tasks.prune.name
    assert entry["kwargs"]["max_seconds"] < entry["schedule"]
    counts = tasks.prune.apply(kwargs=entry["kwargs"]).get()
    assert counts["delivered"] == 1 and counts["finished"] is True
    assert Payload.objects.count() == 0
