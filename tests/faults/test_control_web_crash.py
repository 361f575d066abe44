"""A control web process killed (SIGKILL) under concurrent load: every 200 has its row, nothing is handled twice.

Requests of one process share a transaction (group commit) and their wake-ups go out
after the answer, so a killed process may take with it rows whose requests had no
answer yet and wake-ups of rows that did; neither may cost an acknowledged event or
handle one twice. Slack retries what it got no 200 for; the retry is stored (or found
stored) and handled once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from example_project.cluster import Cluster
from tests.e2e.helpers import wait_until

from .support import TEAM_REGION, Answer, ControlDB, Load, RecordProperty, assert_exactly_once, both_regions

pytestmark = pytest.mark.e2e

#: Senders at once (each its own thread and connection), and the rate of each.
SENDERS = 4
RATE = 40.0
#: How many rounds kill the web processes at least (and at most, until one caught
#: requests under way), and the load run before each round.
KILLS = 2
MAX_KILLS = 10
LOAD_BEFORE_KILL = 1.5
FROZEN_BEFORE_KILL = 0.3
#: Requests sent together just before each round's kill, and how long the workers get to
#: accept them: at the steady rate a request is under way a few milliseconds, so a kill at a
#: random instant often finds none; a burst bigger than the workers' threads keeps some
#: queued inside them.
BURST = 12
BURST_LEAD = 0.02


def web_workers(cluster: Cluster) -> list[int]:
    """The pids of control's gunicorn worker processes (the children of its master)."""
    master = cluster.services["control"].process
    assert master is not None and master.poll() is None, "control's gunicorn is not running"
    children = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def test_a_killed_web_process_loses_no_acknowledged_event(
    any_db_cluster: Cluster, record_property: RecordProperty
) -> None:
    cluster = any_db_cluster
    control = ControlDB(cluster)
    loads = [Load(cluster, rate=RATE, plan=both_regions(), timeout=5.0) for _ in range(SENDERS)]
    killed: list[int] = []
    for load in loads:
        load.start()
    try:
        for round_ in range(MAX_KILLS):
            if round_ >= KILLS and any(load.refused() for load in loads):
                break  # a killed process certainly held requests it had not answered
            time.sleep(LOAD_BEFORE_KILL)
            burst = [
                threading.Thread(target=lambda load=load, n=n: load.send(*load.plan(n)))
                for n, load in enumerate(loads * (BURST // SENDERS))
            ]
            for sender in burst:
                sender.start()
            time.sleep(BURST_LEAD)
            # Every worker at once (a request goes to whichever accepts it), frozen first so
            # that each keeps the requests it has read and not answered; the master's
            # listening socket keeps what none accepted yet.
            victims = web_workers(cluster)
            for victim in victims:
                os.kill(victim, signal.SIGSTOP)
            time.sleep(FROZEN_BEFORE_KILL)
            for victim in victims:
                os.kill(victim, signal.SIGKILL)
            killed.extend(victims)
            wait_until(
                lambda victims=victims: (
                    len(web_workers(cluster)) == len(victims) and not set(victims) & set(web_workers(cluster))
                ),
                timeout=30,
                what="gunicorn replaced the killed workers",
            )
            for sender in burst:
                sender.join()
        time.sleep(LOAD_BEFORE_KILL)
    finally:
        for load in loads:
            load.stop()

    # Every 200 has its row, right away (before any retry).
    for load in loads:
        stored = {row.event_id for row in control.payloads(load.prefix)}
        missing = load.acknowledged() - stored
        assert not missing, f"acknowledged but not stored: {sorted(missing)[:10]}"
    unanswered = [a for load in loads for a in load.refused()]
    assert unanswered, "no request was under way in a killed process: the test proved nothing"
    # Slack retries what got no 200; the retry is acknowledged, stored once, handled once.
    for load in loads:
        for answer in load.refused():
            retry = load.send(team_of(answer), answer.text, retry_of=answer)
            assert retry.status == 200, retry
    acknowledged = 0
    for load in loads:
        settled = assert_exactly_once(cluster, load)  # each event handled exactly once, none lost
        acknowledged += settled.acknowledged
    record_property("acknowledged", acknowledged)
    record_property("unanswered_at_kill", len(unanswered))
    record_property("killed", len(killed))


def team_of(answer: Answer) -> str:
    """The workspace an answered event came from."""
    return next(team for team, region in TEAM_REGION.items() if region == answer.region)
