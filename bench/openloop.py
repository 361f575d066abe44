"""Open-loop HTTP/1.1 load: signed Slack requests sent at scheduled instants, whatever the answers do.

A closed-loop generator (bench/loadgen.py) sends the next request when an answer comes
back, so a slow answer delays the requests behind it and hides them from the latency
figures (coordinated omission). Here every request has an instant fixed before the run
starts, at a constant rate: ``uniform`` spacing (``1 / rate`` apart) or ``poisson``
arrivals (exponential gaps of mean ``1 / rate``, seeded). Latency is measured from that
scheduled instant, so time a request spent waiting to be sent counts against the server.

Requests are built and signed before the clock starts (``BodyFactory`` and
``signed_request`` of bench/loadgen.py, each body unique), split between ``processes``
client processes (every other instant each, for two), each with a pool of keep-alive
connections on raw sockets. A request goes to an idle connection at its instant; when
none is idle, the pool grows by one right then (up to ``max_connections``), so a slow
answer never delays the next send. A connection the server closed while idle is
reopened before it is used (the reconnect counts in that request's latency).

Every request comes back as an ``Outcome``: its index, scheduled, sent and answered
times (Unix seconds, one clock for every process), status (0: no answer) and error, so
callers compute their own percentiles. ``run`` is the library entry point::

    requests = signed_requests(ClickBodies("tag").bodies(1000), port=port, path=path, secret=secret, fresh_for=30)
    outcomes = run(requests, port=port, rate=100.0)

or, from a shell, against any Slack endpoint (bodies for workspace T0US00001)::

    .venv/bin/python bench/openloop.py --url http://127.0.0.1:8000/extensions/slack/ --secret S --rate 100
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import multiprocessing
import multiprocessing.connection
import queue
import random
import select
import signal
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import ACTION_ID, TEAM_ID, BodyFactory, Connection, ResponseError, signed_request  # noqa: E402
from slack_sdk.signature import SignatureVerifier  # noqa: E402

ARRIVALS = ("uniform", "poisson")
#: Seconds between the clients reporting ready and the first scheduled instant.
START_LEAD = 0.3


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One scheduled request: when it was due, sent and answered (Unix seconds), and how."""

    index: int
    scheduled: float
    sent: float | None
    answered: float | None
    #: HTTP status, or 0 when no answer came (``error`` says why).
    status: int
    error: str = ""

    @property
    def latency(self) -> float | None:
        """Seconds from the scheduled instant to the whole answer; ``None`` without one."""
        return None if self.answered is None else self.answered - self.scheduled

    @property
    def send_lag(self) -> float | None:
        """Seconds the request waited past its instant before its first byte was written."""
        return None if self.sent is None else self.sent - self.scheduled


@dataclasses.dataclass(frozen=True)
class PoolReport:
    """What one client process's connection pool did."""

    connections: int
    reconnects: int
    resent: int


class ClickBodies(BodyFactory):
    """BodyFactory's block_actions clicks, for any workspace and action, with given triggers and values.

    ``triggers[i]`` and ``values[i]`` (when given) replace body ``i``'s generated
    trigger_id and button value, so clicks can carry trigger_ids a (fake) Slack issued.
    """

    def __init__(
        self,
        tag: str,
        *,
        team_id: str = TEAM_ID,
        action_id: str = ACTION_ID,
        triggers: Sequence[str] = (),
        values: Sequence[str] = (),
    ) -> None:
        self.team_id = team_id
        self.triggers = list(triggers)
        self.click_values = list(values)
        super().__init__(tag)  # builds and checks the template with loadgen's workspace and action
        self.template = self.template.replace(TEAM_ID, team_id).replace(ACTION_ID, action_id)

    def values(self, index: int, now: float) -> dict[str, str]:
        """The four per-body fields of click ``index``."""
        values = super().values(index, now)
        if index < len(self.triggers):
            values["trigger_id"] = self.triggers[index]
        if index < len(self.click_values):
            values["value"] = self.click_values[index]
        values["response_url"] = values["response_url"].replace(TEAM_ID, self.team_id)
        return values

    def bodies(self, count: int) -> list[bytes]:
        """Bodies ``0 .. count - 1``."""
        now = time.time()
        return [self.body(index, now=now) for index in range(count)]


def signed_requests(bodies: Sequence[bytes], *, port: int, path: str, secret: str, fresh_for: float) -> list[bytes]:
    """Whole HTTP requests, signed like Slack for a timestamp ``fresh_for`` seconds from now.

    Signed ahead (as bench/loadgen.py does) so that no request of the run looks old: the
    receiver estimates time in transit from the timestamp.
    """
    verifier = SignatureVerifier(secret)
    timestamp = int(time.time() + fresh_for) + 1
    return [signed_request(port=port, path=path, body=body, verifier=verifier, timestamp=timestamp) for body in bodies]


def schedule(rate: float, duration: float, *, arrival: str = "uniform", seed: int = 1) -> list[float]:
    """Offsets (seconds from the start) of every request in ``duration`` at ``rate`` per second."""
    if rate <= 0 or duration <= 0:
        raise ValueError("rate and duration must be positive")
    if arrival == "uniform":
        return [index / rate for index in range(max(1, int(rate * duration)))]
    if arrival != "poisson":
        raise ValueError(f"arrival must be one of {ARRIVALS}, not {arrival!r}")
    generator = random.Random(seed)
    offsets: list[float] = []
    moment = generator.expovariate(rate)
    while moment < duration:
        offsets.append(moment)
        moment += generator.expovariate(rate)
    return offsets


@dataclasses.dataclass
class _Shard:
    """One client process's share: the requests it sends and when (offsets from the start)."""

    port: int
    indices: list[int]
    offsets: list[float]
    requests: list[bytes]
    connections: int
    max_connections: int
    timeout: float


class _Pool:
    """Keep-alive connections, each on its own thread, taking scheduled requests from one queue."""

    def __init__(self, shard: _Shard, clock: _Clock) -> None:
        self.shard = shard
        self.clock = clock
        self.jobs: queue.SimpleQueue[tuple[int, float, bytes] | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.idle = 0
        self.threads: list[threading.Thread] = []
        self.outcomes: list[Outcome] = []
        self.reconnects = 0
        self.resent = 0

    def open(self, count: int) -> None:
        """Open ``count`` connections now (before the clock starts) and start their threads."""
        for _ in range(count):
            connection = Connection(self.shard.port)
            connection.open()
            self._start(connection)

    def _start(self, connection: Connection) -> None:
        with self.lock:
            self.idle += 1
        thread = threading.Thread(target=self._serve, args=(connection,), daemon=True)
        self.threads.append(thread)
        thread.start()

    def submit(self, index: int, scheduled: float, request: bytes) -> None:
        """Hand a request to an idle connection; with none idle, grow the pool by one first."""
        with self.lock:
            grow = self.idle <= 0 and len(self.threads) < self.shard.max_connections
            self.idle -= 1
        if grow:
            self._start(Connection(self.shard.port))  # connects on its first request: counted in its latency
        self.jobs.put((index, scheduled, request))

    def finish(self) -> list[Outcome]:
        """Wait for every answer (or its timeout), stop the threads, return the outcomes."""
        for _ in self.threads:
            self.jobs.put(None)
        for thread in self.threads:
            thread.join()
        return self.outcomes

    def _serve(self, connection: Connection) -> None:
        connection_used = False
        local: list[Outcome] = []
        while True:
            job = self.jobs.get()
            if job is None:
                break
            index, scheduled, request = job
            if connection.sock is not None and connection_used and _closed_by_peer(connection):
                connection.close()
                with self.lock:
                    self.reconnects += 1
            outcome = self._exchange(connection, index, scheduled, request, reused=connection_used)
            connection_used = connection.sock is not None
            local.append(outcome)
            with self.lock:
                self.idle += 1
        connection.close()
        with self.lock:
            self.outcomes.extend(local)

    def _exchange(
        self, connection: Connection, index: int, scheduled: float, request: bytes, *, reused: bool
    ) -> Outcome:
        sent = self.clock.now()
        for attempt in (1, 2):
            try:
                if connection.sock is None:
                    connection.open()
                    assert connection.sock is not None
                    connection.sock.settimeout(self.shard.timeout)
                status, _ = connection.exchange(request)
                return Outcome(index, scheduled, sent, self.clock.now(), status)
            except (OSError, ResponseError) as exc:
                connection.close()
                # A keep-alive connection the server closed just as the request went out:
                # nothing was read, so send it once more on a fresh connection.
                if attempt == 1 and reused and not isinstance(exc, TimeoutError):
                    with self.lock:
                        self.resent += 1
                    continue
                return Outcome(index, scheduled, sent, None, 0, f"{type(exc).__name__}: {exc}"[:200])
        raise AssertionError("unreachable")


def _closed_by_peer(connection: Connection) -> bool:
    """Whether an idle keep-alive socket is readable (the server closed it, or sent what it should not)."""
    assert connection.sock is not None
    readable, _, _ = select.select([connection.sock], [], [], 0)
    return bool(readable)


class _Clock:
    """Unix time read from the monotonic clock: every process agrees on it, and it never steps."""

    def __init__(self) -> None:
        self.wall = time.time()
        self.mono = time.monotonic()

    def now(self) -> float:
        return self.wall + (time.monotonic() - self.mono)

    def sleep_until(self, moment: float) -> None:
        delay = moment - self.now()
        if delay > 0:
            time.sleep(delay)


def _client_main(pipe: multiprocessing.connection.Connection) -> None:
    """A client process: take a shard, open its connections, run it at the agreed start, send outcomes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops us
    shard: _Shard = pipe.recv()
    clock = _Clock()
    pool = _Pool(shard, clock)
    try:
        pool.open(min(shard.connections, shard.max_connections))
    except OSError as exc:
        pipe.send(("error", f"cannot connect to 127.0.0.1:{shard.port}: {exc}"))
        return
    pipe.send(("ready", None))
    start: float = pipe.recv()
    for index, offset, request in zip(shard.indices, shard.offsets, shard.requests, strict=True):
        scheduled = start + offset
        clock.sleep_until(scheduled)
        pool.submit(index, scheduled, request)
    outcomes = pool.finish()
    pipe.send(("done", (outcomes, PoolReport(len(pool.threads), pool.reconnects, pool.resent))))


def run(
    requests: Sequence[bytes],
    *,
    port: int,
    rate: float,
    arrival: str = "uniform",
    seed: int = 1,
    processes: int = 2,
    connections: int | None = None,
    max_connections: int = 256,
    timeout: float = 30.0,
) -> tuple[list[Outcome], list[PoolReport]]:
    """Send ``requests`` (in order) to 127.0.0.1:``port`` at ``rate`` per second; outcomes by index.

    The run lasts ``len(requests) / rate`` seconds. ``connections`` per process are
    opened before the clock starts (default: enough for 50 ms answers at the rate, at
    least 4); a process never has more than ``max_connections``. An answer that takes
    longer than ``timeout`` seconds is an outcome with status 0.
    """
    if not requests:
        return [], []
    offsets = schedule(rate, len(requests) / rate, arrival=arrival, seed=seed)[: len(requests)]
    if len(offsets) < len(requests):  # poisson: a short draw; the rest follow at the mean gap
        offsets += [offsets[-1] + (n + 1) / rate for n in range(len(requests) - len(offsets))]
    per_process = connections or max(4, math.ceil(rate / processes * 0.05))
    context = multiprocessing.get_context("spawn")
    pipes: list[multiprocessing.connection.Connection] = []
    children: list[Any] = []
    try:
        for number in range(processes):
            parent, child = context.Pipe()
            process = context.Process(target=_client_main, args=(child,), name=f"openloop-{number}", daemon=True)
            process.start()
            child.close()
            pipes.append(parent)
            children.append(process)
            indices = list(range(number, len(requests), processes))
            parent.send(
                _Shard(
                    port=port,
                    indices=indices,
                    offsets=[offsets[i] for i in indices],
                    requests=[requests[i] for i in indices],
                    connections=per_process,
                    max_connections=max_connections,
                    timeout=timeout,
                )
            )
        for pipe in pipes:
            kind, value = _receive(pipe, 60.0)
            if kind != "ready":
                raise RuntimeError(f"open-loop client: {value}")
        start = time.time() + START_LEAD
        for pipe in pipes:
            pipe.send(start)
        outcomes: list[Outcome] = []
        reports: list[PoolReport] = []
        for pipe in pipes:
            kind, value = _receive(pipe, offsets[-1] + START_LEAD + timeout + 60.0)
            if kind != "done":
                raise RuntimeError(f"open-loop client: {value}")
            outcomes.extend(value[0])
            reports.append(value[1])
    finally:
        for process in children:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
    outcomes.sort(key=lambda outcome: outcome.index)
    return outcomes, reports


def _receive(pipe: multiprocessing.connection.Connection, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise RuntimeError(f"an open-loop client did not answer within {timeout:.0f} s")
    return pipe.recv()


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (nearest rank) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def summary(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Counts, statuses, achieved rate and latency percentiles (ms, from the scheduled instant)."""
    latencies = [o.latency for o in outcomes if o.latency is not None and 200 <= o.status < 300]
    lags = [o.send_lag for o in outcomes if o.send_lag is not None]
    span = (outcomes[-1].scheduled - outcomes[0].scheduled) if len(outcomes) > 1 else 0.0
    return {
        "requests": len(outcomes),
        "ok": len(latencies),
        "statuses": dict(Counter(o.status for o in outcomes)),
        "errors": dict(Counter(o.error.split(":")[0] for o in outcomes if o.error)),
        "offered_rate": (len(outcomes) - 1) / span if span else None,
        **{f"p{q:g}_ms": _ms(percentile(latencies, q)) for q in (50, 95, 99)},
        "max_ms": _ms(max(latencies, default=None)),
        "send_lag_p99_ms": _ms(percentile(lags, 99)),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one open-loop load against ``--url`` and print its summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="the Slack request URL, http://127.0.0.1:PORT/PATH")
    parser.add_argument("--secret", required=True, help="the Slack signing secret the server verifies with")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (default 100)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--arrival", choices=ARRIVALS, default="uniform", help="spacing of the instants")
    parser.add_argument("--processes", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--team", default=TEAM_ID, help=f"the clicks' workspace (default {TEAM_ID})")
    parser.add_argument("--action", default=ACTION_ID, help=f"the clicked action_id (default {ACTION_ID})")
    args = parser.parse_args(argv)
    url = urllib.parse.urlsplit(args.url)
    if url.hostname != "127.0.0.1" or url.port is None:
        parser.error("--url must be http://127.0.0.1:PORT/...")
    count = max(1, int(args.rate * args.duration))
    bodies = ClickBodies(f"cli{int(time.time())}", team_id=args.team, action_id=args.action).bodies(count)
    requests = signed_requests(
        bodies, port=url.port, path=url.path or "/", secret=args.secret, fresh_for=args.duration + 10
    )
    outcomes, pools = run(requests, port=url.port, rate=args.rate, arrival=args.arrival, processes=args.processes)
    print(summary(outcomes))
    print("pools:", [dataclasses.asdict(pool) for pool in pools])
    return 0


if __name__ == "__main__":
    sys.exit(main())
