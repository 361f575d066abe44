"""Retention never waits for a row another transaction holds (PostgreSQL: ``SKIP LOCKED``)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction

from silo_router.control import retention
from silo_router.control.models import Payload

from .test_prune import DAY, stored


@pytest.mark.django_db(transaction=True)
def test_a_row_locked_elsewhere_is_skipped_and_pruned_later() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time: a batch waits for the lock (see test_prune)")
    locked = stored("locked", state="delivered", age=9 * DAY, delivered_ago=8 * DAY, attempts=1)
    for n in range(3):
        stored(f"old-{n}", state="delivered", age=9 * DAY, delivered_ago=8 * DAY)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                Payload.objects.select_for_update().get(pk=locked)
                holding.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '5s'")  # a wait would fail the test, not hang it
        first = retention.prune()
        assert first.rows["delivered"] == 3
        assert {str(pk) for pk in Payload.objects.values_list("pk", flat=True)} == {locked}
    finally:
        release.set()
        holder.join(10)
        with connection.cursor() as cursor:
            cursor.execute("RESET lock_timeout")
    assert retention.prune().rows["delivered"] == 1 and not Payload.objects.exists()
