"""A region down under load, the control worker killed mid-batch, a crash between handling and recording.

Each runs twice: with control's database on SQLite and on PostgreSQL (``control_backend``).
"""

from __future__ import annotations

import time

import pytest

from example_project.cluster import Cluster
from tests.e2e.helpers import US_TEAM, wait_until

from .support import (
    ACTIVE_STATES,
    LEASE_SECONDS,
    MAX_ATTEMPTS,
    ControlDB,
    Load,
    PayloadRow,
    RecordProperty,
    assert_exactly_once,
    both_regions,
    effect_counts,
    envelope_outcomes,
    region_writing,
    wait_handled,
)

pytestmark = pytest.mark.e2e

#: How long eu stays down while the load keeps coming.
OUTAGE_SECONDS = 5.0
#: us events answered this long before the end of eu's outage must have been handled by then.
ISOLATION_LAG = 1.5
#: How long control's worker stays dead while the load keeps coming.
WORKER_DOWN_SECONDS = 2.0
#: Deliveries in flight (one of them a slow handler, the others behind it) when the worker is killed.
IN_FLIGHT_AT_KILL = 3
#: Load that keeps running after recovery, to show new traffic flows beside the backlog.
AFTER_RECOVERY_SECONDS = 1.0


def test_region_down_under_steady_load_other_region_unaffected_then_drained(
    any_db_cluster: Cluster, record_property: RecordProperty
) -> None:
    """eu killed for 5 s under 20 events/s: Slack still gets 200s, us keeps being served, eu drains once back."""
    cluster = any_db_cluster
    control = ControlDB(cluster)
    with Load(cluster, rate=20.0, plan=both_regions()) as load:
        wait_handled(cluster, load, "us", 5)
        wait_handled(cluster, load, "eu", 5)
        cluster.kill_service("eu")
        down_at = time.monotonic()
        try:
            us_at_start = len(effect_counts(cluster, "us", load.prefix))
            time.sleep(OUTAGE_SECONDS)  # the load keeps running through the outage
            up_at = time.monotonic()
            us_during = set(effect_counts(cluster, "us", load.prefix))
            eu_circuit = control.circuit("eu")
            eu_waiting = [r for r in control.payloads(load.prefix) if r.region == "eu" and r.state in ACTIVE_STATES]
        finally:
            cluster.start_service("eu")
        time.sleep(AFTER_RECOVERY_SECONDS)

    assert not load.refused(), load.refused()[:3]
    # us was served during eu's outage, promptly: every us event answered 1.5 s before its end was handled.
    us_sent_during = load.acknowledged("us", after=down_at, before=up_at - ISOLATION_LAG)
    assert len(us_sent_during) >= 20, len(us_sent_during)
    assert us_sent_during <= us_during, sorted(us_sent_during - us_during)[:5]
    assert len(us_during) > us_at_start
    # eu's payloads were held behind its open circuit, not spent: none came close to failing.
    assert eu_circuit in ("open", "half_open"), eu_circuit
    assert len(eu_waiting) >= 20, len(eu_waiting)
    settled = assert_exactly_once(cluster, load)
    most_attempts = max(row.attempts for row in settled.payloads)
    assert most_attempts < MAX_ATTEMPTS // 2, most_attempts
    record_property("acknowledged", settled.acknowledged)
    record_property("drain_seconds", round(settled.drain_seconds, 2))
    record_property("most_attempts", most_attempts)
    record_property("slowest_ack_ms", round(load.slowest_ms()))


def test_control_worker_killed_mid_batch_then_restarted(
    any_db_cluster: Cluster, record_property: RecordProperty
) -> None:
    """SIGKILL the control worker with slow deliveries in flight; its leases expire, every payload lands once."""
    cluster = any_db_cluster
    control = ControlDB(cluster)
    plan = both_regions(lambda n: "slow 1" if n % 8 == 0 else "effect")
    with Load(cluster, rate=10.0, plan=plan) as load:
        wait_handled(cluster, load, "us", 3)
        wait_handled(cluster, load, "eu", 3)

        def batch_in_flight() -> list[PayloadRow]:
            texts = load.texts()
            rows = [r for r in control.payloads(load.prefix) if r.state == "in_flight"]
            slow = any(texts.get(r.event_id, "").startswith("slow") for r in rows)
            return rows if slow and len(rows) >= IN_FLIGHT_AT_KILL else []

        wait_until(
            batch_in_flight, timeout=20, what=f"{IN_FLIGHT_AT_KILL} deliveries in flight, one slow", interval=0.02
        )
        cluster.kill_service("worker")
        try:
            # No worker is left, so every in-flight row now is a lease of the dead one.
            orphaned = [r for r in control.payloads(load.prefix) if r.state == "in_flight"]
            time.sleep(WORKER_DOWN_SECONDS)  # the load keeps running: acknowledged, stored, not delivered
        finally:
            cluster.start_service("worker")
        time.sleep(AFTER_RECOVERY_SECONDS)

    assert not load.refused(), load.refused()[:3]
    assert len(orphaned) >= IN_FLIGHT_AT_KILL - 1, orphaned  # one may have finished as the kill landed
    settled = assert_exactly_once(cluster, load)
    final = {row.id: row for row in settled.payloads}
    # Each orphaned payload was claimed again after its lease expired (the region may have handled it already).
    assert all(final[row.id].attempts > row.attempts for row in orphaned), [final[r.id] for r in orphaned]
    record_property("acknowledged", settled.acknowledged)
    record_property("orphaned", len(orphaned))
    record_property("drain_seconds", round(settled.drain_seconds, 2))


def test_crash_after_region_handled_before_control_recorded_it(
    any_db_cluster: Cluster, record_property: RecordProperty
) -> None:
    """The worker dies while the region is in a 2 s handler; the region commits; the redelivery is a duplicate."""
    cluster = any_db_cluster
    control = ControlDB(cluster)
    load = Load(cluster)  # not started: one event, sent from here
    answer = load.send(US_TEAM, "slow 2")
    assert answer.status == 200, answer

    def inside_handler() -> PayloadRow | None:
        row = control.payload(answer.event_id)
        return row if row is not None and row.state == "in_flight" and region_writing(cluster, "us") else None

    claimed = wait_until(inside_handler, timeout=10, what="us inside the slow handler", interval=0.02)
    cluster.kill_service("worker")
    killed_at = time.monotonic()
    try:
        wait_until(
            lambda: effect_counts(cluster, "us", answer.event_id)[answer.event_id] == 1,
            timeout=10,
            what="the region committing the handler's effect",
        )
        assert envelope_outcomes(cluster, "us", claimed.id) == ["handled"]
        orphan = control.payload(answer.event_id)
        assert orphan is not None
        assert (orphan.state, orphan.attempts) == ("in_flight", 1), orphan  # control never heard back
    finally:
        cluster.start_service("worker")

    settled = assert_exactly_once(cluster, load, expect={answer.event_id})
    [row] = settled.payloads
    # Delivered on a second attempt, which only the expired lease could start, without a second effect:
    # the region acknowledged it as a duplicate.
    assert row.attempts == 2, row
    assert time.monotonic() - killed_at >= LEASE_SECONDS - 1.0
    assert envelope_outcomes(cluster, "us", row.id) == ["handled"]
    record_property("drain_seconds", round(settled.drain_seconds, 2))
