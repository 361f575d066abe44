"""What tracing costs on the control ack path: requests per second with sentry-sdk and OpenTelemetry off and on.

The same django-silo-router control server as ``control_ack.py``'s ``silo_router``
target (verify, classify, resolve, commit a Payload row to SQLite, publish a Celery
message, empty 200), started five times under gunicorn with one tracing set-up each
(bench/projects/tracing.py):

  off       sentry-sdk not initialised, the library's OpenTelemetry back end off
  otel_api  opentelemetry-api installed, no SDK: OpenTelemetry's no-op spans
  sentry    sentry-sdk as the README recommends, every Slack request sampled (100%), its
            own HTTP transport with the network call left out (envelopes are serialised,
            compressed, counted and dropped)
  sentry_unscrubbed
            the same without the library's before_send hooks: not a set-up to deploy,
            it shows what the scrubbing of capabilities costs
  otel      the OpenTelemetry SDK, batch span processor, an exporter that drops

Then each set-up's CPU cost is measured without HTTP or concurrency: one process per
set-up runs batches of the same requests through the WSGI application, one after
another, each process one batch in turn, and divides the CPU time the whole process
used for a batch (its request thread and the back end's threads: sentry-sdk's transport
worker, the span processor), after a flush, by the batch's size. Each batch is also
paired with the ``off`` batch of the same turn. CPU time is what throughput is made of
on a busy machine, and it moves less than throughput when other processes compete.

The targets are measured in interleaved rounds (the order rotates every round), so
that a machine that gets busier or quieter affects them alike, and each round's rate is
also divided by the ``off`` rate of the same round. Afterwards every server must have
stored one payload and queued one message per request it was sent, the sentry targets
must have sent one transaction per request and lost none, and the otel target must
have exported one request span per request.

    .venv/bin/python bench/tracing_overhead.py            # about 5 minutes on 2 cores
    .venv/bin/python bench/tracing_overhead.py --quick    # one to two minutes, a smoke test

Writes bench/results/tracing_overhead.json and bench/results/tracing_overhead.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import control_ack  # noqa: E402
from control_ack import RESULTS_DIR, Run, Target  # noqa: E402
from loadgen import ClientPool  # noqa: E402
from projects.tracing import read_counts  # noqa: E402

BASELINE = "off"
#: gunicorn 27's control socket is one file per user: servers started together race for it.
GUNICORN = {"GUNICORN_CMD_ARGS": "--no-control-socket"}


def traced(mode: str, title: str) -> Target:
    """The silo_router control server with tracing ``mode`` (projects/tracing.py)."""
    env = {"BENCH_TRACING": mode, **GUNICORN}
    return Target(mode, title, "projects.settings_silo_traced", "/extensions/slack/", env)


TARGETS = (
    traced("off", "tracing off"),
    traced("otel_api", "opentelemetry-api, no SDK"),
    traced("sentry", "sentry-sdk, 100% sampled"),
    traced("sentry_unscrubbed", "sentry-sdk, 100%, no scrubbing"),
    traced("otel", "OpenTelemetry SDK"),
)


def silo_db(command: str, var_dir: Path, target: Target) -> dict[str, Any]:
    """``projects.silo_db prepare|count`` on ``target``'s own database (plain settings: no tracing)."""
    env = {
        **os.environ,
        "BENCH_VAR_DIR": str(var_dir / target.name),
        "DJANGO_SETTINGS_MODULE": "projects.settings_silo",
    }
    env.pop("SENTRY_DSN", None)
    done = subprocess.run(
        [sys.executable, "-m", "projects.silo_db", command],
        cwd=BENCH_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"projects.silo_db {command} for {target.name} failed:\n{done.stdout}\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def cpu_probe(mode: str, requests: int) -> None:
    """In this process, with tracing ``mode``: a batch of ``requests`` signed requests through the WSGI app
    each time a line ``batch`` comes on stdin, answered with a JSON line of its CPU ms per request.

    The CPU time is the whole process's (its request thread and the back end's threads),
    taken after a flush, so sentry-sdk's transport worker and the span processor count.
    """
    import itertools

    import django

    django.setup()
    import in_process
    from loadgen import BodyFactory
    from projects.wsgi import application
    from slack_sdk.signature import SignatureVerifier

    verifier = SignatureVerifier(control_ack.SLACK_SIGNING_SECRET)
    bodies = BodyFactory(f"cpu{mode}{int(time.time()):x}")
    numbers = itertools.count()

    def prepared() -> dict[str, Any]:
        return in_process.signed_environ(bodies.body(next(numbers)), verifier, fresh_for=60)

    def run(environs: list[dict[str, Any]]) -> None:
        for environ in environs:
            in_process.answer_ok(application, environ)

    run([prepared() for _ in range(min(200, requests))])  # warm-up: imports, caches, connections
    flush_tracing()
    print(json.dumps({"ready": mode}), flush=True)
    for line in sys.stdin:
        if line.strip() != "batch":
            break
        batch = [prepared() for _ in range(requests)]  # signing is the client's cost: not measured
        began = time.process_time()
        run(batch)
        flush_tracing()
        print(json.dumps({"cpu_ms": round((time.process_time() - began) * 1000 / requests, 3)}), flush=True)


def flush_tracing() -> None:
    """Wait until sentry-sdk's transport and the OpenTelemetry span processor have handled what is queued."""
    import sentry_sdk

    if sentry_sdk.get_client().is_active():
        sentry_sdk.flush(timeout=30)
    from opentelemetry import trace

    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    if flush is not None:
        flush()


def cpu_per_request(targets: Sequence[Target], var_dir: Path, requests: int, cycles: int) -> dict[str, list[float]]:
    """CPU ms per request of every target, one batch each in turn, ``cycles`` times (the order rotates).

    One probe process per target runs the whole time, so a busy or quiet moment of the
    machine falls on batches of every target alike; the batches of one cycle are paired.
    """
    probes: dict[str, subprocess.Popen[str]] = {}
    found: dict[str, list[float]] = {target.name: [] for target in targets}
    try:
        for target in targets:
            silo_db("prepare", var_dir, dataclasses.replace(target, name=f"cpu-{target.name}"))
            env = {
                **os.environ,
                **target.env,
                "DJANGO_SETTINGS_MODULE": target.settings,
                "BENCH_VAR_DIR": str(var_dir / f"cpu-{target.name}"),
                "BENCH_SLACK_SIGNING_SECRET": control_ack.SLACK_SIGNING_SECRET,
            }
            env.pop("SENTRY_DSN", None)
            probes[target.name] = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--cpu-probe", target.env["BENCH_TRACING"],
                 "--cpu-requests", str(requests)],
                cwd=BENCH_DIR, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
        for name, probe in probes.items():
            _answer(name, probe)  # {"ready": ...} once warmed up
        for cycle in range(cycles):
            order = [*targets[cycle % len(targets) :], *targets[: cycle % len(targets)]]
            for target in order:
                probe = probes[target.name]
                assert probe.stdin is not None
                probe.stdin.write("batch\n")
                probe.stdin.flush()
                found[target.name].append(float(_answer(target.name, probe)["cpu_ms"]))
            shown = "  ".join(f"{name} {values[-1]:.2f}" for name, values in found.items())
            print(f"  cpu cycle {cycle + 1}/{cycles}: {shown} ms CPU per request", flush=True)
    finally:
        for probe in probes.values():
            if probe.stdin is not None:
                probe.stdin.close()
            try:
                probe.wait(timeout=30)
            except subprocess.TimeoutExpired:
                probe.kill()
                probe.wait()
    return found


def _answer(name: str, probe: subprocess.Popen[str]) -> dict[str, Any]:
    assert probe.stdout is not None
    line = probe.stdout.readline()
    if not line:
        raise RuntimeError(f"the CPU probe of {name} exited ({probe.wait()})")
    return dict(json.loads(line))


def paired_differences(cpu: dict[str, list[float]]) -> dict[str, list[float]]:
    """Each cycle's CPU ms per request of every target minus the baseline's in the same cycle."""
    base = cpu.get(BASELINE) or []
    return {name: [round(x - b, 3) for x, b in zip(values, base, strict=False)] for name, values in cpu.items()}


def paired_ratios(runs: Sequence[Run], targets: Sequence[Target]) -> dict[str, list[float]]:
    """Each saturated round's rate of every target divided by the baseline's rate in the same round."""
    base = {r.repeat: r.rps for r in runs if r.target == BASELINE and r.mode == "saturated"}
    out: dict[str, list[float]] = {}
    for target in targets:
        mine = sorted((r.repeat, r.rps) for r in runs if r.target == target.name and r.mode == "saturated")
        out[target.name] = [round(rps / base[repeat], 4) for repeat, rps in mine if base.get(repeat)]
    return out


def overhead(
    summary: dict[str, dict[str, Any]], paired: dict[str, list[float]], cpu: dict[str, list[float]]
) -> dict[str, dict[str, Any]]:
    """Per target: throughput as a share of ``off`` (medians; the median of paired rounds), latency and CPU added."""
    base = summary[BASELINE]
    base_cpu = statistics.median(cpu[BASELINE]) if cpu.get(BASELINE) else None
    cpu_added = paired_differences(cpu)
    table: dict[str, dict[str, Any]] = {}
    for name, data in summary.items():
        if name == BASELINE:
            continue
        ratio = data["rps_median"] / base["rps_median"]
        pairs = paired.get(name) or [ratio]
        one, base_one = data.get("one_connection"), base.get("one_connection")
        mine_cpu = statistics.median(cpu[name]) if cpu.get(name) else None
        added = cpu_added.get(name)
        table[name] = {
            "throughput_ratio": round(ratio, 3),
            "overhead_pct": round((1 - ratio) * 100, 1),
            "paired_ratio_median": round(statistics.median(pairs), 3),
            "paired_ratio_min": round(min(pairs), 3),
            "paired_ratio_max": round(max(pairs), 3),
            # The least disturbed round of each (other processes only take throughput away).
            "best_round_ratio": round(data["rps_max"] / base["rps_max"], 3),
            "p50_ms_added": round(data["p50_ms_median"] - base["p50_ms_median"], 2),
            "one_connection_p50_ms_added": round(one["p50_ms"] - base_one["p50_ms"], 2) if one and base_one else None,
            "cpu_ms_per_request": None if mine_cpu is None else round(mine_cpu, 2),
            # The median over cycles of (this target's batch - off's batch of the same cycle).
            "cpu_ms_added": round(statistics.median(added), 2) if added else None,
            # The throughput ratio if CPU were all that limits it: off's CPU over off's plus what this one adds.
            "cpu_bound_ratio": None
            if added is None or base_cpu is None
            else round(base_cpu / (base_cpu + statistics.median(added)), 3),
        }
    return table


def check_tracing(name: str, sent: int, counts: dict[str, int], workers: int) -> list[str]:
    """Problems with what a server's back end handled, given ``sent`` requests (warm-ups included)."""
    problems = []
    if counts.get("processes") != workers:
        problems.append(f"{name}: {counts.get('processes', 0)} of {workers} server processes wrote their counts")
    # Readiness probes (not the library's) are sampled out at TRACES_SAMPLE_RATE: not a loss.
    lost = {key: value for key, value in counts.items() if key.startswith("lost_") and key != "lost_sample_rate"}
    if name.startswith("sentry"):
        if counts.get("request_transactions", 0) != sent or lost:
            problems.append(
                f"{name}: {counts.get('request_transactions', 0)} Slack request transactions for {sent} requests, "
                f"lost {lost}"
            )
    elif name == "otel":
        if counts.get("request_spans", 0) != sent:
            problems.append(f"otel: {counts.get('request_spans', 0)} request spans exported for {sent} requests")
    elif counts.get("spans") or counts.get("transactions"):
        problems.append(f"{name}: tracing was meant to be off or no-op, but it handled {counts}")
    return problems


def plot(summary: dict[str, dict[str, Any]], runs: Sequence[Run], table: dict[str, dict[str, Any]],
         cpu: dict[str, list[float]], path: Path, subtitle: str) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    titles = [summary[n]["title"].replace(", ", ",\n") for n in names]
    colors = {"off": "#9e9e9e", "otel_api": "#90a4ae", "sentry": "#6a1b9a", "sentry_unscrubbed": "#ab47bc",
              "otel": "#1565c0"}  # fmt: skip
    fig, (left, right, third) = plt.subplots(1, 3, figsize=(18, 5.4))

    medians = [summary[n]["rps_median"] for n in names]
    low = [summary[n]["rps_median"] - summary[n]["rps_min"] for n in names]
    high = [summary[n]["rps_max"] - summary[n]["rps_median"] for n in names]
    bars = left.bar(titles, medians, yerr=[low, high], capsize=5, color=[colors.get(n, "#607d8b") for n in names])
    for bar, name in zip(bars, names, strict=True):
        label = f"{summary[name]['rps_median']:.0f}/s"
        if name in table:
            label += f"\n{table[name]['throughput_ratio']:.0%} of off"
        top = max(bar.get_height(), summary[name]["rps_max"])
        left.annotate(label, (bar.get_x() + bar.get_width() / 2, top), ha="center", va="bottom", fontsize=8,
                      xytext=(0, 4), textcoords="offset points")  # fmt: skip
    for i, name in enumerate(names):
        xs = [r.rps for r in runs if r.target == name and r.mode == "saturated"]
        left.scatter([i] * len(xs), xs, color="black", s=8, zorder=3)
    left.axhline(summary[BASELINE]["rps_median"] * 0.9, color="#c62828", linestyle="--", linewidth=1)
    left.annotate("90% of off", (-0.45, summary[BASELINE]["rps_median"] * 0.9), color="#c62828",
                  fontsize=8, ha="left", va="top", xytext=(0, -2), textcoords="offset points")  # fmt: skip
    left.set_ylabel("requests/s acknowledged (bar: median; whisker: min-max; dots: rounds)", fontsize=9)
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
        right.scatter([i for i, _ in singles], [one["p50_ms"] for _, one in singles], marker="D", color="black",
                      zorder=3, label="p50, one request at a time")  # fmt: skip
    right.set_xticks(range(len(names)))
    right.set_xticklabels(titles, fontsize=8)
    right.set_ylabel("ms (median over rounds)", fontsize=9)
    right.set_title("Latency seen by the client")
    right.legend()

    if cpu:
        values = [statistics.median(cpu[n]) if cpu.get(n) else 0.0 for n in names]
        cpu_bars = third.bar(titles, values, color=[colors.get(n, "#607d8b") for n in names])
        for bar, name, value in zip(cpu_bars, names, values, strict=True):
            added = table.get(name, {}).get("cpu_ms_added")
            label = f"{value:.2f} ms" + ("" if added is None else f"\n{added:+.2f} ms paired")
            top = max([bar.get_height(), *cpu.get(name, [])])
            third.annotate(label, (bar.get_x() + bar.get_width() / 2, top), ha="center", va="bottom",
                           fontsize=8, xytext=(0, 4), textcoords="offset points")  # fmt: skip
        for i, name in enumerate(names):
            third.scatter([i] * len(cpu.get(name, [])), cpu.get(name, []), color="black", s=8, zorder=3)
        third.set_ylabel("CPU ms per request, whole process (bar: median; dots: batches)", fontsize=9)
        third.set_title("CPU per request, one at a time, no HTTP")
        third.tick_params(axis="x", labelsize=8)
        third.margins(y=0.18)
    else:
        third.set_axis_off()
    fig.suptitle("Tracing on the control ack path (signed Slack block_actions)\n" + subtitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_report(summary: dict[str, dict[str, Any]], table: dict[str, dict[str, Any]]) -> None:
    print()
    print(f"{'target':<34}{'req/s median [min-max]':>26}{'p50':>8}{'p95':>8}{'p99':>8} ms   1-conn p50")
    for data in summary.values():
        span = f"{data['rps_median']:.0f} [{data['rps_min']:.0f}-{data['rps_max']:.0f}]"
        one = data["one_connection"]
        print(
            f"{data['title']:<34}{span:>26}{data['p50_ms_median']:8.2f}{data['p95_ms_median']:8.2f}"
            f"{data['p99_ms_median']:8.2f}   {one['p50_ms'] if one else float('nan'):8.2f}"
        )
    print()
    for name, row in table.items():
        single = row["one_connection_p50_ms_added"]
        rounds = f"{row['paired_ratio_median']:.3f} [{row['paired_ratio_min']:.3f}-{row['paired_ratio_max']:.3f}]"
        print(
            f"  {name} / off: {row['throughput_ratio']:.3f} of the throughput ({row['overhead_pct']:+.1f}% overhead); "
            f"per round {rounds}; best rounds {row['best_round_ratio']:.3f}; "
            f"p50 {row['p50_ms_added']:+.2f} ms saturated, "
            f"{'n/a' if single is None else f'{single:+.2f}'} ms one at a time"
        )
        if row["cpu_ms_added"] is not None:
            print(
                f"  {'':<{len(name)}}        CPU {row['cpu_ms_per_request']:.2f} ms per request "
                f"({row['cpu_ms_added']:+.2f} ms paired with off; CPU-bound ratio {row['cpu_bound_ratio']:.3f})"
            )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke test: shorter warm-up, rounds and probes")
    parser.add_argument("--repeats", type=int, help="interleaved rounds over the targets (default 5, quick 2)")
    parser.add_argument("--duration", type=float, help="seconds measured per target and round (default 4, quick 1)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before a target's first run (default 3, quick 1)")
    parser.add_argument("--rewarmup", type=float, help="warm-up seconds before later runs (default 1, quick 0.3)")
    parser.add_argument("--max-requests", type=int, help="request bound per run (default 25000, quick 8000)")
    parser.add_argument(
        "--single-duration", type=float, help="seconds of the one-connection run per target (default 2, quick 0.6)"
    )
    parser.add_argument("--max-rate", type=float, default=6000.0, help="bodies prepared per warm-up second (bound)")
    parser.add_argument(
        "--connections", type=int, default=16, help="keep-alive connections, one request in flight each"
    )
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes sharing the connections")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn gthread threads per worker")
    parser.add_argument("--targets", default=",".join(t.name for t in TARGETS), help="comma-separated; off is kept")
    parser.add_argument("--sqlite-synchronous", choices=("FULL", "NORMAL"), default="FULL",
                        help="the servers' SQLite PRAGMA synchronous (FULL: fsync per commit)")  # fmt: skip
    parser.add_argument("--cpu-requests", type=int, help="requests per CPU batch (default 200, quick 100; 0: skip)")
    parser.add_argument("--cpu-cycles", type=int, help="CPU batches per target, one each in turn (default 12, quick 3)")
    parser.add_argument(
        "--report", type=Path, help="only recompute the figures and the plot of a tracing_overhead.json"
    )
    parser.add_argument("--cpu-probe", help=argparse.SUPPRESS)  # internal: run one probe in this process
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where tracing_overhead.json/.png go")
    args = parser.parse_args(argv)
    for name, full, short in (
        ("repeats", 5, 2),
        ("duration", 4.0, 1.0),
        ("warmup", 3.0, 1.0),
        ("rewarmup", 1.0, 0.3),
        ("single_duration", 2.0, 0.6),
        ("max_requests", 25000, 8000),
        ("cpu_requests", 200, 100),
        ("cpu_cycles", 12, 3),
    ):
        if getattr(args, name) is None:
            setattr(args, name, short if args.quick else full)
    return args


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpu_probe:
        cpu_probe(args.cpu_probe, args.cpu_requests)
        return 0
    if args.report:
        report_again(args.report)
        return 0
    wanted = {BASELINE, *(n.strip() for n in args.targets.split(",") if n.strip())}
    unknown = wanted - {t.name for t in TARGETS}
    if unknown:
        raise SystemExit(f"unknown targets: {', '.join(sorted(unknown))}")
    targets = [t for t in TARGETS if t.name in wanted]
    os.environ["BENCH_SQLITE_SYNCHRONOUS"] = args.sqlite_synchronous
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()
    cpu_before = control_ack.cpu_seconds()
    load_before = os.getloadavg()
    var_dir = Path(tempfile.mkdtemp(prefix="silo-router-tracing-bench-"))
    pool: ClientPool | None = None
    failures: list[str] = []
    checks: dict[str, Any] = {}
    cpu: dict[str, list[float]] = {}
    try:
        for target in targets:
            if silo_db("prepare", var_dir, target)["payloads"]:
                raise RuntimeError(f"the {target.name} database is not empty")
        print(
            f"tracing_overhead: {len(targets)} silo_router servers on 127.0.0.1 "
            f"(gunicorn gthread, {args.workers} workers x {args.threads} threads), "
            f"{args.connections} keep-alive connections from {args.clients} processes, "
            f"{args.repeats} interleaved rounds x {args.duration:g}s per target, warm-up {args.warmup:g}s "
            f"(then {args.rewarmup:g}s), SQLite synchronous={args.sqlite_synchronous}",
            flush=True,
        )
        with control_ack.running_servers(
            targets, var_dir=var_dir, workers=args.workers, threads=args.threads
        ) as servers:
            pool = ClientPool(args.clients)
            runs = control_ack.measure(args, targets, servers, pool)
            failures += [
                f"{s.target.name} server died:\n{s.log_tail()}" for s in servers.values() if s.proc.poll() is not None
            ]
        # The servers have stopped: every process has flushed its back end and written its counts.
        for server in servers.values():
            problems = server.log_problems()
            if problems:
                args.out.mkdir(parents=True, exist_ok=True)
                kept = args.out / f"tracing_overhead-{server.target.name}.log"
                shutil.copyfile(server.log, kept)
                failures.append(f"{server.target.name} logged {len(problems)} warning/error lines (log: {kept})")
        summary = control_ack.summarize(targets, runs)
        for target in targets:
            sent = summary[target.name]["requests_sent_incl_warmup"]
            stored = silo_db("count", var_dir, target)
            counts = read_counts(var_dir / target.name / "tracing-counts")
            checks[target.name] = {"requests_sent": sent, **stored, "tracing": counts}
            if stored["payloads"] != sent or not stored["wakeups"]["ok"]:
                failures.append(
                    f"{target.name}: {stored['payloads']} payloads for {sent} requests, wake-ups {stored['wakeups']}"
                )
            failures += check_tracing(target.name, sent, counts, args.workers)
            data = summary[target.name]
            if data["non_200"] or data["errors"]:
                failures.append(f"{target.name}: {data['non_200']} non-200 answers, {data['errors']} errors")
        cpu = cpu_per_request(targets, var_dir, args.cpu_requests, args.cpu_cycles) if args.cpu_requests > 0 else {}
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        if pool is not None:
            pool.close()
        shutil.rmtree(var_dir, ignore_errors=True)

    elapsed = time.monotonic() - began
    cpu_after = control_ack.cpu_seconds()
    others = max(0.0, (cpu_after[0] - cpu_before[0]) - (cpu_after[1] - cpu_before[1]))
    others_share = others / (elapsed * (os.cpu_count() or 1)) if cpu_after[0] else float("nan")
    paired = paired_ratios(runs, targets)
    table = overhead(summary, paired, cpu)
    print_report(summary, table)
    for name, check in checks.items():
        traced = {k: v for k, v in check["tracing"].items() if k != "processes"}
        print(f"  {name}: {check['requests_sent']} requests, {check['payloads']} payloads stored, traced {traced}")
    print(f"\n  other processes on this machine used {others_share:.0%} of its CPU during the run")
    result = {
        "benchmark": "tracing_overhead",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            **control_ack.machine(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "other_processes_cpu_share": round(others_share, 3),
        },
        "source": control_ack.source(),
        "versions": {**control_ack.versions(), **tracing_versions()},
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
            "quick": args.quick,
            "cpu_requests_per_batch": args.cpu_requests,
            "cpu_cycles": args.cpu_cycles,
        },
        "summary": summary,
        "overhead": table,
        "paired_ratios": paired,
        "cpu_ms_per_request": cpu,
        "cpu_ms_added_paired": paired_differences(cpu),
        "checks": checks,
        "failures": failures,
        "runs": [dataclasses.asdict(r) for r in runs],
        "elapsed_s": round(elapsed, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tracing_overhead.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(summary, runs, table, cpu, args.out / "tracing_overhead.png", subtitle(result["machine"], result["settings"]))
    print(f"\n  wrote {args.out / 'tracing_overhead.json'} and {args.out / 'tracing_overhead.png'} ({elapsed:.0f}s)")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


def report_again(path: Path) -> None:
    """Recompute the summary, the ratios and the plot of an earlier run from its JSON (measures nothing)."""
    result = json.loads(path.read_text())
    runs = [Run(**run) for run in result["runs"]]
    targets = [t for t in TARGETS if t.name in result["summary"]]
    cpu = {name: [float(x) for x in values] for name, values in result.get("cpu_ms_per_request", {}).items()}
    summary = control_ack.summarize(targets, runs)
    paired = paired_ratios(runs, targets)
    table = overhead(summary, paired, cpu)
    print_report(summary, table)
    result.update(summary=summary, overhead=table, paired_ratios=paired, cpu_ms_added_paired=paired_differences(cpu))
    path.write_text(json.dumps(result, indent=2) + "\n")
    settings = result["settings"]
    plot(summary, runs, table, cpu, path.with_suffix(".png"), subtitle(result["machine"], settings))
    print(f"\n  rewrote {path} and {path.with_suffix('.png')}")


def subtitle(host: dict[str, Any], settings: dict[str, Any]) -> str:
    """The plot's second title line: the machine and the settings of the run."""
    return (
        f"{host['cpus']} CPUs, gunicorn {settings['gunicorn'].replace('--worker-class ', '')}, "
        f"{settings['connections']} keep-alive connections, median of {settings['repeats']} interleaved rounds "
        f"x {settings['duration_s']:g}s, SQLite synchronous={settings['sqlite_synchronous']}"
    )


def tracing_versions() -> dict[str, str]:
    import importlib.metadata

    found = {}
    for dist in ("sentry-sdk", "opentelemetry-api", "opentelemetry-sdk"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


if __name__ == "__main__":
    sys.exit(main())
