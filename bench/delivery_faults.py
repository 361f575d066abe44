"""Durable delivery under faults: thousands of Slack events through a region outage, a
killed worker and a flushed broker, counted end to end.

Starts the example project as real processes (``example_project.cluster.Cluster``: fake
Slack, control under gunicorn, regions us and eu under gunicorn, control's Celery worker
and beat) on a throwaway ``redis-server`` broker, with a compressed retry schedule. A
few client threads send ``--payloads`` signed Events API ``message`` events with text
``effect`` and unique event ids, at a steady ``--rate``, half for workspace T0US00001
(region us) and half for T0EU00001 (region eu). The region's ``ledger`` handler writes
one ``issues_effect`` row per event, keyed by event id, in the handler's transaction.

While the load runs:

1. region eu is stopped, then started again ``--outage`` seconds later;
2. control's Celery worker is killed with SIGKILL (its whole process group), then
   started again;
3. Redis is flushed (``FLUSHALL``) while messages wait in it: the worker is paused
   (SIGSTOP, outside a database write) for ``--queue-for`` seconds so that a queue
   builds, the broker is flushed, the worker resumes; every queued message is gone.

Then it waits (bounded) until control has nothing pending or in flight, and counts:
events control acknowledged (HTTP 200) against events sent, effect rows in the regions,
lost (acknowledged, no effect), duplicates (an event id with more than one effect row),
non-200 answers; acknowledgement latency per phase; and the time to drain after each
recovery: from the moment eu is back / the worker is back / the broker was flushed until
every payload control had stored before that moment is delivered (read from control's
``created_at`` and ``delivered_at``). Control's database is sampled every 0.5 s for the
per-region timeline.

    .venv/bin/python bench/delivery_faults.py               # 3000 events, about 2 minutes
    .venv/bin/python bench/delivery_faults.py --quick       # 1000 events, about 50 seconds

Writes bench/results/delivery_faults.json and bench/results/delivery_faults.png; exits 1
if any acknowledged event was lost or handled twice (or the backlog did not drain).
Needs ``redis-server`` (``bash tools/install-servers.sh`` installs it).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import hmac
import json
import os
import platform
import re
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import redis as redis_client
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_runs import (  # noqa: E402
    CIRCUIT_TABLE,
    COMPRESSED_SETTINGS,
    PAYLOAD_TABLE,
    REGIONS,
    RESULTS_DIR,
    TEAMS,
    commit,
    db_time,
    query,
    running,
    versions,
    wait_for,
)
from openloop import percentile  # noqa: E402

from example_project.cluster import Cluster, ClusterError  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

#: Slack's answer window.
SLACK_WINDOW_S = 3.0
#: The faults, in order: the phase while each lasts, the phase while its backlog drains
#: (from its recovery until every payload stored before it is delivered), and which
#: regions' payloads that backlog counts.
FAULT_PHASES = {
    "eu outage": ("eu down", "eu draining", ("eu",)),
    "worker kill": ("worker down", "worker draining", ("us", "eu")),
    "broker flush": ("worker paused", "flush draining", ("us", "eu")),
}
STEADY = "steady"
#: How the report names each fault's recovery.
DRAIN_LABELS = {"eu outage": "eu back", "worker kill": "worker back", "broker flush": "broker flushed"}
PHASES = (STEADY, *(phase for down, drain, _ in FAULT_PHASES.values() for phase in (down, drain)))
#: Legend of the shaded fault windows in the plot.
FAULT_LABELS = {
    "eu outage": "region eu stopped",
    "worker kill": "worker SIGKILLed, until restarted",
    "broker flush": "worker paused (a queue builds), then Redis flushed",
}
#: A pending row not due for longer than this (the longest retry delay, 2 s + 25 % jitter,
#: or open circuit, 2 s, above) is held for a probe's lease, 5 s here.
PARKED_AFTER_S = 3.0


# -- small helpers -------------------------------------------------------------------------


def kill_service(cluster: Cluster, name: str) -> None:
    """SIGKILL a cluster service's whole process group (no shutdown at all), reap it, close its log.

    ``cluster.start_service(name)`` starts it again afterwards. Uses ``Cluster.kill_service``
    when the cluster has one.
    """
    kill = getattr(cluster, "kill_service", None)
    if callable(kill):
        kill(name)
        return
    service = cluster.services[name]
    process = service.process
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    if service.log_file is not None:
        service.log_file.close()
        service.log_file = None
    service.process = None


def signal_service(cluster: Cluster, name: str, sig: signal.Signals) -> None:
    """Send ``sig`` (SIGSTOP, SIGCONT) to a cluster service's process group; gone is fine."""
    process = cluster.services[name].process
    if process is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)


def write_lock_free(db: Path, *, wait: float) -> bool:
    """Whether a writer can take SQLite's write lock on ``db`` within ``wait`` seconds (released at once)."""
    connection = sqlite3.connect(db, timeout=wait, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:  # "database is locked"
        return False
    finally:
        connection.close()


def pause_worker(cluster: Cluster, *, tries: int = 50) -> int:
    """SIGSTOP control's worker at a moment it holds no write lock on control's database; the tries it took.

    A worker frozen inside a write would hold SQLite's single write lock, and control
    could not store (acknowledge) anything until it ran again: that is a different
    fault (see docs/benchmarks.md). Control's own writes last milliseconds, so a lock
    still held 0.2 s after the pause is the frozen worker's: resume it and try again.
    """
    for attempt in range(1, tries + 1):
        signal_service(cluster, "worker", signal.SIGSTOP)
        if write_lock_free(cluster.control_db, wait=0.2):
            return attempt
        signal_service(cluster, "worker", signal.SIGCONT)
        time.sleep(0.05)
    raise RuntimeError(f"could not pause the worker outside a database write in {tries} tries")


def ms(value: float | None) -> str:
    """Seconds as a right-aligned millisecond figure, or a dash."""
    return f"{value * 1000:7.0f}" if value is not None else f"{'-':>7}"


# -- the load --------------------------------------------------------------------------------


@dataclasses.dataclass
class Answer:
    """One event sent and what control answered."""

    key: str
    region: str
    sent_at: float
    latency_s: float
    status: int  # 0: no HTTP answer (connection error or client timeout)
    error: str = ""


class Load:
    """``total`` signed ``message`` events at ``rate`` per second from ``threads`` client threads."""

    def __init__(self, cluster: Cluster, *, total: int, rate: float, threads: int) -> None:
        self.cluster = cluster
        self.total = total
        self.rate = rate
        self.threads = threads
        self.answers: list[Answer] = []
        self.tag = secrets.token_hex(3).upper()
        self.started = 0.0
        self._workers: list[threading.Thread] = []
        self._stop = threading.Event()

    def key(self, index: int) -> str:
        """The Slack event id of event ``index``: unique in the run."""
        return f"Ev{self.tag}{index:06d}"

    @staticmethod
    def region_of(index: int) -> str:
        """Events alternate between the two workspaces."""
        return REGIONS[index % len(REGIONS)]

    def body(self, index: int) -> bytes:
        """An Events API ``event_callback`` carrying a ``message`` that says ``effect``."""
        team = TEAMS[self.region_of(index)]
        now = f"{time.time():.6f}"
        payload = {
            "token": "fakeLegacyVerificationToken",
            "team_id": team,
            "api_app_id": "A0APP0001",
            "event": {
                "type": "message",
                "channel": "C0BENCH01",
                "user": "U0USER001",
                "text": "effect",
                "ts": now,
                "event_ts": now,
                "channel_type": "channel",
            },
            "type": "event_callback",
            "event_id": self.key(index),
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": team,
                    "user_id": "U0FAKEBOT1",
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        return json.dumps(payload, separators=(",", ":")).encode()

    def start(self) -> None:
        """Start the client threads; event ``i`` is due ``i / rate`` seconds after now."""
        self.started = time.time()
        for number in range(self.threads):
            thread = threading.Thread(target=self._run, args=(number,), name=f"client-{number}", daemon=True)
            thread.start()
            self._workers.append(thread)

    def join(self, timeout: float) -> bool:
        """Wait for every client thread; ``False`` if one is still running after ``timeout``."""
        deadline = time.monotonic() + timeout
        for thread in self._workers:
            thread.join(max(deadline - time.monotonic(), 0.01))
        return not any(thread.is_alive() for thread in self._workers)

    def stop(self) -> None:
        """Ask the client threads to stop early (Ctrl-C)."""
        self._stop.set()

    @property
    def duration(self) -> float:
        """Seconds the load is planned to last."""
        return self.total / self.rate

    def _run(self, number: int) -> None:
        url = self.cluster.slack_request_url
        with requests.Session() as session:
            for index in range(number, self.total, self.threads):
                due = self.started + index / self.rate
                wait = due - time.time()
                if wait > 0 and self._stop.wait(wait):
                    return
                if self._stop.is_set():
                    return
                self.answers.append(self._send(session, url, index))

    def _send(self, session: requests.Session, url: str, index: int) -> Answer:
        body = self.body(index)
        stamp = str(int(time.time()))
        signature = (
            "v0="
            + hmac.new(self.cluster.signing_secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
        )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature,
        }
        sent_at = time.time()
        started = time.perf_counter()
        try:
            response = session.post(url, data=body, headers=headers, timeout=10)
            status, error = response.status_code, "" if response.status_code == 200 else response.text[:200]
        except requests.RequestException as exc:
            status, error = 0, f"{type(exc).__name__}: {exc}"[:200]
        return Answer(
            key=self.key(index),
            region=self.region_of(index),
            sent_at=sent_at,
            latency_s=time.perf_counter() - started,
            status=status,
            error=error,
        )


# -- watching control ---------------------------------------------------------------------------


class Sampler:
    """Reads control's payload counts per region and state, and the circuits, every ``interval`` s."""

    def __init__(self, cluster: Cluster, *, interval: float = 0.5) -> None:
        self.db = cluster.control_db
        self.interval = interval
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        """Sample until ``stop()``."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (one last sample is taken)."""
        self._stop.set()
        self._thread.join(10)

    def sample(self) -> dict[str, Any]:
        """``{"t": wall time, "counts": {region: {state: n}}, "circuits": {region: state}}``."""
        counts: dict[str, dict[str, int]] = {region: {} for region in REGIONS}
        for region, state, count in query(
            self.db, f"SELECT region, state, COUNT(*) FROM {PAYLOAD_TABLE} GROUP BY 1, 2"
        ):
            counts.setdefault(str(region), {})[str(state)] = int(count)
        circuits = {str(r): str(s) for r, s in query(self.db, f"SELECT region, state FROM {CIRCUIT_TABLE}")}
        # Pending rows not due for longer than any retry or open circuit here lasts: what
        # waits for a probe's lease (DELIVERY_TIMEOUT + LEASE_MARGIN) to end.
        now = time.time()
        horizon = datetime.datetime.fromtimestamp(now + PARKED_AFTER_S, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        parked = {
            str(region): int(count)
            for region, count in query(
                self.db,
                f"SELECT region, COUNT(*) FROM {PAYLOAD_TABLE} WHERE state = 'pending' AND next_attempt_at > ? "
                "GROUP BY 1",
                [horizon],
            )
        }
        return {"t": now, "counts": counts, "circuits": circuits, "parked": parked}

    def _run(self) -> None:
        while True:
            with contextlib.suppress(sqlite3.Error):
                self.samples.append(self.sample())
            if self._stop.wait(self.interval):
                with contextlib.suppress(sqlite3.Error):
                    self.samples.append(self.sample())
                return


def in_flight(cluster: Cluster) -> int:
    """Payloads a worker has claimed and not finished."""
    [(count,)] = query(cluster.control_db, f"SELECT COUNT(*) FROM {PAYLOAD_TABLE} WHERE state = 'in_flight'")
    return int(count)


def broker_depth(url: str) -> tuple[int, int]:
    """Messages in Redis: queued on control's ``celery`` queue, and taken by a worker but not acknowledged."""
    with contextlib.closing(redis_client.Redis.from_url(url)) as client:
        return int(client.llen("celery")), int(client.hlen("unacked"))


def active(cluster: Cluster) -> int:
    """Payloads control holds as pending or in flight."""
    [(count,)] = query(
        cluster.control_db, f"SELECT COUNT(*) FROM {PAYLOAD_TABLE} WHERE state IN ('pending', 'in_flight')"
    )
    return int(count)


def wait_drained(cluster: Cluster, *, stored_at_least: int, timeout: float) -> float | None:
    """Wait until control stored ``stored_at_least`` payloads and none is pending or in flight; when, or ``None``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        [(stored,)] = query(cluster.control_db, f"SELECT COUNT(*) FROM {PAYLOAD_TABLE}")
        if stored >= stored_at_least and active(cluster) == 0:
            return time.time()
        time.sleep(0.2)
    return None


# -- the faults -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Fault:
    """A fault's window in wall time: ``start`` (injected) to ``end`` (recovered), and what it did."""

    name: str
    start: float
    end: float
    #: The instant the drain is measured from.
    recovered: float
    detail: str = ""
    #: Payloads stored before ``recovered`` and not delivered by then; seconds until the last was.
    backlog: int = 0
    drain_s: float | None = None


def sleep_until(moment: float) -> None:
    """Sleep until wall time ``moment`` (in short steps, so Ctrl-C and SIGTERM stop it at once)."""
    while (left := moment - time.time()) > 0:
        time.sleep(min(left, 0.5))


def inject_faults(
    cluster: Cluster,
    redis: RedisServer,
    load: Load,
    *,
    outage: float,
    worker_down: float,
    settle: float,
    queue_for: float,
    say: Callable[[str], None],
) -> list[Fault]:
    """Run the fault schedule on the main thread (a service must be started from a thread that outlives it).

    eu goes down at 12 % of the load; the worker is killed at 50 % (while a payload is in
    flight, if one is within 5 s), the broker flushed at 78 %, each at least ``settle``
    seconds after the previous recovery, so that each drain is measured on its own.
    """
    faults: list[Fault] = []
    plan = load.duration
    t0 = load.started

    sleep_until(t0 + 0.12 * plan)
    began = time.time()
    cluster.stop_service("eu")
    say(f"region eu stopped ({time.time() - began:.1f} s to stop)")
    sleep_until(began + outage)
    say("starting region eu again")
    cluster.start_service("eu")
    back = time.time()
    say(f"region eu is back after {back - began:.1f} s")
    faults.append(Fault("eu outage", began, back, back, f"eu stopped for {back - began:.1f} s"))

    sleep_until(max(t0 + 0.5 * plan, back + settle))
    # Mid-delivery: wait (briefly) for a payload in flight, so the kill strands a lease.
    wait_for(lambda: in_flight(cluster) > 0, timeout=5.0, interval=0.002)
    killed = time.time()
    kill_service(cluster, "worker")
    stranded, (queued, unacked) = in_flight(cluster), broker_depth(redis.url)
    say(
        f"control's Celery worker killed (SIGKILL to its process group): {stranded} payloads in flight, "
        f"{unacked} messages taken but not acknowledged, {queued} queued"
    )
    sleep_until(killed + worker_down)
    cluster.start_service("worker")
    ready = time.time()
    say(f"worker ready again {ready - killed:.1f} s after the kill")
    faults.append(
        Fault(
            "worker kill",
            killed,
            ready,
            ready,
            f"{stranded} in flight, {unacked} unacknowledged messages at the kill; "
            f"no worker for {ready - killed:.1f} s",
        )
    )

    sleep_until(max(t0 + 0.78 * plan, ready + settle))
    # Messages only wait in Redis when the worker is behind: pause it (SIGSTOP) for
    # ``queue_for`` seconds so that the flush has a queue to destroy, then resume it.
    tries = pause_worker(cluster)
    paused = time.time()
    try:
        sleep_until(paused + queue_for)
        queued, unacked = broker_depth(redis.url)
        flushed = time.time()
        redis.flush()
    finally:
        signal_service(cluster, "worker", signal.SIGCONT)
    say(
        f"Redis flushed (FLUSHALL) with the worker paused for {flushed - paused:.1f} s "
        f"(paused outside a database write at try {tries}): "
        f"{queued} queued and {unacked} unacknowledged messages gone"
    )
    faults.append(
        Fault(
            "broker flush",
            paused,
            flushed,
            flushed,
            f"{queued} queued and {unacked} unacknowledged messages gone",
        )
    )
    late = [f.name for f in faults if f.start > t0 + plan]
    if late:
        say(f"warning: {', '.join(late)} came after the last event was sent (a slow start); use more --payloads")
    return faults


# -- results ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class PayloadRow:
    """The parts of a control payload row this benchmark reads."""

    key: str
    region: str
    state: str
    attempts: int
    created: float
    delivered: float | None


def payload_rows(cluster: Cluster) -> list[PayloadRow]:
    """Every payload control stored, keyed by Slack event id."""
    rows = query(
        cluster.control_db,
        f"SELECT idempotency_key, region, state, attempts, created_at, delivered_at FROM {PAYLOAD_TABLE}",
    )
    return [
        PayloadRow(
            str(key).rsplit(":", 1)[-1],
            str(region),
            str(state),
            int(attempts),
            db_time(created) or 0.0,
            db_time(delivered),
        )
        for key, region, state, attempts, created, delivered in rows
    ]


def effects(cluster: Cluster) -> dict[str, Counter[str]]:
    """``{region: Counter(event id -> effect rows)}`` read from each region's database."""
    return {
        region: Counter(
            {
                str(key): int(n)
                for key, n in query(cluster.region_db(region), "SELECT key, COUNT(*) FROM issues_effect GROUP BY key")
            }
        )
        for region in REGIONS
    }


def sweeper_totals(log: Path) -> dict[str, int]:
    """What the sweeper did, summed from the worker's log (Celery logs each sweep's result)."""
    totals = {"sweeps": 0, "expired_leases": 0, "republished": 0}
    pattern = re.compile(r"'expired_leases': (\d+), 'republished': (\d+)")
    with contextlib.suppress(OSError):
        for match in pattern.finditer(log.read_text(errors="replace")):
            totals["sweeps"] += 1
            totals["expired_leases"] += int(match.group(1))
            totals["republished"] += int(match.group(2))
    return totals


def measure_drain(fault: Fault, rows: Sequence[PayloadRow]) -> None:
    """Set the fault's backlog at ``recovered`` (its regions' payloads stored before, not yet
    delivered) and how long after ``recovered`` the last of them was delivered (``None``: never)."""
    regions = FAULT_PHASES[fault.name][2]
    backlog = [
        r
        for r in rows
        if r.region in regions
        and r.created <= fault.recovered
        and (r.delivered is None or r.delivered > fault.recovered)
    ]
    fault.backlog = len(backlog)
    if any(r.delivered is None for r in backlog):
        fault.drain_s = None
    else:
        fault.drain_s = max((r.delivered - fault.recovered for r in backlog if r.delivered is not None), default=0.0)


def phase_of(moment: float, faults: Sequence[Fault]) -> str:
    """The phase of an instant: during a fault, else while a fault's backlog drains, else steady."""
    for fault in faults:
        if fault.start <= moment < fault.recovered:
            return FAULT_PHASES[fault.name][0]
    for fault in reversed(faults):  # the latest drain, should two overlap
        drain = fault.drain_s if fault.drain_s is not None else float("inf")
        if fault.recovered <= moment <= fault.recovered + drain:
            return FAULT_PHASES[fault.name][1]
    return STEADY


def rate_in(samples: Sequence[dict[str, Any]], region: str, start: float, end: float) -> float | None:
    """Payloads delivered per second to ``region`` between ``start`` and ``end`` (from the samples)."""
    inside = [s for s in samples if start <= s["t"] <= end]
    if len(inside) < 2:
        return None
    first, last = inside[0], inside[-1]
    delivered = int(last["counts"].get(region, {}).get("delivered", 0)) - int(
        first["counts"].get(region, {}).get("delivered", 0)
    )
    return delivered / max(float(last["t"]) - float(first["t"]), 1e-9)


def plot(result: dict[str, Any], faults: Sequence[Fault], samples: Sequence[dict[str, Any]], path: Path) -> None:
    """Delivered and pending payloads per region over time, fault windows shaded, drains hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = result["load"]["started"]
    colors = {"us": "#1565c0", "eu": "#2e7d32"}
    shades = {"eu outage": "#ef9a9a", "worker kill": "#ffcc80", "broker flush": "#ce93d8"}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 7), sharex=True, height_ratios=(3, 2))
    xs = [s["t"] - t0 for s in samples]
    for region in REGIONS:
        delivered = [s["counts"].get(region, {}).get("delivered", 0) for s in samples]
        waiting = [
            s["counts"].get(region, {}).get("pending", 0) + s["counts"].get(region, {}).get("in_flight", 0)
            for s in samples
        ]
        top.plot(xs, delivered, color=colors[region], label=f"{region}: delivered")
        bottom.plot(xs, waiting, color=colors[region], label=f"{region}: pending + in flight")
    for axis in (top, bottom):
        for fault in faults:
            # The flush's window is the pause that let a queue build; the line is the FLUSHALL.
            start, end = fault.start - t0, fault.recovered - t0
            label = FAULT_LABELS.get(fault.name, fault.name) if axis is top else None
            axis.axvspan(
                start, max(end, start + 0.4), color=shades.get(fault.name, "#e0e0e0"), alpha=0.5, label=label, lw=0
            )
            if fault.name == "broker flush":
                axis.axvline(end, color="#6a1b9a", lw=1.5, label="FLUSHALL" if axis is top else None)
            if fault.drain_s:  # hatched: until everything stored before the recovery is delivered
                axis.axvspan(
                    end,
                    end + fault.drain_s,
                    facecolor="none",
                    edgecolor=shades.get(fault.name, "#e0e0e0"),
                    hatch="///",
                    lw=0,
                    label=f"{DRAIN_LABELS[fault.name]}: draining" if axis is top else None,
                )
        axis.axvline(result["load"]["ended"] - t0, color="#757575", ls=":", lw=1)
        axis.grid(alpha=0.3)
    top.set_ylabel("payloads delivered (cumulative)")
    bottom.set_ylabel("payloads pending + in flight")
    bottom.set_xlabel("seconds since the load started (dotted: last event sent)")
    top.legend(loc="upper left", fontsize=8)
    bottom.legend(loc="upper left", fontsize=8)
    counts = result["counts"]
    top.set_title(
        f"{counts['sent']} Slack events at {result['settings']['rate']:g}/s through a region outage, a worker kill "
        f"and a broker flush: {counts['lost']} lost, {counts['duplicates']} duplicates\n"
        f"{result['machine']['cpus']} CPUs, Redis broker, SQLite, compressed retry schedule",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main ----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options; ``--quick`` shrinks the defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--payloads", type=int, help="events to send (default 3000, quick 1000)")
    parser.add_argument("--rate", type=float, help="events per second, all threads together (default 30, quick 25)")
    parser.add_argument("--threads", type=int, default=4, help="client threads (default 4)")
    parser.add_argument("--outage", type=float, help="seconds region eu stays down (default 20, quick 5)")
    parser.add_argument("--worker-down", type=float, default=3.0, help="seconds without a worker (default 3)")
    parser.add_argument(
        "--queue-for",
        type=float,
        default=2.0,
        help="seconds the worker is paused before the flush, so messages queue up (default 2)",
    )
    parser.add_argument("--settle", type=float, default=8.0, help="least seconds between a recovery and the next fault")
    parser.add_argument("--drain-timeout", type=float, default=120.0, help="bound on the wait for the backlog")
    parser.add_argument("--quick", action="store_true", help="1000 events, a shorter outage: about 50 s")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where delivery_faults.json/.png go")
    args = parser.parse_args(argv)
    for name, full, short in (
        ("payloads", 3000, 1000),
        ("rate", 30.0, 25.0),
        ("outage", 20.0, 5.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, short if args.quick else full)
    if args.payloads < 20 or args.rate <= 0 or args.threads < 1:
        parser.error("--payloads must be at least 20, --rate positive, --threads at least 1")
    return args


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so every process is stopped."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load and the faults, count, report; 0 only if nothing was lost or duplicated."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()

    def say(message: str) -> None:
        print(f"{time.monotonic() - began:7.1f} s  {message}", flush=True)

    if shutil.which("redis-server") is None and not Path("/usr/bin/redis-server").exists():
        print("redis-server is not installed: run `bash tools/install-servers.sh`", file=sys.stderr)
        return 2
    load_before = os.getloadavg()
    var_dir = Path(tempfile.mkdtemp(prefix="silo-delivery-faults-"))
    load: Load | None = None
    sampler: Sampler | None = None
    try:
        say(f"starting Redis and the example cluster in {var_dir}")
        with running(var_dir, upstream_latency=0.1, extra_env=COMPRESSED_SETTINGS) as (cluster, redis):
            say(
                f"cluster up; {args.payloads} events at {args.rate:g}/s from {args.threads} threads, "
                f"about {args.payloads / args.rate:.0f} s"
            )
            load = Load(cluster, total=args.payloads, rate=args.rate, threads=args.threads)
            sampler = Sampler(cluster)
            sampler.start()
            load.start()
            faults = inject_faults(
                cluster,
                redis,
                load,
                outage=args.outage,
                worker_down=args.worker_down,
                settle=args.settle,
                queue_for=args.queue_for,
                say=say,
            )
            if not load.join(timeout=load.duration + 120):
                raise RuntimeError("the client threads did not finish")
            ended = max((a.sent_at + a.latency_s for a in load.answers), default=time.time())
            say(f"load done: {len(load.answers)} events sent; waiting for control to drain")
            acked = [a for a in load.answers if a.status == 200]
            drained_at = wait_drained(cluster, stored_at_least=len(acked), timeout=args.drain_timeout)
            say("drained" if drained_at else f"NOT drained within {args.drain_timeout:.0f} s")
            time.sleep(2.0)  # a late redelivery, if any, would add an effect row now
            sampler.stop()
            rows = payload_rows(cluster)
            found = effects(cluster)
            swept = sweeper_totals(cluster.services["worker"].log_path)
            problems = {
                name: sum(
                    "Traceback" in line
                    for line in cluster.services[name].log_path.read_text(errors="replace").splitlines()
                )
                for name in ("control", "worker", "us", "eu", "beat")
            }
    except KeyboardInterrupt:
        if load is not None:
            load.stop()
        if sampler is not None:
            sampler.stop()
        shutil.rmtree(var_dir, ignore_errors=True)
        print("interrupted; every process stopped", file=sys.stderr)
        return 130
    except (ClusterError, RuntimeError) as exc:
        print(f"\nFAILED: {exc}\nlogs kept in {var_dir}", file=sys.stderr)
        return 1

    # -- count -----------------------------------------------------------------------------------
    answers = load.answers
    acked_keys = {a.key: a.region for a in answers if a.status == 200}
    all_effects: Counter[str] = Counter()
    misplaced = 0
    for region, counter in found.items():
        all_effects.update(counter)
        misplaced += sum(1 for key in counter if key in acked_keys and acked_keys[key] != region)
    lost = sorted(key for key in acked_keys if all_effects[key] == 0)
    duplicates = {key: n for key, n in all_effects.items() if n > 1}
    sent_keys = {a.key for a in answers}
    unacked_but_handled = sum(1 for key in all_effects if key in sent_keys and key not in acked_keys)
    statuses = Counter(str(a.status) if a.status else "no answer" for a in answers)
    non_200 = {k: v for k, v in statuses.items() if k != "200"}
    late_acks = sum(1 for a in answers if a.status == 200 and a.latency_s >= SLACK_WINDOW_S)
    states = Counter(r.state for r in rows)
    retried = sum(1 for r in rows if r.attempts > 1)
    max_attempts = max((r.attempts for r in rows), default=0)

    for fault in faults:
        measure_drain(fault, rows)
    latency: dict[str, dict[str, Any]] = {}
    for phase in PHASES:
        mine = [a.latency_s for a in answers if a.status == 200 and phase_of(a.sent_at, faults) == phase]
        latency[phase] = {
            "n": len(mine),
            "p50_s": percentile(mine, 50),
            "p99_s": percentile(mine, 99),
            "max_s": max(mine, default=None),
        }
    delivery_latency: dict[str, dict[str, Any]] = {}
    for region in REGIONS:
        for phase in PHASES:
            mine = [
                r.delivered - r.created
                for r in rows
                if r.region == region and r.delivered is not None and phase_of(r.created, faults) == phase
            ]
            delivery_latency[f"{region} / {phase}"] = {
                "n": len(mine),
                "p50_s": percentile(mine, 50),
                "p99_s": percentile(mine, 99),
            }
    eu_fault = faults[0]
    us_rate_down = rate_in(sampler.samples, "us", eu_fault.start, eu_fault.end)
    us_rate_before = rate_in(sampler.samples, "us", load.started + 2, eu_fault.start)
    eu_rate_down = rate_in(sampler.samples, "eu", eu_fault.start + 1.5, eu_fault.end)
    eu_drained = eu_fault.recovered + (eu_fault.drain_s or 0.0)
    us_rate_eu_draining = rate_in(sampler.samples, "us", eu_fault.recovered, eu_drained)
    eu_rate_draining = rate_in(sampler.samples, "eu", eu_fault.recovered, eu_drained)
    eu_peak = max(
        (
            s["counts"].get("eu", {}).get("pending", 0) + s["counts"].get("eu", {}).get("in_flight", 0)
            for s in sampler.samples
        ),
        default=0,
    )
    parked_peak = {region: max((s["parked"].get(region, 0) for s in sampler.samples), default=0) for region in REGIONS}
    last_delivery = max((r.delivered for r in rows if r.delivered is not None), default=ended)
    drain_total = max(last_delivery - ended, 0.0) if drained_at else None

    failures = []
    if lost:
        failures.append(f"{len(lost)} acknowledged events have no effect: {lost[:5]}")
    if duplicates:
        failures.append(f"{len(duplicates)} events have more than one effect: {list(duplicates.items())[:5]}")
    if misplaced:
        failures.append(f"{misplaced} effects in the wrong region")
    if drained_at is None:
        failures.append(f"control still held {states.get('pending', 0) + states.get('in_flight', 0)} payloads")
    if len(answers) != args.payloads:
        failures.append(f"only {len(answers)} of {args.payloads} events were sent")

    # -- report ----------------------------------------------------------------------------------
    print()
    print(f"events sent                      {len(answers):6d}")
    print(
        f"acknowledged by control (200)    {len(acked_keys):6d}   non-200: {non_200 or 0}"
        f"   200s slower than 3 s: {late_acks}"
    )
    print(f"payloads in control              {len(rows):6d}   {dict(states)}")
    print(
        f"effects in the regions           {sum(all_effects.values()):6d}   "
        + ", ".join(f"{r}: {sum(c.values())}" for r, c in found.items())
    )
    print(f"lost (200, no effect)            {len(lost):6d}")
    print(f"duplicates (>1 effect per event) {len(duplicates):6d}")
    print(f"handled without a 200            {unacked_but_handled:6d}   (Slack would have retried these)")
    print(
        f"payloads attempted more than once {retried:5d}   (most attempts: {max_attempts}); sweeper: "
        f"{swept['expired_leases']} expired leases, {swept['republished']} republished in {swept['sweeps']} sweeps"
    )
    print()
    print(f"{'acknowledgement latency':<26}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for phase, data in latency.items():
        print(f"  {phase:<24}{data['n']:6d}  {ms(data['p50_s'])}  {ms(data['p99_s'])}  {ms(data['max_s'])}")
    print()
    print(f"{'stored -> delivered':<26}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}")
    for label, data in delivery_latency.items():
        if data["n"]:
            print(f"  {label:<24}{data['n']:6d}  {ms(data['p50_s'])}  {ms(data['p99_s'])}")
    print()
    print(f"{'drain after recovery':<26}{'backlog':>8}{'drain s':>9}")
    for fault in faults:
        drain = f"{fault.drain_s:9.1f}" if fault.drain_s is not None else f"{'never':>9}"
        print(f"  {DRAIN_LABELS[fault.name]:<24}{fault.backlog:8d}{drain}")
    total = f"{drain_total:9.1f}" if drain_total is not None else f"{'never':>9}"
    print(f"  {'all, after the last event':<24}{'':8}{total}")
    print()
    if us_rate_down is not None and us_rate_before is not None:
        print(
            f"while eu was down: us delivered {us_rate_down:.1f}/s (before: {us_rate_before:.1f}/s); "
            f"eu delivered {eu_rate_down or 0:.1f}/s; eu's backlog peaked at {eu_peak}"
        )
    if us_rate_eu_draining is not None and eu_rate_draining is not None:
        print(f"while eu drained: eu delivered {eu_rate_draining:.1f}/s, us {us_rate_eu_draining:.1f}/s")
    print(
        f"most payloads held for a probe's lease at once (not due for > {PARKED_AFTER_S:g} s): "
        + ", ".join(f"{region}: {n}" for region, n in parked_peak.items())
    )
    if any(problems.values()):
        print(f"tracebacks in service logs: {problems}")

    elapsed = time.monotonic() - began
    result: dict[str, Any] = {
        "benchmark": "delivery_faults",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "commit": commit(),
        "versions": versions(),
        "settings": {
            "payloads": args.payloads,
            "rate": args.rate,
            "threads": args.threads,
            "outage_s": args.outage,
            "worker_down_s": args.worker_down,
            "quick": args.quick,
            "environment": COMPRESSED_SETTINGS,
            "broker": "redis",
            "database": "sqlite",
        },
        "load": {"started": load.started, "ended": ended, "drained": drained_at},
        "faults": [dataclasses.asdict(f) for f in faults],
        "counts": {
            "sent": len(answers),
            "acknowledged": len(acked_keys),
            "non_200": non_200,
            "acks_over_3s": late_acks,
            "payloads": len(rows),
            "payload_states": dict(states),
            "effects": sum(all_effects.values()),
            "effects_by_region": {r: sum(c.values()) for r, c in found.items()},
            "lost": len(lost),
            "duplicates": len(duplicates),
            "misplaced": misplaced,
            "handled_without_200": unacked_but_handled,
            "payloads_retried": retried,
            "max_attempts": max_attempts,
            "sweeper": swept,
            "lost_keys": lost[:50],
            "duplicate_keys": dict(list(duplicates.items())[:50]),
        },
        "ack_latency": latency,
        "delivery_latency": delivery_latency,
        "drain": {
            **{DRAIN_LABELS[f.name]: {"backlog": f.backlog, "drain_s": f.drain_s} for f in faults},
            "all_after_the_last_event_s": drain_total,
        },
        "eu_outage": {
            "us_delivered_per_s": us_rate_down,
            "us_delivered_per_s_before": us_rate_before,
            "eu_delivered_per_s": eu_rate_down,
            "eu_backlog_peak": eu_peak,
            "eu_delivered_per_s_draining": eu_rate_draining,
            "us_delivered_per_s_eu_draining": us_rate_eu_draining,
        },
        "held_for_probe_lease_peak": parked_peak,
        "service_log_tracebacks": problems,
        "failures": failures,
        "timeline": [
            {
                "t": round(s["t"] - load.started, 2),
                **{r: s["counts"].get(r, {}) for r in REGIONS},
                "circuits": s["circuits"],
                "held_for_probe_lease": s["parked"],
            }
            for s in sampler.samples
        ],
        "elapsed_s": round(elapsed, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "delivery_faults.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, faults, sampler.samples, args.out / "delivery_faults.png")
    print(f"wrote {args.out / 'delivery_faults.json'} and {args.out / 'delivery_faults.png'} ({elapsed:.0f} s)")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures) + f"\nlogs kept in {var_dir}", file=sys.stderr)
        return 1
    shutil.rmtree(var_dir, ignore_errors=True)
    print("passed: nothing lost, nothing handled twice")
    return 0


if __name__ == "__main__":
    sys.exit(main())
