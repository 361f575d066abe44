"""What the fault tests share: steady Slack load, reads of control and the regions, the closing check.

Every scenario ends with ``assert_exactly_once``: the event ids control acknowledged
with a 200 are exactly the keys in the regions' ``issues_effect`` tables (each in its
own region, each once), and control has nothing left pending or in flight. Control's
database is SQLite or PostgreSQL (``Cluster.control_database_url``); the regions'
are always SQLite files, read with ``sqlite3`` as the end-to-end helpers do.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import sqlite3
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

import requests

from example_project.cluster import REGIONS, Cluster
from tests.e2e.helpers import EU_TEAM, US_TEAM, placeholders, query, wait_until

#: Delivery compressed from minutes to seconds (read by example_project/settings/control.py):
#: retries from 0.2 s capped at 1 s, a 2 s attempt timeout, leases of 2 + 2 s, circuits that
#: open after 3 consecutive region faults for 1 s then 2 s, a sweeper every 0.5 s that
#: republishes what waited 1 s. DELIVERY_MAX_ATTEMPTS keeps the library default (12): a region
#: outage does not spend it, because the circuit holds the region's payloads without an
#: attempt; a poison payload spends it in ~10 s.
FAULT_ENV: dict[str, str] = {
    "SILO_ROUTER_DELIVERY_BACKOFF": "0.2",
    "SILO_ROUTER_DELIVERY_MAX_BACKOFF": "1",
    "SILO_ROUTER_RETRY_JITTER": "0.2",
    "SILO_ROUTER_DELIVERY_TIMEOUT": "2",
    "SILO_ROUTER_LEASE_MARGIN": "2",
    "SILO_ROUTER_SWEEP_GRACE": "1",
    "SILO_ROUTER_SWEEP_EVERY": "0.5",
    "SILO_ROUTER_CIRCUIT_FAILURE_THRESHOLD": "3",
    "SILO_ROUTER_CIRCUIT_OPEN_SECONDS": "1",
    "SILO_ROUTER_CIRCUIT_MAX_OPEN_SECONDS": "2",
    "SILO_ROUTER_DELIVERY_MAX_ATTEMPTS": "12",
}
MAX_ATTEMPTS = int(FAULT_ENV["SILO_ROUTER_DELIVERY_MAX_ATTEMPTS"])
#: Lease of a claimed payload: DELIVERY_TIMEOUT + LEASE_MARGIN.
LEASE_SECONDS = float(FAULT_ENV["SILO_ROUTER_DELIVERY_TIMEOUT"]) + float(FAULT_ENV["SILO_ROUTER_LEASE_MARGIN"])
#: Bound for "everything acknowledged has been handled" once every component is back.
DRAIN_TIMEOUT = 60.0
TEAM_REGION: dict[str, str] = {US_TEAM: "us", EU_TEAM: "eu"}
ACTIVE_STATES = ("pending", "in_flight")
#: The Celery queue control's worker consumes (delivery and sweep messages).
CONTROL_QUEUE = "celery"

Plan = Callable[[int], tuple[str, str]]
#: pytest's ``record_property`` fixture: a name and a value for the test's report (JUnit XML).
RecordProperty = Callable[[str, object], None]


def event_key(idempotency_key: str) -> str:
    """The Slack event id in a payload's idempotency key (``slack:event:<event id>``)."""
    return idempotency_key.rsplit(":", 1)[-1]


# -- control's database ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PayloadRow:
    """One of control's ``silo_router_control_payload`` rows, for a Slack event."""

    id: str
    event_id: str
    region: str
    state: str
    attempts: int
    replays: int
    last_error: str


class ControlDB:
    """Reads control's database, SQLite or PostgreSQL, with ``?`` placeholders; a fresh connection per query."""

    def __init__(self, cluster: Cluster) -> None:
        self.url = cluster.control_database_url
        self.path = cluster.control_db

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql`` as committed right now."""
        if self.url is None:
            return query(self.path, sql, params)
        import psycopg

        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as connection:
            return list(connection.execute(sql.replace("?", "%s"), params).fetchall())

    def payloads(self, prefix: str) -> list[PayloadRow]:
        """Payloads of the Slack events whose ids start with ``prefix``."""
        rows = self.rows(
            "SELECT id, idempotency_key, region, state, attempts, replays, last_error "
            "FROM silo_router_control_payload WHERE idempotency_key LIKE ?",
            (f"slack:event:{prefix}%",),
        )
        return [
            PayloadRow(
                str(uuid.UUID(str(pk))), event_key(str(key)), str(region), str(state), int(att), int(rep), str(err)
            )
            for pk, key, region, state, att, rep, err in rows
        ]

    def payload(self, event_id: str) -> PayloadRow | None:
        """The payload of Slack event ``event_id`` (one region), or ``None``."""
        found = [row for row in self.payloads(event_id) if row.event_id == event_id]
        assert len(found) <= 1, found
        return found[0] if found else None

    def active(self) -> dict[str, int]:
        """``{state: count}`` of every payload still pending or in flight (any test's)."""
        rows = self.rows(
            "SELECT state, COUNT(*) FROM silo_router_control_payload "
            f"WHERE state IN ({placeholders(ACTIVE_STATES)}) GROUP BY state",
            ACTIVE_STATES,
        )
        return {str(state): int(count) for state, count in rows}

    def circuit(self, region: str) -> str:
        """The state of ``region``'s circuit breaker (``closed`` when it has no row yet)."""
        rows = self.rows("SELECT state FROM silo_router_control_regioncircuit WHERE region = ?", (region,))
        return str(rows[0][0]) if rows else "closed"


# -- a region's database ---------------------------------------------------------------------------


def effect_counts(cluster: Cluster, region: str, prefix: str) -> Counter[str]:
    """How many ``issues_effect`` rows region ``region`` has per key starting with ``prefix``."""
    rows = query(
        cluster.region_db(region),
        "SELECT key, COUNT(*) FROM issues_effect WHERE key LIKE ? GROUP BY key",
        (prefix + "%",),
    )
    return Counter({str(key): int(count) for key, count in rows})


def envelope_outcomes(cluster: Cluster, region: str, envelope_id: str) -> list[str]:
    """Outcomes of region ``region``'s idempotency records for envelope ``envelope_id`` (SQLite stores uuid hex)."""
    rows = query(
        cluster.region_db(region),
        "SELECT outcome FROM silo_router_region_processedenvelope WHERE id = ?",
        (uuid.UUID(envelope_id).hex,),
    )
    return [str(outcome) for (outcome,) in rows]


def region_writing(cluster: Cluster, region: str) -> bool:
    """Whether a write transaction is open in region ``region``'s database now (a handler is running).

    The example's SQLite databases start every transaction with ``BEGIN IMMEDIATE``, so
    a handler holds the write lock from its first statement to its commit; this probe
    tries to take it without waiting and gives it back at once.
    """
    with contextlib.closing(sqlite3.connect(cluster.region_db(region), timeout=0, isolation_level=None)) as db:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return True
            raise
        db.execute("ROLLBACK")
        return False


def add_antidote(cluster: Cluster, region: str, event_id: str) -> None:
    """Let poison event ``event_id`` through in region ``region`` (an ``issues_antidote`` row)."""
    with contextlib.closing(sqlite3.connect(cluster.region_db(region), timeout=20)) as db, db:
        db.execute("INSERT INTO issues_antidote (key) VALUES (?)", (event_id,))


# -- load -----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Answer:
    """Control's answer to one Slack ``message`` event."""

    event_id: str
    region: str
    text: str
    status: int | None  # None: no answer (connection error or client timeout)
    error: str
    sent_at: float  # time.monotonic() when the request went out
    elapsed_ms: float


def both_regions(text: Callable[[int], str] = lambda i: "effect") -> Plan:
    """A plan that alternates us and eu workspaces; ``text(n)`` is the n-th message of each region."""
    teams = (US_TEAM, EU_TEAM)
    return lambda i: (teams[i % 2], text(i // 2))


def one_region(team: str, text: str = "effect") -> Plan:
    """A plan that sends ``text`` to ``team`` every time."""
    return lambda i: (team, text)


class Load:
    """Signed Slack ``message`` events at a steady rate from a background thread; every answer recorded.

    Event ids are ``<prefix><n>`` with a prefix of this load's own, so the closing check
    can find exactly this load's effects and payloads in a cluster other tests use too.
    ``send()`` adds one event from the caller's thread to the same record.
    """

    def __init__(
        self, cluster: Cluster, *, rate: float = 20.0, plan: Plan | None = None, timeout: float = 10.0
    ) -> None:
        """``timeout``: how long a request may wait for control's answer (Slack itself waits 3 s)."""
        self.cluster = cluster
        self.interval = 1.0 / rate
        self.plan = plan or both_regions()
        self.prefix = "EvF" + secrets.token_hex(4).upper()
        self._sender = cluster.sender(timeout=timeout)
        self._answers: list[Answer] = []
        self._lock = threading.Lock()
        self._serial = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._crash: BaseException | None = None

    # -- sending ------------------------------------------------------------------------------

    def send(self, team: str, text: str, *, retry_of: Answer | None = None) -> Answer:
        """Send one ``message`` event saying ``text`` from workspace ``team``; record and return the answer.

        ``retry_of``: resend that event as Slack's first retry (same event id, ``X-Slack-Retry-Num: 1``).
        """
        if retry_of is not None:
            event_id = retry_of.event_id
        else:
            with self._lock:
                event_id = f"{self.prefix}N{self._serial:05d}"
                self._serial += 1
        retry = {"retry_num": 1, "retry_reason": "http_timeout"} if retry_of is not None else {}
        event = {
            "type": "message",
            "user": "U0USER001",
            "channel": "C0FAULTS1",
            "text": text,
            "ts": f"{time.time():.6f}",
        }
        sent_at = time.monotonic()
        status: int | None = None
        error = ""
        try:
            sent = self._sender.event(team_id=team, event_type="message", event=event, event_id=event_id, **retry)
            status = sent.status
            error = "" if status == 200 else sent.text[:200]
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"
        answer = Answer(
            event_id, TEAM_REGION[team], text, status, error, sent_at, (time.monotonic() - sent_at) * 1000.0
        )
        with self._lock:
            self._answers.append(answer)
        return answer

    def _run(self) -> None:
        try:
            n = 0
            due = time.monotonic()
            while not self._stopping.is_set():
                wait = due - time.monotonic()
                if wait > 0 and self._stopping.wait(wait):
                    break
                self.send(*self.plan(n))
                n += 1
                due = max(due + self.interval, time.monotonic() - self.interval)  # no burst after a slow answer
        except BaseException as exc:  # re-raised by stop(), in the test's thread
            self._crash = exc

    def start(self) -> Load:
        """Start sending in the background until ``stop()``."""
        assert self._thread is None, "a Load starts once"
        self._thread = threading.Thread(target=self._run, name=f"load-{self.prefix}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sending and wait for the request under way; re-raise what broke the sender, if anything."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "the load thread did not stop"
        if self._crash is not None:
            raise AssertionError("the load thread failed") from self._crash

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what was answered ---------------------------------------------------------------------

    @property
    def answers(self) -> list[Answer]:
        """Every answer so far, in sending order."""
        with self._lock:
            return list(self._answers)

    def acknowledged(
        self, region: str | None = None, *, after: float | None = None, before: float | None = None
    ) -> set[str]:
        """Event ids answered 200 (for ``region``; sent at or after ``after``, answered by ``before``: monotonic)."""
        return {
            a.event_id
            for a in self.answers
            if a.status == 200
            and (region is None or a.region == region)
            and (after is None or a.sent_at >= after)
            and (before is None or a.sent_at + a.elapsed_ms / 1000.0 <= before)
        }

    def refused(self) -> list[Answer]:
        """Answers other than 200 (Slack would retry these)."""
        return [a for a in self.answers if a.status != 200]

    def texts(self) -> dict[str, str]:
        """``{event id: text}`` of every event sent."""
        return {a.event_id: a.text for a in self.answers}

    def slowest_ms(self) -> float:
        """The longest control took to answer."""
        return max((a.elapsed_ms for a in self.answers), default=0.0)

    def wait_answered(self, count: int, *, timeout: float = 20.0) -> None:
        """Wait until ``count`` events have been answered."""
        wait_until(lambda: len(self.answers) >= count, timeout=timeout, what=f"{count} events answered")


def wait_handled(cluster: Cluster, load: Load, region: str, count: int, *, timeout: float = 20.0) -> None:
    """Wait until region ``region`` has at least ``count`` effects of ``load``."""
    wait_until(
        lambda: len(effect_counts(cluster, region, load.prefix)) >= count,
        timeout=timeout,
        what=f"{count} effects of the load in {region}",
        interval=0.1,
    )


# -- the closing check -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settled:
    """How a scenario ended: what was acknowledged, and how long the backlog took to drain."""

    acknowledged: int
    drain_seconds: float
    payloads: list[PayloadRow]


def assert_exactly_once(
    cluster: Cluster, load: Load, *, timeout: float = DRAIN_TIMEOUT, expect: Collection[str] | None = None
) -> Settled:
    """Acknowledged == handled, each effect once in its own region, nothing pending or in flight.

    Waits (up to ``timeout``) until control has no payload pending or in flight and each
    region's effects of ``load`` are exactly the events acknowledged for that region;
    then checks that no key was handled twice and every acknowledged payload is
    ``delivered``. ``expect``: the acknowledged event ids, when the caller knows them.
    """
    control = ControlDB(cluster)
    wanted = {region: load.acknowledged(region) for region in REGIONS}
    assert any(wanted.values()), "nothing was acknowledged: the scenario sent nothing"
    if expect is not None:
        assert load.acknowledged() == set(expect), "not every event was acknowledged with a 200"
    started = time.monotonic()

    def settled() -> dict[str, Counter[str]] | None:
        if control.active():
            return None
        effects = {region: effect_counts(cluster, region, load.prefix) for region in REGIONS}
        return effects if all(set(effects[r]) == wanted[r] for r in REGIONS) else None

    try:
        effects = wait_until(settled, timeout=timeout, what="acknowledged == handled, nothing pending", interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{diagnosis(cluster, load, wanted)}") from None
    drained = time.monotonic() - started
    twice = {key: n for region in REGIONS for key, n in effects[region].items() if n != 1}
    assert not twice, f"handled more than once: {twice}"
    rows = control.payloads(load.prefix)
    acknowledged = set().union(*wanted.values())
    by_event = {row.event_id: row for row in rows}
    assert acknowledged <= set(by_event), f"acknowledged but never stored: {sorted(acknowledged - set(by_event))[:10]}"
    undelivered = [row for row in rows if row.event_id in acknowledged and row.state != "delivered"]
    assert not undelivered, f"acknowledged payloads not delivered: {undelivered[:10]}"
    return Settled(acknowledged=len(acknowledged), drain_seconds=drained, payloads=rows)


def diagnosis(cluster: Cluster, load: Load, wanted: dict[str, set[str]]) -> str:
    """What differs between acknowledged and handled, and what control still holds, for a failure message."""
    control = ControlDB(cluster)
    lines = [f"control still active: {control.active()}"]
    for region in REGIONS:
        have = effect_counts(cluster, region, load.prefix)
        missing, extra = sorted(wanted[region] - set(have)), sorted(set(have) - wanted[region])
        twice = {key: n for key, n in have.items() if n != 1}
        lines.append(
            f"{region}: acknowledged {len(wanted[region])}, handled {len(have)}; missing {len(missing)} {missing[:5]}, "
            f"unacknowledged {len(extra)} {extra[:5]}, twice {twice}; circuit {control.circuit(region)}"
        )
    stuck = [row for row in control.payloads(load.prefix) if row.state != "delivered"]
    lines.append(f"payloads not delivered ({len(stuck)}): {stuck[:5]}")
    lines.append(f"refused by control ({len(load.refused())}): {load.refused()[:3]}")
    return "\n".join(lines)


@contextlib.contextmanager
def frozen(process: subprocess.Popen[bytes] | None) -> Iterator[None]:
    """Freeze ``process`` (SIGSTOP) for the block: its port still accepts connections, nothing answers."""
    assert process is not None and process.poll() is None, "not running"
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def broker_queue_length(redis_url: str, queue: str = CONTROL_QUEUE) -> int:
    """Messages waiting in a Redis-backed Celery queue."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.llen(queue))
    finally:
        client.close()


def log_since(path: Path, offset: int) -> str:
    """A service log's text after byte ``offset`` (see ``log_size``)."""
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")


def log_size(path: Path) -> int:
    """A service log's size now: pass it to ``log_since`` later."""
    try:
        with open(path, "rb") as log:
            return log.seek(0, 2)
    except FileNotFoundError:
        return 0
