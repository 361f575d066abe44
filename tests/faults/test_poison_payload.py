"""Poison payloads: they fail for good, stay failed, do not hold their region back, and replay once cured."""

from __future__ import annotations

import time

import pytest

from example_project.cluster import Cluster
from tests.e2e.helpers import EU_TEAM, wait_until

from .support import (
    MAX_ATTEMPTS,
    ControlDB,
    Load,
    PayloadRow,
    RecordProperty,
    add_antidote,
    assert_exactly_once,
    effect_counts,
    one_region,
    wait_handled,
)

pytestmark = pytest.mark.e2e

#: Poison events sent in a burst: their attempts (and retries, on one schedule) come back to
#: back, more than CIRCUIT_FAILURE_THRESHOLD (3) in a row, so a circuit that counted handler
#: errors as region faults would open despite the healthy traffic between bursts.
POISONS = 5
#: Bound for the poisons to spend their 12 attempts (~10 s with the compressed schedule).
FAIL_TIMEOUT = 40.0
#: eu events answered this long before the poisons failed must have been handled by then.
FLOW_LAG = 2.0
#: Load that keeps running after the poisons failed, while they must stay failed.
STAY_SECONDS = 1.5


def test_poison_payloads_fail_stay_failed_others_flow_replay_delivers_once(
    any_db_cluster: Cluster, record_property: RecordProperty
) -> None:
    """Handlers that always raise: failed after 12 attempts, kept, eu's circuit closed throughout; cured, replayed."""
    cluster = any_db_cluster
    control = ControlDB(cluster)
    circuits: set[str] = set()
    with Load(cluster, rate=8.0, plan=one_region(EU_TEAM)) as load:
        wait_handled(cluster, load, "eu", 3)
        poisons = [load.send(EU_TEAM, "poison") for _ in range(POISONS)]
        assert [p.status for p in poisons] == [200] * POISONS, poisons
        poison_ids = {p.event_id for p in poisons}
        first_sent = poisons[0].sent_at

        def all_failed() -> list[PayloadRow] | None:
            circuits.add(control.circuit("eu"))
            rows = [row for row in control.payloads(load.prefix) if row.event_id in poison_ids]
            return rows if len(rows) == POISONS and all(row.state == "failed" for row in rows) else None

        dead = wait_until(all_failed, timeout=FAIL_TIMEOUT, what="every poison payload failed", interval=0.1)
        failed_at = time.monotonic()
        flowed = load.acknowledged("eu", after=first_sent, before=failed_at - FLOW_LAG) - poison_ids
        handled_meanwhile = set(effect_counts(cluster, "eu", load.prefix))
        time.sleep(STAY_SECONDS)  # the load keeps running; the poisons must stay where they are
        circuits.add(control.circuit("eu"))

    for row in dead:
        assert (row.attempts, row.replays) == (MAX_ATTEMPTS, 0), row
        assert "handler_failed" in row.last_error, row.last_error
    still = sorted((row for row in control.payloads(load.prefix) if row.event_id in poison_ids), key=lambda r: r.id)
    assert still == sorted(dead, key=lambda r: r.id)  # kept as they were: failed, not deleted, not retried
    assert not poison_ids & set(effect_counts(cluster, "eu", load.prefix))
    # The rest of eu's traffic flowed while the poisons were being retried, and its circuit never opened.
    assert len(flowed) >= 20, len(flowed)
    assert flowed <= handled_meanwhile, sorted(flowed - handled_meanwhile)[:5]
    assert circuits == {"closed"}, circuits

    for event_id in poison_ids:
        add_antidote(cluster, "eu", event_id)
    replay = cluster.manage("control", "silo_router_replay", *(arg for row in dead for arg in ("--id", row.id)))
    assert replay.returncode == 0, replay.stderr[-2000:]
    assert f"replayed {POISONS} payloads" in replay.stdout, replay.stdout
    settled = assert_exactly_once(cluster, load)  # the poisons included: acknowledged, each handled once
    cured = [row for row in settled.payloads if row.event_id in poison_ids]
    assert {(row.state, row.replays) for row in cured} == {("delivered", 1)}, cured
    record_property("acknowledged", settled.acknowledged)
    record_property("drain_seconds", round(settled.drain_seconds, 2))
