"""How fast a Slack block_actions request is acknowledged: django-silo-router vs Bolt vs a bare view.

Four gunicorn servers on 127.0.0.1, same gunicorn settings, each with its own minimal
Django project (bench/projects/):

  bare        a Django view that reads the body and answers an empty 200 (the ceiling)
  silo_router SiloRouterMiddleware in control mode: verify, classify, resolve through
              the Integration table, commit a Payload row (SQLite, WAL) and publish a
              Celery message (kombu filesystem broker), then an empty 200
  bolt        Slack Bolt for Python's Django adapter, an app.action listener that acks
              (default mode: the listener runs on Bolt's thread pool)
  bolt_pbr    the same with process_before_response=True

Each request is a unique, correctly signed block_actions body. The targets are measured
in turns, ``--repeats`` times each, and the median is reported. Afterwards the stored
payloads and queued Celery messages of the silo_router server are counted and must
equal the requests it was sent.

    .venv/bin/python bench/control_ack.py            # about 2 minutes on 2 cores
    .venv/bin/python bench/control_ack.py --quick    # about 30 seconds

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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
sys.path.insert(0, str(BENCH_DIR))

from loadgen import ClientPool, Segment, SegmentResult  # noqa: E402

SLACK_SIGNING_SECRET = "bench-only-slack-signing-secret-0123456789"


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    title: str
    settings: str
    path: str
    env: dict[str, str] = dataclasses.field(default_factory=dict)


TARGETS = (
    Target("bare", "bare Django view (ceiling)", "projects.settings_bare", "/slack/events"),
    Target("silo_router", "django-silo-router (control, async)", "projects.settings_silo", "/extensions/slack/"),
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
    ]  # fmt: skip
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, cwd=var_dir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
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


def manage_silo(command: str, var_dir: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "BENCH_VAR_DIR": str(var_dir / "silo_router"),
        "DJANGO_SETTINGS_MODULE": "projects.settings_silo",
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
    #: "saturated": all connections busy; "one_connection": one request at a time.
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


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


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
        p50_ms=round(percentile(latencies, 50) * 1000, 2),
        p95_ms=round(percentile(latencies, 95) * 1000, 2),
        p99_ms=round(percentile(latencies, 99) * 1000, 2),
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
    bad = {k: v for k, v in run.statuses.items() if k != "200"}
    note = f"  NON-200 {bad} errors={run.errors}" if bad or run.errors else ""
    step = f"round {repeat + 1}/{args.repeats}" if mode == "saturated" else "1 connection"
    print(
        f"  {step:<12} {target.name:<12} {run.rps:8.0f} req/s"
        f"  p50 {run.p50_ms:6.2f}  p95 {run.p95_ms:6.2f}  p99 {run.p99_ms:6.2f} ms"
        f"  ({run.requests} in {run.seconds:.2f}s){note}",
        flush=True,
    )
    return run


def measure(
    args: argparse.Namespace, targets: Sequence[Target], servers: dict[str, Server], pool: ClientPool
) -> list[Run]:
    """``--repeats`` saturated rounds over the targets, then one run per target with one connection."""
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
            run = measure_segment(
                args, pool, target, servers[target.name], mode="saturated", repeat=repeat,
                connections=args.connections, warmup=warmup, duration=args.duration, budget=budget,
                warm_budget=int((args.max_rate if rate is None else rate * 2) * warmup) + 200, stamp=stamp,
            )  # fmt: skip
            runs.append(run)
            seen_rps[target.name] = max(seen_rps.get(target.name, 0.0), run.rps)
    if args.single_duration > 0:
        for target in targets:
            # One connection never goes faster than sixteen: the saturated rate bounds the bodies needed.
            rate = seen_rps.get(target.name, args.max_rate)
            runs.append(
                measure_segment(
                    args, pool, target, servers[target.name], mode="one_connection", repeat=0, connections=1,
                    warmup=args.rewarmup, duration=args.single_duration,
                    budget=min(args.max_requests, int(rate * args.single_duration * 1.5) + 200),
                    warm_budget=int(rate * args.rewarmup * 1.5) + 100, stamp=stamp,
                )
            )  # fmt: skip
    return runs


def summarize(targets: Sequence[Target], runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for target in targets:
        mine = [r for r in runs if r.target == target.name and r.mode == "saturated"]
        every = [r for r in runs if r.target == target.name]
        single = next((r for r in every if r.mode == "one_connection"), None)
        rps = [r.rps for r in mine]
        summary[target.name] = {
            "title": target.title,
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
            # Correctness counts cover every request this server was sent, in both modes.
            "requests_sent_incl_warmup": sum(r.requests + r.warmup_requests + r.errors for r in every),
            "non_200": sum(
                n for r in every for k, n in [*r.statuses.items(), *r.warmup_statuses.items()] if k != "200"
            ),
            "errors": sum(r.errors for r in every),
        }
    return summary


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}

    def ratio(a: str, b: str) -> None:
        if a in summary and b in summary and summary[b]["rps_median"]:
            out[f"{a}/{b}"] = round(summary[a]["rps_median"] / summary[b]["rps_median"], 3)

    for name in summary:
        if name != "bare":
            ratio(name, "bare")
    ratio("silo_router", "bolt")
    ratio("silo_router", "bolt_pbr")
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
    titles = [summary[n]["title"].replace(" (", "\n(") for n in names]
    colors = {"bare": "#9e9e9e", "silo_router": "#2e7d32", "bolt": "#c62828", "bolt_pbr": "#ef6c00"}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))

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
        xs = [r.rps for r in runs if r.target == name]
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


def print_report(summary: dict[str, dict[str, Any]], ratio_table: dict[str, float]) -> None:
    print()
    print(f"{'target':<48}{'req/s median [min-max]':>26}{'p50':>8}{'p95':>8}{'p99':>8} ms{'non-200':>9}")
    for data in summary.values():
        span = f"{data['rps_median']:.0f} [{data['rps_min']:.0f}-{data['rps_max']:.0f}]"
        print(
            f"{data['title']:<48}{span:>26}{data['p50_ms_median']:8.2f}{data['p95_ms_median']:8.2f}"
            f"{data['p99_ms_median']:8.2f}   {data['non_200'] + data['errors']:>7}"
        )
    print()
    for key, value in ratio_table.items():
        a, b = key.split("/")
        print(f"  {a} / {b}: {value:.2f}x throughput")
    if any(data["one_connection"] for data in summary.values()):
        print(f"\n{'one request at a time (1 connection)':<48}{'req/s':>26}{'p50':>8}{'p95':>8}{'p99':>8} ms")
        for data in summary.values():
            one = data["one_connection"]
            if one:
                print(
                    f"{data['title']:<48}{one['rps']:>26.0f}{one['p50_ms']:8.2f}{one['p95_ms']:8.2f}{one['p99_ms']:8.2f}"
                )


# -- main ------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="about 30 s: shorter warm-up and runs")
    parser.add_argument("--repeats", type=int, default=3, help="runs per target (median reported); default 3")
    parser.add_argument("--duration", type=float, help="seconds measured per run (default 5, quick 1)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before a target's first run (default 3, quick 1)")
    parser.add_argument("--rewarmup", type=float, help="warm-up seconds before later runs (default 1, quick 0.3)")
    parser.add_argument("--max-requests", type=int, help="request bound per run (default 25000, quick 8000)")
    parser.add_argument(
        "--single-duration",
        type=float,
        help="seconds of the one-connection run per target (default 2, quick 0.6; 0: skip)",
    )
    parser.add_argument("--max-rate", type=float, default=6000.0, help="bodies prepared per warm-up second (bound)")
    parser.add_argument(
        "--connections", type=int, default=16, help="keep-alive connections, one request in flight each"
    )
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes sharing the connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn gthread threads per worker")
    parser.add_argument("--targets", default=",".join(t.name for t in TARGETS), help="comma-separated subset")
    parser.add_argument("--sqlite-synchronous", choices=("FULL", "NORMAL"), default="FULL",
                        help="silo_router's SQLite PRAGMA synchronous (FULL: fsync per commit)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where control_ack.json/.png go")
    args = parser.parse_args(argv)
    quick = args.quick
    for name, full, short in (
        ("duration", 5.0, 1.0),
        ("warmup", 3.0, 1.0),
        ("rewarmup", 1.0, 0.3),
        ("single_duration", 2.0, 0.6),
        ("max_requests", 25000, 8000),
    ):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = set(wanted) - {t.name for t in TARGETS}
    if unknown:
        raise SystemExit(f"unknown targets: {', '.join(sorted(unknown))}")
    targets = [t for t in TARGETS if t.name in wanted]
    os.environ["BENCH_SQLITE_SYNCHRONOUS"] = args.sqlite_synchronous

    # A SIGTERM (a CI timeout, say) unwinds like Ctrl-C, so every server is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    cpu_before = cpu_seconds()
    load_before = os.getloadavg()
    for stale in args.out.glob("control_ack-*.log"):  # server logs a failed earlier run kept
        stale.unlink()
    var_dir = Path(tempfile.mkdtemp(prefix="silo-router-bench-"))
    pool: ClientPool | None = None
    try:
        if any(t.name == "silo_router" for t in targets):
            before = manage_silo("prepare", var_dir)
            if before["payloads"]:
                raise RuntimeError("the silo_router database is not empty")
        print(
            f"control_ack: {len(targets)} servers on 127.0.0.1 "
            f"(gunicorn gthread, {args.workers} workers x {args.threads} threads), "
            f"{args.connections} keep-alive connections from {args.clients} processes, "
            f"{args.repeats} x {args.duration:g}s per target, warm-up {args.warmup:g}s (then {args.rewarmup:g}s), "
            f"SQLite synchronous={args.sqlite_synchronous}",
            flush=True,
        )
        with running_servers(targets, var_dir=var_dir, workers=args.workers, threads=args.threads) as servers:
            pool = ClientPool(args.clients)
            runs = measure(args, targets, servers, pool)
            failures = []
            for server in servers.values():
                if server.proc.poll() is not None:
                    failures.append(f"{server.target.name} server died:\n{server.log_tail()}")
        for server in servers.values():
            # Servers log only warnings and errors; a benchmark run must leave none.
            problems = server.log_problems()
            if problems:
                # The log records (not traceback lines) and the exception each traceback ended with.
                records = [line for line in problems if not line.startswith((" ", "Traceback", "The above", "During"))]
                args.out.mkdir(parents=True, exist_ok=True)
                kept = args.out / f"control_ack-{server.target.name}.log"
                shutil.copyfile(server.log, kept)
                failures.append(
                    f"{server.target.name} server logged {len(records)} warning/error records (log: {kept}), "
                    f"first: {records[:4]}"
                )
        summary = summarize(targets, runs)
        checks: dict[str, Any] = {}
        if "silo_router" in summary:
            stored = manage_silo("count", var_dir)
            sent = summary["silo_router"]["requests_sent_incl_warmup"]
            ok200 = sum(
                r.statuses.get("200", 0) + r.warmup_statuses.get("200", 0) for r in runs if r.target == "silo_router"
            )
            checks["silo_router"] = {"requests_sent": sent, "answered_200": ok200, **stored}
            if stored["payloads"] != sent or stored["messages"] != sent:
                failures.append(
                    f"silo_router stored {stored['payloads']} payloads and queued {stored['messages']} messages "
                    f"for {sent} requests sent"
                )
        for name, data in summary.items():
            if data["non_200"] or data["errors"]:
                samples = [s for r in runs if r.target == name for s in r.samples][:5]
                failures.append(
                    f"{name}: {data['non_200']} non-200 answers, {data['errors']} connection errors: {samples}"
                )
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
    print_report(summary, ratio_table)
    if "silo_router" in checks:
        c = checks["silo_router"]
        print(
            f"\n  silo_router check: {c['requests_sent']} requests sent (warm-up included), "
            f"{c['answered_200']} answered 200, "
            f"{c['payloads']} payloads stored {c['by_state']}, {c['messages']} Celery messages queued"
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
        "versions": versions(),
        "settings": {
            "gunicorn": f"--worker-class gthread --workers {args.workers} --threads {args.threads}",
            "connections": args.connections,
            "client_processes": args.clients,
            "repeats": args.repeats,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rewarmup_s": args.rewarmup,
            "max_requests_per_run": args.max_requests,
            "sqlite_synchronous": args.sqlite_synchronous,
            "request_body_bytes": max((r.body_bytes for r in runs), default=0),
            "quick": args.quick,
        },
        "summary": summary,
        "ratios": ratio_table,
        "checks": checks,
        "failures": failures,
        "runs": [dataclasses.asdict(r) for r in runs],
        "elapsed_s": round(elapsed, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "control_ack.json").write_text(json.dumps(result, indent=2) + "\n")
    cpu = machine()
    plot(
        summary,
        runs,
        args.out / "control_ack.png",
        f"{cpu['cpus']} CPUs, gunicorn gthread {args.workers}x{args.threads}, "
        f"{args.connections} keep-alive connections, "
        f"median of {args.repeats} x {args.duration:g}s runs, SQLite synchronous={args.sqlite_synchronous}",
    )
    print(f"\n  wrote {args.out / 'control_ack.json'} and {args.out / 'control_ack.png'} ({elapsed:.0f}s)")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
