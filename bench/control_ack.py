"""How fast a Slack block_actions request is acknowledged: django-silo-router vs Bolt vs a bare view.

Gunicorn servers on 127.0.0.1, same gunicorn settings, each with its own minimal
Django project (bench/projects/):

  bare        a Django view that reads the body and answers an empty 200 (the ceiling)
  floor_sqlite, floor_journal
              the floor of any durable ack (projects/durable_floor.py): the bare view
              committing the body before its 200 with the cheapest code that keeps that
              promise (group commit, raw sqlite3 into a table of two columns, or an
              append and fdatasync to a journal file of the process), nothing else
  silo_router SiloRouterMiddleware in control mode: verify, classify, resolve through
              the Integration table, commit a Payload row and wake delivery through
              Celery, then an empty 200; once per storage (``--storage``):
                silo_router                 SQLite (WAL, synchronous=FULL), filesystem broker
                silo_router_sqlite_redis    SQLite, Celery broker on Redis
                silo_router_postgres_redis  PostgreSQL (fsync on), Celery broker on Redis
              PostgreSQL and Redis are throwaway servers the benchmark starts.
  bolt        Slack Bolt for Python's Django adapter, an app.action listener that acks
              (default mode: the listener runs on Bolt's thread pool)
  bolt_pbr    the same with process_before_response=True

Each request is a unique, correctly signed block_actions body, signed before the clock
starts. Three measurements:

  saturated       closed loop, 16 keep-alive connections, driven by wrk
                  (bench/wrk/signed_bodies.lua); ``--repeats`` rounds over the targets in
                  a rotated order, the median reported. Each round also drives the bare
                  view with the Python generator (bench/loadgen.py), to show how much the
                  generator itself limits a measurement.
  one_connection  closed loop, one connection: one request at a time
  open_loop       silo_router targets only: requests scheduled at a fixed rate (half of
                  the target's saturated rate unless ``--rate``) by bench/openloop.py,
                  evenly spaced unless ``--arrival poisson``, latency from each request's
                  scheduled instant (no coordinated omission)

Afterwards every silo_router server's database must hold one Payload row per request it
was sent, and its broker must name every stored payload in exactly one wake-up message
(``silo_router.control.deliver`` [id] or ``silo_router.control.deliver_batch`` [[ids]]);
wake-ups may follow the answer by a few hundred ms, so the check waits for them.
``--profile`` records py-spy over one extra saturated run of silo_router's workers.

    .venv/bin/python bench/control_ack.py            # about 5 minutes on 2 cores
    .venv/bin/python bench/control_ack.py --quick    # about a minute and a half
    .venv/bin/python bench/control_ack.py --quick --storage sqlite-filesystem --targets bare,silo_router

Writes bench/results/control_ack.json and bench/results/control_ack.png.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import functools
import http.client
import importlib.metadata
import json
import math
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
sys.path.insert(0, str(BENCH_DIR))

import openloop  # noqa: E402
from loadgen import ClientPool, Segment, SegmentResult, WrkResult, run_wrk, wrk_binary  # noqa: E402
from projects import storage as bench_storage  # noqa: E402

SLACK_SIGNING_SECRET = "bench-only-slack-signing-secret-0123456789"


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    title: str
    settings: str
    path: str
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    #: A silo_router target's storage (``projects.storage.STORAGES``); empty for the others.
    storage: str = ""


SILO_PATH = "/extensions/slack/"
TARGETS = (
    Target("bare", "bare Django view (ceiling)", "projects.settings_bare", "/slack/events"),
    Target(
        "floor_sqlite",
        "durable floor: bare view + raw SQLite group commit",
        "projects.settings_floor",
        "/slack/events",
        {"BENCH_FLOOR_STORE": "sqlite"},
    ),
    Target(
        "floor_journal",
        "durable floor: bare view + journal file group commit",
        "projects.settings_floor",
        "/slack/events",
        {"BENCH_FLOOR_STORE": "journal"},
    ),
    Target(
        "silo_router",
        "django-silo-router (SQLite, filesystem broker)",
        "projects.settings_silo",
        SILO_PATH,
        storage="sqlite-filesystem",
    ),
    Target(
        "silo_router_sqlite_redis",
        "django-silo-router (SQLite, Redis broker)",
        "projects.settings_silo",
        SILO_PATH,
        storage="sqlite-redis",
    ),
    Target(
        "silo_router_postgres_redis",
        "django-silo-router (PostgreSQL, Redis broker)",
        "projects.settings_silo",
        SILO_PATH,
        storage="postgres-redis",
    ),
    Target(
        "bolt",
        "Bolt Django adapter (default)",
        "projects.settings_bolt",
        "/slack/events",
        {"BENCH_BOLT_PROCESS_BEFORE_RESPONSE": "0"},
    ),
    Target(
        "bolt_pbr",
        "Bolt Django adapter (process_before_response)",
        "projects.settings_bolt",
        "/slack/events",
        {"BENCH_BOLT_PROCESS_BEFORE_RESPONSE": "1"},
    ),
)


# -- servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclasses.dataclass
class Server:
    target: Target
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGTERM the gunicorn master (graceful), then SIGKILL its process group if it lingers."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group gunicorn was started in
            self.proc.wait(timeout=5)

    def log_problems(self) -> list[str]:
        """Log lines other than gunicorn's own start and stop chatter."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return []
        routine = (
            "Starting gunicorn",
            "Listening at",
            "Using worker",
            "Booting worker",
            "Handling signal",
            "Worker exiting",
            "Shutting down",
        )
        return [line for line in lines if line.strip() and not any(r in line for r in routine)]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@functools.cache
def gunicorn_has_control_socket() -> bool:
    """Whether this gunicorn has the control socket (27 and later), which ``--no-control-socket`` turns off."""
    done = subprocess.run([sys.executable, "-m", "gunicorn", "--help"], capture_output=True, text=True, timeout=60)
    return "--no-control-socket" in done.stdout


def start_server(target: Target, *, var_dir: Path, workers: int, threads: int) -> Server:
    port = free_port()
    log = var_dir / f"gunicorn-{target.name}.log"
    env = {
        **os.environ,
        **target.env,
        "DJANGO_SETTINGS_MODULE": target.settings,
        "BENCH_VAR_DIR": str(var_dir / target.name),
        "BENCH_SLACK_SIGNING_SECRET": SLACK_SIGNING_SECRET,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("SENTRY_DSN", None)
    command = [
        sys.executable, "-m", "gunicorn", "projects.wsgi:application",
        "--pythonpath", str(BENCH_DIR),
        "--bind", f"127.0.0.1:{port}",
        "--worker-class", "gthread",
        "--workers", str(workers),
        "--threads", str(threads),
        "--keep-alive", "30",
        "--timeout", "60",
        "--graceful-timeout", "5",
        "--log-level", "warning",
        # gunicorn 27's control socket is one path per user: servers started side by side would share it.
        *(["--no-control-socket"] if gunicorn_has_control_socket() else []),
    ]  # fmt: skip
    # An empty working directory: a folder named like a package in the current one would
    # shadow it (a namespace package found on sys.path beats an editable install's finder).
    cwd = var_dir / "gunicorn-cwd"
    cwd.mkdir(exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Server(target=target, port=port, proc=proc, log=log)


def wait_ready(server: Server, timeout: float = 60.0) -> None:
    """Until every worker answers /healthz (a few probes on fresh connections)."""
    deadline = time.monotonic() + timeout
    ok = 0
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.target.name} server exited ({server.proc.returncode}):\n{server.log_tail()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("GET", "/healthz")
            status = conn.getresponse().status
            conn.close()
        except OSError:
            status = 0
        ok = ok + 1 if status == 200 else 0
        if ok >= 8:
            return
        time.sleep(0.05 if ok else 0.2)
    raise RuntimeError(f"{server.target.name} server not ready after {timeout:.0f}s:\n{server.log_tail()}")


def is_silo(target: Target) -> bool:
    return target.settings == "projects.settings_silo"


def manage_silo(command: str, var_dir: Path, target: Target | None = None) -> dict[str, Any]:
    """``projects.silo_db prepare|count`` on ``target``'s database and broker (default: the SQLite default's)."""
    target = target or next(t for t in TARGETS if t.name == "silo_router")
    env = {
        **os.environ,
        **target.env,
        "BENCH_VAR_DIR": str(var_dir / target.name),
        "DJANGO_SETTINGS_MODULE": target.settings,
    }
    done = subprocess.run(
        [sys.executable, "-m", "projects.silo_db", command],
        cwd=BENCH_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"projects.silo_db {command} failed:\n{done.stdout}\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@contextlib.contextmanager
def running_servers(
    targets: Sequence[Target], *, var_dir: Path, workers: int, threads: int
) -> Iterator[dict[str, Server]]:
    servers: dict[str, Server] = {}
    try:
        for target in targets:
            servers[target.name] = start_server(target, var_dir=var_dir, workers=workers, threads=threads)
        for server in servers.values():
            wait_ready(server)
        yield servers
    finally:
        for server in servers.values():
            server.stop()


# -- measurement -----------------------------------------------------------------------


@dataclasses.dataclass
class Run:
    target: str
    #: "saturated": all connections busy; "one_connection": one request at a time;
    #: "open_loop": a fixed rate; "saturated_python": the bare view under the Python
    #: generator (the generator check); "profiled": a saturated run under py-spy.
    mode: str
    repeat: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    statuses: dict[str, int]
    warmup_requests: int
    warmup_statuses: dict[str, int]
    errors: int
    samples: list[str]
    body_bytes: int
    #: "wrk" or "python".
    generator: str = "python"
    #: Bodies that reached the server, warm-up included (wrk: answered or in flight at its end).
    bodies_sent: int | None = None
    #: wrk threads that ran out of bodies (the run's rate is then too low).
    exhausted: bool = False
    #: Open loop: the rate asked for, and how late the sends left (p50, p99) after their scheduled time.
    rate: float | None = None
    send_lag_p50_ms: float | None = None
    send_lag_p99_ms: float | None = None

    @property
    def sent_incl_warmup(self) -> int:
        if self.bodies_sent is not None:
            return self.bodies_sent
        return self.requests + self.warmup_requests + self.errors


def milliseconds(latencies: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of ``latencies`` (seconds) in ms, rounded; NaN without any."""
    value = openloop.percentile(latencies, q)
    return math.nan if value is None else round(value * 1000, 2)


def merge(target: str, mode: str, repeat: int, results: Sequence[SegmentResult], body_bytes: int) -> Run:
    started = min(r.started for r in results)
    ended = max(r.ended for r in results)
    latencies = sorted(x for r in results for x in r.latencies)
    statuses: dict[str, int] = {}
    warm: dict[str, int] = {}
    for r in results:
        for code, n in r.statuses.items():
            statuses[str(code)] = statuses.get(str(code), 0) + n
        for code, n in r.warmup_statuses.items():
            warm[str(code)] = warm.get(str(code), 0) + n
    seconds = max(ended - started, 1e-9)
    return Run(
        target=target,
        mode=mode,
        repeat=repeat,
        requests=len(latencies),
        seconds=round(seconds, 3),
        rps=round(len(latencies) / seconds, 1),
        p50_ms=milliseconds(latencies, 50),
        p95_ms=milliseconds(latencies, 95),
        p99_ms=milliseconds(latencies, 99),
        statuses=statuses,
        warmup_requests=sum(r.warmup_sent for r in results),
        warmup_statuses=warm,
        errors=sum(r.errors for r in results),
        samples=[s for r in results for s in r.samples][:5],
        body_bytes=body_bytes,
    )


def split(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def share(whole: Segment, parts: int, index: int) -> Segment:
    """Client process ``index``'s part of a segment: its connections, and request bounds in proportion."""
    connections = split(whole.connections, parts, index)
    return dataclasses.replace(
        whole,
        connections=connections,
        max_requests=-(-whole.max_requests * connections // whole.connections),
        max_warmup_requests=-(-whole.max_warmup_requests * connections // whole.connections),
    )


def measure_segment(
    args: argparse.Namespace, pool: ClientPool, target: Target, server: Server, *, mode: str, repeat: int,
    connections: int, warmup: float, duration: float, budget: int, warm_budget: int, stamp: str,
) -> Run:  # fmt: skip
    whole = Segment(
        label=target.name,
        port=server.port,
        path=target.path,
        secret=SLACK_SIGNING_SECRET,
        connections=connections,
        warmup=warmup,
        duration=duration,
        max_requests=budget,
        max_warmup_requests=warm_budget,
        tag=f"{stamp}{target.name}{mode[0]}{repeat}",
    )
    results, body_bytes = pool.run(functools.partial(share, whole, args.clients), timeout=120 + warmup + duration)
    run = merge(target.name, mode, repeat, results, body_bytes)
    report(args, run)
    return run


def measure_wrk(
    args: argparse.Namespace, target: Target, server: Server, *, mode: str, repeat: int, connections: int,
    warmup: float, duration: float, budget: int, warm_budget: int, stamp: str, work_dir: Path,
) -> Run:  # fmt: skip
    """A wrk warm-up, then the measured wrk run; every body unique, the warm-up's included."""
    common = {"port": server.port, "path": target.path, "secret": SLACK_SIGNING_SECRET, "connections": connections,
              "work_dir": work_dir, "threads": args.wrk_threads}  # fmt: skip
    tag = f"{stamp}{target.name}{mode[0]}{repeat}"
    warm: WrkResult | None = None
    if warmup > 0:
        warm = run_wrk(duration=warmup, max_requests=warm_budget, tag=f"{tag}w", **common)
    result = run_wrk(duration=duration, max_requests=budget, tag=f"{tag}m", **common)
    answered = result.answered_bodies
    warm_answered = warm.answered_bodies if warm else 0
    errors = sum(result.errors.values()) + (sum(warm.errors.values()) if warm else 0)
    lat = result.latency_us
    run = Run(
        target=target.name,
        mode=mode,
        repeat=repeat,
        requests=answered,
        seconds=round(result.seconds, 3),
        rps=round(answered / max(result.seconds, 1e-9), 1),
        p50_ms=round(lat["50"] / 1000, 2),
        p95_ms=round(lat["95"] / 1000, 2),
        p99_ms=round(lat["99"] / 1000, 2),
        statuses={k: v for k, v in {"200": answered - result.non200, "other": result.non200}.items() if v},
        warmup_requests=warm_answered,
        warmup_statuses={
            k: v
            for k, v in {
                "200": warm_answered - (warm.non200 if warm else 0),
                "other": warm.non200 if warm else 0,
            }.items()
            if v
        },
        errors=errors,
        samples=[*(warm.samples if warm else []), *result.samples][:5],
        body_bytes=result.body_bytes,
        generator="wrk",
        bodies_sent=result.sent + (warm.sent if warm else 0),
        exhausted=bool(result.exhausted_threads),
    )
    report(args, run)
    return run


def report(args: argparse.Namespace, run: Run) -> None:
    bad = {k: v for k, v in run.statuses.items() if k != "200"}
    note = f"  NON-200 {bad} errors={run.errors}" if bad or run.errors else ""
    if run.exhausted:
        note += "  RAN OUT OF BODIES"
    step = {
        "saturated": f"round {run.repeat + 1}/{args.repeats}",
        "saturated_python": f"round {run.repeat + 1}/{args.repeats}",
        "one_connection": "1 connection",
        "profiled": "py-spy",
        "open_loop": f"{run.rate:.0f}/s fixed" if run.rate else "open loop",
    }[run.mode]
    name = run.target + (" (python)" if run.mode == "saturated_python" else "")
    lag = f"  send lag p99 {run.send_lag_p99_ms:.2f}" if run.send_lag_p99_ms is not None else ""
    print(
        f"  {step:<14} {name:<27} {run.rps:8.0f} req/s"
        f"  p50 {run.p50_ms:6.2f}  p95 {run.p95_ms:6.2f}  p99 {run.p99_ms:6.2f} ms"
        f"  ({run.requests} in {run.seconds:.2f}s){lag}{note}",
        flush=True,
    )


def measure_one(
    args: argparse.Namespace, pool: ClientPool, target: Target, server: Server, *, generator: str, **kwargs: Any
) -> Run:
    """One measured run (after its warm-up) with ``generator``: "wrk" or "python"."""
    if generator == "wrk":
        return measure_wrk(args, target, server, work_dir=args.work_dir, **kwargs)
    run = measure_segment(args, pool, target, server, **kwargs)
    return run


def measure(
    args: argparse.Namespace, targets: Sequence[Target], servers: dict[str, Server], pool: ClientPool
) -> list[Run]:
    """``--repeats`` saturated rounds over the targets, then one run per target with one connection.

    With wrk as the generator, each round also measures the bare view with the Python
    generator right after wrk's run of it: the generator check.
    """
    generator = getattr(args, "generator", "python")
    compare = generator == "wrk" and getattr(args, "compare_generators", False)
    runs: list[Run] = []
    warmed: set[str] = set()
    #: Best rate seen per target: later runs sign only about as many bodies as they can use.
    seen_rps: dict[str, float] = {}
    stamp = f"{int(time.time()):x}"
    for repeat in range(args.repeats):
        # Rotate the order each round so that no target always runs first or last.
        order = list(targets[repeat % len(targets) :]) + list(targets[: repeat % len(targets)])
        for target in order:
            warmup = args.warmup if target.name not in warmed else args.rewarmup
            warmed.add(target.name)
            rate = seen_rps.get(target.name)
            budget = args.max_requests if rate is None else min(args.max_requests, int(rate * args.duration * 2) + 400)
            warm_budget = int((args.max_rate if rate is None else rate * 2) * max(warmup, 1.0)) + 200
            run = measure_one(
                args, pool, target, servers[target.name], generator=generator, mode="saturated", repeat=repeat,
                connections=args.connections, warmup=warmup, duration=args.duration, budget=budget,
                warm_budget=warm_budget, stamp=stamp,
            )  # fmt: skip
            runs.append(run)
            seen_rps[target.name] = max(seen_rps.get(target.name, 0.0), run.rps)
            if compare and target.name == "bare":
                runs.append(
                    measure_one(
                        args, pool, target, servers[target.name], generator="python", mode="saturated_python",
                        repeat=repeat, connections=args.connections, warmup=args.rewarmup, duration=args.duration,
                        budget=budget, warm_budget=warm_budget, stamp=stamp,
                    )
                )  # fmt: skip
    if args.single_duration > 0:
        for target in targets:
            # One connection never goes faster than sixteen: the saturated rate bounds the bodies needed.
            rate = seen_rps.get(target.name, args.max_rate)
            runs.append(
                measure_one(
                    args, pool, target, servers[target.name], generator=generator, mode="one_connection", repeat=0,
                    connections=1, warmup=args.rewarmup, duration=args.single_duration,
                    budget=min(args.max_requests, int(rate * max(args.single_duration, 1.0) * 1.5) + 200),
                    warm_budget=int(rate * max(args.rewarmup, 1.0) * 1.5) + 100, stamp=stamp,
                )
            )  # fmt: skip
    return runs


def measure_open_loop(args: argparse.Namespace, target: Target, server: Server, rate: float) -> Run:
    """``rate`` requests a second by bench/openloop.py, ``--rewarmup`` seconds of warm-up then ``--open-duration``
    measured; latency from each request's scheduled instant."""
    count = max(2, math.ceil(rate * (args.rewarmup + args.open_duration)))
    bodies = openloop.ClickBodies(f"{int(time.time()):x}{target.name}o").bodies(count)
    requests = openloop.signed_requests(
        bodies, port=server.port, path=target.path, secret=SLACK_SIGNING_SECRET,
        fresh_for=args.rewarmup + args.open_duration + 5,
    )  # fmt: skip
    outcomes, _ = openloop.run(
        requests, port=server.port, rate=rate, arrival=args.arrival, processes=args.clients,
        connections=args.open_connections,
    )  # fmt: skip
    start = outcomes[0].scheduled + args.rewarmup
    warm = [o for o in outcomes if o.scheduled < start]
    measured = [o for o in outcomes if o.scheduled >= start]
    ok = [o.latency for o in measured if o.latency is not None and 200 <= o.status < 300]
    lags = [o.send_lag for o in measured if o.send_lag is not None]
    answered = [o.answered for o in measured if o.answered is not None]
    seconds = max(max(answered, default=start) - measured[0].scheduled, 1e-9) if measured else 1e-9
    run = Run(
        target=target.name,
        mode="open_loop",
        repeat=0,
        requests=len(answered),
        seconds=round(seconds, 3),
        rps=round(len(answered) / seconds, 1),
        p50_ms=milliseconds(ok, 50),
        p95_ms=milliseconds(ok, 95),
        p99_ms=milliseconds(ok, 99),
        statuses={str(code): n for code, n in Counter(o.status for o in measured).items()},
        warmup_requests=len(warm),
        warmup_statuses={str(code): n for code, n in Counter(o.status for o in warm).items()},
        errors=sum(1 for o in outcomes if o.error),
        samples=[f"{o.status} {o.error}" for o in outcomes if o.error][:5],
        body_bytes=len(bodies[0]),
        generator="openloop",
        # Every scheduled request was sent (one that got no answer counts with status 0).
        bodies_sent=len(outcomes),
        rate=round(rate, 1),
        send_lag_p50_ms=milliseconds(lags, 50),
        send_lag_p99_ms=milliseconds(lags, 99),
    )
    report(args, run)
    return run


def profiled_run(
    args: argparse.Namespace, pool: ClientPool, target: Target, server: Server, out: Path
) -> tuple[Run, Path]:
    """One extra saturated run while py-spy samples the gunicorn master and its workers."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise RuntimeError("py-spy is not installed: pip install -r bench/requirements.txt")
    suffix = {"flamegraph": "svg", "speedscope": "speedscope.json", "raw": "txt"}[args.profile_format]
    path = out / f"profile-{target.name}.{suffix}"
    command = [
        py_spy, "record", "--pid", str(server.proc.pid), "--subprocesses", "--rate", "100",
        "--duration", str(int(args.duration + args.rewarmup) + 2), "--format", args.profile_format,
        "--output", str(path), *(["--idle"] if args.profile_idle else []),
    ]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    spy = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)  # py-spy attaches to every process first
    try:
        run = measure_one(
            args, pool, target, server, generator=getattr(args, "generator", "python"), mode="profiled", repeat=0,
            connections=args.connections, warmup=args.rewarmup, duration=args.duration,
            budget=args.max_requests, warm_budget=int(args.max_rate * max(args.rewarmup, 1.0)) + 200,
            stamp=f"{int(time.time()):x}",
        )  # fmt: skip
    finally:
        output, _ = spy.communicate(timeout=args.duration + 60)
    if spy.returncode != 0 or not path.exists():
        raise RuntimeError(f"py-spy failed ({spy.returncode}): {output[-1000:]}")
    return run, path


def summarize(targets: Sequence[Target], runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for target in targets:
        mine = [r for r in runs if r.target == target.name and r.mode == "saturated"]
        every = [r for r in runs if r.target == target.name]
        single = next((r for r in every if r.mode == "one_connection"), None)
        opened = next((r for r in every if r.mode == "open_loop"), None)
        rps = [r.rps for r in mine]
        summary[target.name] = {
            "title": target.title,
            "storage": target.storage or None,
            "generator": mine[0].generator if mine else None,
            "rps_median": statistics.median(rps),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "p50_ms_median": statistics.median(r.p50_ms for r in mine),
            "p95_ms_median": statistics.median(r.p95_ms for r in mine),
            "p99_ms_median": statistics.median(r.p99_ms for r in mine),
            "requests": sum(r.requests for r in mine),
            "one_connection": None
            if single is None
            else {"rps": single.rps, "p50_ms": single.p50_ms, "p95_ms": single.p95_ms, "p99_ms": single.p99_ms},
            "open_loop": None
            if opened is None
            else {
                "rate": opened.rate,
                "achieved_rps": opened.rps,
                "requests": opened.requests,
                "p50_ms": opened.p50_ms,
                "p95_ms": opened.p95_ms,
                "p99_ms": opened.p99_ms,
                "send_lag_p50_ms": opened.send_lag_p50_ms,
                "send_lag_p99_ms": opened.send_lag_p99_ms,
            },
            # Correctness counts cover every request this server was sent, in every mode.
            "requests_sent_incl_warmup": sum(r.sent_incl_warmup for r in every),
            "non_200": sum(
                n for r in every for k, n in [*r.statuses.items(), *r.warmup_statuses.items()] if k != "200"
            ),
            "errors": sum(r.errors for r in every),
            "ran_out_of_bodies": sum(r.exhausted for r in every),
        }
    return summary


def generator_check(runs: Sequence[Run]) -> dict[str, Any] | None:
    """The bare view's saturated rate under the Python generator against wrk's, run by run in the same rounds."""
    wrk = [r.rps for r in runs if r.target == "bare" and r.mode == "saturated" and r.generator == "wrk"]
    python = [r.rps for r in runs if r.target == "bare" and r.mode == "saturated_python"]
    if not wrk or not python:
        return None
    ratio = statistics.median(python) / statistics.median(wrk)
    return {
        "wrk_rps_median": statistics.median(wrk),
        "python_rps_median": statistics.median(python),
        "python_over_wrk": round(ratio, 3),
        "within_10_percent": abs(ratio - 1) <= 0.10,
    }


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}

    def ratio(a: str, b: str) -> None:
        if a in summary and b in summary and summary[b]["rps_median"]:
            out[f"{a}/{b}"] = round(summary[a]["rps_median"] / summary[b]["rps_median"], 3)

    for name in summary:
        if name != "bare":
            ratio(name, "bare")
    for name, data in summary.items():
        if data.get("storage") or name.startswith("floor_"):
            ratio(name, "bolt")
            ratio(name, "bolt_pbr")
        if (data.get("storage") or "").startswith("sqlite"):
            ratio(name, "floor_sqlite")
    return out


# -- report ----------------------------------------------------------------------------


def versions() -> dict[str, str]:
    found = {}
    for dist in ("Django", "gunicorn", "slack_bolt", "slack_sdk", "celery", "kombu", "django-silo-router"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    found["python"] = platform.python_version()
    found["sqlite"] = sqlite3.sqlite_version
    return found


def wrk_version() -> dict[str, str]:
    binary = wrk_binary()
    if binary is None:
        return {}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        return {"wrk": (done.stdout or done.stderr).splitlines()[0].strip()}
    return {}


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds this process and its waited-for children used)."""
    busy = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        # user nice system idle iowait irq softirq steal ...: all but idle and iowait are busy
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return busy, own.user + own.system + own.children_user + own.children_system


def source() -> dict[str, Any]:
    """Which silo_router was measured: its path, the repository commit, and uncommitted changes."""
    import silo_router

    path = Path(silo_router.__file__).resolve().parent
    info: dict[str, Any] = {"silo_router_path": str(path)}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(REPO_DIR)]
        info["commit"] = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        if path == REPO_DIR / "silo_router":
            changed = subprocess.run(
                [*git, "status", "--porcelain", "--", "silo_router"], capture_output=True, text=True, timeout=10
            ).stdout.split("\n")
            info["silo_router_uncommitted_changes"] = [line for line in changed if line.strip()]
    return info


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpus": os.cpu_count(), "cpu_model": model, "platform": platform.platform()}


def plot(summary: dict[str, dict[str, Any]], runs: Sequence[Run], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    titles = [summary[n]["title"].replace(" (", "\n(").replace(", ", ",\n") for n in names]
    colors = {
        "bare": "#9e9e9e",
        "floor_sqlite": "#bdbdbd",
        "floor_journal": "#e0e0e0",
        "silo_router": "#2e7d32",
        "silo_router_sqlite_redis": "#66bb6a",
        "silo_router_postgres_redis": "#1565c0",
        "bolt": "#c62828",
        "bolt_pbr": "#ef6c00",
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(4 + 2.3 * len(names), 5.6))

    medians = [summary[n]["rps_median"] for n in names]
    low = [summary[n]["rps_median"] - summary[n]["rps_min"] for n in names]
    high = [summary[n]["rps_max"] - summary[n]["rps_median"] for n in names]
    bars = left.bar(titles, medians, yerr=[low, high], capsize=5, color=[colors.get(n, "#607d8b") for n in names])
    bare = summary.get("bare", {}).get("rps_median")
    for bar, name in zip(bars, names, strict=True):
        label = f"{summary[name]['rps_median']:.0f}/s"
        if bare and name != "bare":
            label += f"\n{summary[name]['rps_median'] / bare:.0%} of bare"
        top = max(bar.get_height(), summary[name]["rps_max"])
        left.annotate(label, (bar.get_x() + bar.get_width() / 2, top), ha="center", va="bottom", fontsize=8,
                      xytext=(0, 4), textcoords="offset points")  # fmt: skip
    for i, name in enumerate(names):
        xs = [r.rps for r in runs if r.target == name and r.mode == "saturated"]
        left.scatter([i] * len(xs), xs, color="black", s=8, zorder=3)
    left.set_ylabel("requests/s answered 200 (bar: median; whisker: min-max; dots: runs)", fontsize=9)
    left.set_title("Throughput")
    left.tick_params(axis="x", labelsize=8)
    left.margins(y=0.18)

    width = 0.25
    for j, (key, label) in enumerate((("p50_ms_median", "p50"), ("p95_ms_median", "p95"), ("p99_ms_median", "p99"))):
        xs = [i + (j - 1) * width for i in range(len(names))]
        right.bar(
            xs, [summary[n][key] for n in names], width=width, label=label, color=["#90caf9", "#1e88e5", "#0d47a1"][j]
        )
    singles = [(i, summary[n]["one_connection"]) for i, n in enumerate(names) if summary[n]["one_connection"]]
    if singles:
        right.scatter(
            [i for i, _ in singles], [one["p50_ms"] for _, one in singles], marker="D", color="black", zorder=3,
            label="p50, one request at a time",
        )  # fmt: skip
    opened = [(i, summary[n]["open_loop"]) for i, n in enumerate(names) if summary[n].get("open_loop")]
    if opened:
        right.scatter(
            [i for i, _ in opened], [o["p99_ms"] for _, o in opened], marker="*", s=90, color="#6a1b9a", zorder=3,
            label="p99 at a fixed half-saturation rate",
        )  # fmt: skip
    right.set_xticks(range(len(names)))
    right.set_xticklabels(titles, fontsize=8)
    right.set_yscale("log")
    right.set_ylabel("ms, log scale (median over runs)", fontsize=9)
    right.set_title("Latency seen by the client (p50, p95, p99)")
    right.legend()
    fig.suptitle("Acknowledging signed Slack block_actions requests\n" + subtitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_report(
    summary: dict[str, dict[str, Any]], ratio_table: dict[str, float], generators: dict[str, Any] | None
) -> None:
    print()
    print(f"{'target':<50}{'req/s median [min-max]':>26}{'p50':>8}{'p95':>8}{'p99':>8} ms{'non-200':>9}")
    for data in summary.values():
        span = f"{data['rps_median']:.0f} [{data['rps_min']:.0f}-{data['rps_max']:.0f}]"
        print(
            f"{data['title']:<50}{span:>26}{data['p50_ms_median']:8.2f}{data['p95_ms_median']:8.2f}"
            f"{data['p99_ms_median']:8.2f}   {data['non_200'] + data['errors']:>7}"
        )
    print()
    for key, value in ratio_table.items():
        a, b = key.split("/")
        print(f"  {a} / {b}: {value:.2f}x throughput")
    if generators:
        print(
            f"\n  generator check, bare view saturated: Python generator {generators['python_rps_median']:.0f}/s, "
            f"wrk {generators['wrk_rps_median']:.0f}/s: {generators['python_over_wrk']:.2f}x "
            f"({'within' if generators['within_10_percent'] else 'NOT within'} 10%)"
        )
    if any(data["one_connection"] for data in summary.values()):
        print(f"\n{'one request at a time (1 connection)':<50}{'req/s':>26}{'p50':>8}{'p95':>8}{'p99':>8} ms")
        for data in summary.values():
            one = data["one_connection"]
            if one:
                print(
                    f"{data['title']:<50}{one['rps']:>26.0f}{one['p50_ms']:8.2f}{one['p95_ms']:8.2f}{one['p99_ms']:8.2f}"
                )
    if any(data.get("open_loop") for data in summary.values()):
        print(f"\n{'fixed rate (open loop), from the scheduled send':<50}{'rate':>12}{'p50':>8}{'p95':>8}{'p99':>8} ms"
              f"{'send lag p99':>14}")  # fmt: skip
        for data in summary.values():
            opened = data.get("open_loop")
            if opened:
                print(
                    f"{data['title']:<50}{opened['rate']:>10.0f}/s{opened['p50_ms']:8.2f}{opened['p95_ms']:8.2f}"
                    f"{opened['p99_ms']:8.2f}{opened['send_lag_p99_ms']:14.2f}"
                )


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="about 90 s: shorter warm-up and runs")
    parser.add_argument("--repeats", type=int, help="saturated runs per target (median reported); default 3, quick 1")
    parser.add_argument("--duration", type=float, help="seconds measured per run (default 5, quick 1)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before a target's first run (default 3, quick 1)")
    parser.add_argument("--rewarmup", type=float, help="warm-up seconds before later runs (default 1, quick 0.3)")
    parser.add_argument("--max-requests", type=int, help="request bound per run (default 25000, quick 8000)")
    parser.add_argument(
        "--single-duration",
        type=float,
        help="seconds of the one-connection run per target (default 2, quick 1; 0: skip)",
    )
    parser.add_argument("--max-rate", type=float, default=10000.0, help="bodies prepared per warm-up second (bound)")
    parser.add_argument(
        "--connections", type=int, default=16, help="keep-alive connections, one request in flight each"
    )
    parser.add_argument("--generator", choices=("wrk", "python"), default="wrk",
                        help="closed-loop load generator (wrk durations are whole seconds); default wrk")  # fmt: skip
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--no-generator-check", dest="compare_generators", action="store_false",
                        help="skip the bare view's run with the Python generator beside wrk's")  # fmt: skip
    parser.add_argument("--clients", type=int, default=2, help="Python load-generator processes (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn gthread threads per worker")
    parser.add_argument("--targets", default=",".join(t.name for t in TARGETS), help="comma-separated subset")
    parser.add_argument(
        "--storage",
        default=",".join(bench_storage.STORAGES),
        help=f"silo_router storages, comma-separated: {', '.join(bench_storage.STORAGES)} (default all)",
    )
    parser.add_argument("--sqlite-synchronous", choices=("FULL", "NORMAL"), default="FULL",
                        help="silo_router's SQLite PRAGMA synchronous (FULL: fsync per commit)")  # fmt: skip
    parser.add_argument(
        "--rate",
        type=float,
        help="open-loop requests/s for every silo_router target (default half its saturated median; 0: skip)",
    )
    parser.add_argument("--open-duration", type=float, help="seconds of each open-loop run (default 10, quick 3)")
    parser.add_argument(
        "--open-connections",
        type=int,
        default=32,
        help="open-loop connections opened ahead per client process (default 32; more on demand)",
    )
    parser.add_argument("--arrival", choices=openloop.ARRIVALS, default="uniform",
                        help="open-loop instants: evenly spaced (default) or Poisson")  # fmt: skip
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds the store check waits at most for late wake-ups (default 5)")  # fmt: skip
    parser.add_argument("--profile", action="store_true",
                        help="one more saturated run of --profile-target under py-spy (not in medians)")  # fmt: skip
    parser.add_argument("--profile-target", default="silo_router", help="the target py-spy samples")
    parser.add_argument(
        "--profile-format",
        choices=("flamegraph", "speedscope", "raw"),
        default="flamegraph",
        help="py-spy's output: an SVG flame graph (default), speedscope JSON, or collapsed stacks",
    )
    parser.add_argument("--profile-idle", action="store_true", help="py-spy --idle: waiting threads too")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where control_ack.json/.png go")
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, short in (
        ("repeats", 3, 1),
        ("duration", 5.0, 1.0),
        ("warmup", 3.0, 1.0),
        ("rewarmup", 1.0, 0.3),
        ("single_duration", 2.0, 1.0),
        ("max_requests", 25000, 8000),
        ("open_duration", 10.0, 3.0),
    ):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def chosen_targets(args: argparse.Namespace) -> list[Target]:
    wanted = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = set(wanted) - {t.name for t in TARGETS}
    if unknown:
        raise SystemExit(f"unknown targets: {', '.join(sorted(unknown))}")
    storages = {n.strip() for n in args.storage.split(",") if n.strip()}
    if storages - set(bench_storage.STORAGES):
        raise SystemExit(f"unknown storages: {', '.join(sorted(storages - set(bench_storage.STORAGES)))}")
    return [t for t in TARGETS if t.name in wanted and (not t.storage or t.storage in storages)]


def check_store(
    target: Target, var_dir: Path, runs: Sequence[Run], sent: int, settle: float
) -> tuple[dict[str, Any], list[str]]:
    """Count ``target``'s rows and wake-ups, again until they match or ``settle`` seconds have passed."""
    deadline = time.monotonic() + settle
    while True:
        stored = manage_silo("count", var_dir, target)
        wake = stored["wakeups"]
        if (stored["payloads"] == sent and wake["ok"]) or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    ok200 = sum(r.statuses.get("200", 0) + r.warmup_statuses.get("200", 0) for r in runs if r.target == target.name)
    problems = []
    if stored["payloads"] != sent:
        problems.append(f"{target.name} stored {stored['payloads']} payloads for {sent} requests sent")
    if not wake["ok"]:
        problems.append(
            f"{target.name} wake-ups: {wake['unnamed']} stored payloads named by no message, "
            f"{wake['named_more_than_once']} by more than one, {wake['named_but_not_stored']} names without a row "
            f"({stored['messages']} messages {wake['by_task']}; examples {wake['examples']})"
        )
    return {"requests_sent": sent, "answered_200": ok200, **stored}, problems


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    targets = chosen_targets(args)
    os.environ["BENCH_SQLITE_SYNCHRONOUS"] = args.sqlite_synchronous
    if args.generator == "wrk" and wrk_binary() is None:
        raise SystemExit("wrk is not installed: bash tools/install-bench-tools.sh (or --generator python)")
    storages = {t.storage for t in targets if t.storage}

    # A SIGTERM (a CI timeout, say) unwinds like Ctrl-C, so every server is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    cpu_before = cpu_seconds()
    load_before = os.getloadavg()
    for stale in args.out.glob("control_ack-*.log"):  # server logs a failed earlier run kept
        stale.unlink()
    var_dir = Path(tempfile.mkdtemp(prefix="silo-router-bench-"))
    args.work_dir = var_dir
    pool: ClientPool | None = None
    failures: list[str] = []
    checks: dict[str, Any] = {}
    profile_path: Path | None = None
    try:
        with bench_storage.storage_servers(storages) as storage:
            server_versions = bench_storage.versions(storage)
            # Each silo_router target gets its own database (SQLite file or PostgreSQL) and broker (folder or Redis db).
            targets = [
                dataclasses.replace(t, env={**t.env, **storage.environment(t.storage, redis_db=i)}) if t.storage else t
                for i, t in enumerate(targets)
            ]
            for target in filter(is_silo, targets):
                if manage_silo("prepare", var_dir, target)["payloads"]:
                    raise RuntimeError(f"the {target.name} database is not empty")
            print(
                f"control_ack: {len(targets)} servers on 127.0.0.1 "
                f"(gunicorn gthread, {args.workers} workers x {args.threads} threads), "
                f"{args.connections} keep-alive connections ({args.generator}), "
                f"{args.repeats} x {args.duration:g}s per target, warm-up {args.warmup:g}s (then {args.rewarmup:g}s), "
                f"SQLite synchronous={args.sqlite_synchronous}, storages {', '.join(sorted(storages)) or 'none'}",
                flush=True,
            )
            with running_servers(targets, var_dir=var_dir, workers=args.workers, threads=args.threads) as servers:
                pool = ClientPool(args.clients)
                runs = measure(args, targets, servers, pool)
                saturated = summarize(targets, runs)
                if args.rate != 0:
                    for target in filter(is_silo, targets):
                        rate = args.rate or saturated[target.name]["rps_median"] / 2
                        runs.append(measure_open_loop(args, target, servers[target.name], rate))
                if args.profile:
                    target = next((t for t in targets if t.name == args.profile_target), None)
                    if target is None:
                        raise SystemExit(f"--profile-target {args.profile_target} is not among the targets")
                    run, profile_path = profiled_run(args, pool, target, servers[target.name], args.out)
                    runs.append(run)
                    print(f"  py-spy profile of {target.name}: {profile_path}", flush=True)
                summary = summarize(targets, runs)
                # Count while the servers run: a wake-up published after the answer must not be cut off.
                for target in filter(is_silo, targets):
                    checks[target.name], problems = check_store(
                        target, var_dir, runs, summary[target.name]["requests_sent_incl_warmup"], args.settle
                    )
                    failures.extend(problems)
                for server in servers.values():
                    if server.proc.poll() is not None:
                        failures.append(f"{server.target.name} server died:\n{server.log_tail()}")
            for server in servers.values():
                # Servers log only warnings and errors; a benchmark run must leave none.
                problems = server.log_problems()
                if problems:
                    # The log records (not traceback lines) and the exception each traceback ended with.
                    records = [
                        line for line in problems if not line.startswith((" ", "Traceback", "The above", "During"))
                    ]
                    args.out.mkdir(parents=True, exist_ok=True)
                    kept = args.out / f"control_ack-{server.target.name}.log"
                    shutil.copyfile(server.log, kept)
                    failures.append(
                        f"{server.target.name} server logged {len(records)} warning/error records (log: {kept}), "
                        f"first: {records[:4]}"
                    )
        for name, data in summary.items():
            if data["non_200"] or data["errors"]:
                samples = [s for r in runs if r.target == name for s in r.samples][:5]
                failures.append(
                    f"{name}: {data['non_200']} non-200 answers, {data['errors']} connection errors: {samples}"
                )
            if data["ran_out_of_bodies"]:
                failures.append(f"{name}: wrk ran out of signed bodies in {data['ran_out_of_bodies']} runs "
                                "(raise --max-requests or --max-rate)")  # fmt: skip
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        if pool is not None:
            pool.close()
        shutil.rmtree(var_dir, ignore_errors=True)

    # Servers and load generators have exited and been waited for: their CPU time is in ours.
    elapsed = time.monotonic() - began
    cpu_after = cpu_seconds()
    others = max(0.0, (cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1]))
    others_share = others / (elapsed * (os.cpu_count() or 1)) if cpu_after[0] else float("nan")
    ratio_table = ratios(summary)
    generators = generator_check(runs)
    print_report(summary, ratio_table, generators)
    for name, c in checks.items():
        w = c["wakeups"]
        print(
            f"\n  {name} check: {c['requests_sent']} requests sent (warm-up included), "
            f"{c['answered_200']} answered 200, {c['payloads']} payloads stored {c['by_state']}, "
            f"{c['messages']} wake-up messages {w['by_task']} naming {w['ids_named']} payloads "
            f"({'each stored payload exactly once' if w['ok'] else 'NOT each stored payload exactly once'})"
        )
    print(f"\n  other processes on this machine used {others_share:.0%} of its CPU during the run")
    result = {
        "benchmark": "control_ack",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            **machine(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "other_processes_cpu_share": round(others_share, 3),
        },  # fmt: skip
        "source": source(),
        "versions": {**versions(), **server_versions, **wrk_version()},
        "settings": {
            "gunicorn": f"--worker-class gthread --workers {args.workers} --threads {args.threads}",
            "generator": args.generator,
            "wrk_threads": args.wrk_threads,
            "connections": args.connections,
            "client_processes": args.clients,
            "repeats": args.repeats,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rewarmup_s": args.rewarmup,
            "max_requests_per_run": args.max_requests,
            "sqlite_synchronous": args.sqlite_synchronous,
            "storages": sorted(storages),
            "open_loop": {
                "rate": args.rate if args.rate is not None else "half of each silo_router target's saturated median",
                "generator": "bench/openloop.py",
                "arrival": args.arrival,
                "latency": "from each request's scheduled instant",
                "duration_s": args.open_duration,
                "connections_opened_ahead": args.open_connections * args.clients,
            },
            "request_body_bytes": max((r.body_bytes for r in runs), default=0),
            "quick": args.quick,
        },
        "summary": summary,
        "ratios": ratio_table,
        "generator_check": generators,
        "checks": checks,
        "profile": str(profile_path.relative_to(REPO_DIR)) if profile_path and profile_path.is_relative_to(REPO_DIR)
        else (str(profile_path) if profile_path else None),
        "failures": failures,
        "runs": [dataclasses.asdict(r) for r in runs],
        "elapsed_s": round(elapsed, 1),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "control_ack.json").write_text(json.dumps(result, indent=2) + "\n")
    cpu = machine()
    plot(
        summary,
        runs,
        args.out / "control_ack.png",
        f"{cpu['cpus']} CPUs, gunicorn gthread {args.workers}x{args.threads}, "
        f"{args.connections} keep-alive connections ({args.generator}), "
        f"median of {args.repeats} x {args.duration:g}s runs, SQLite synchronous={args.sqlite_synchronous}",
    )
    print(f"\n  wrote {args.out / 'control_ack.json'} and {args.out / 'control_ack.png'} ({elapsed:.0f}s)")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
