"""Flows at a fixed rate: the ack, the Loading modal and the hop to the region, with regions up, slow and down.

Starts the example project as real processes (``example_project.cluster.Cluster``: fake
Slack, control under gunicorn, regions us and eu, control's Celery worker and beat) on a
throwaway ``redis-server`` broker. Region us is reached over HTTP, region eu through
its Celery queue on the same Redis (with its own Celery worker). Control responses are
switched on for the ``ledger_click`` button, so every click gets control's Loading modal
(``views.open`` to the fake Slack) before control stores it and answers 200.

Each click is a unique signed ``block_actions`` body (bench/openloop.py's ``ClickBodies``)
carrying a trigger_id the fake Slack issued before the run, alternately from workspace
T0US00001 (region us, http) and T0EU00001 (region eu, celery). The clicked button's
handler (``ledger_click``, example_project/issues/slack_handlers.py) writes a row as it
starts, outside a transaction, then sleeps if the click says ``slow 10``.

First the saturation of control on this cluster is measured (an open-loop run offered
far more than it can take over a fixed set of connections: answers per second), unless
``--rate`` is given; the scenarios then run at half of it (``--rate`` overrides), open
loop (bench/openloop.py: requests at fixed instants, latency from the instant):

- ``up``: both regions up, the handler quick;
- ``down``: region us's gunicorn, region eu's gunicorn and its Celery worker stopped for
  the whole run, started again afterwards (the time to drain the backlog is reported);
- ``slow``: every click's handler takes 10 s (run last: its backlog takes far longer
  than the run to clear, and is left behind).

For each: the ack (scheduled instant to control's whole answer) p50/p95/p99; the Loading
modal (the instant to the fake Slack's record of that click's ``views.open``, matched by
trigger_id) p50/p99; and the hop to the region (the instant to the handler's start,
read from the region's ``issues_effect.created_at``) p50/p99 per transport. A click that
never got there counts as infinitely late, so a percentile is shown as "> run" when
more clicks than its share are missing.

    .venv/bin/python bench/flow_latency.py               # about 5 minutes
    .venv/bin/python bench/flow_latency.py --quick       # under 3 minutes
    .venv/bin/python bench/flow_latency.py --rate 40 --duration 20

Writes bench/results/flow_latency.json, bench/results/flow_latency.png and
bench/results/flow_latency.md (the table and how it was measured, for
docs/benchmarks.md). Needs ``redis-server`` (``bash tools/install-servers.sh``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import datetime
import gzip
import json
import math
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
sys.path.insert(0, str(REPO_DIR))
sys.path.insert(0, str(BENCH_DIR))

from cluster_runs import REGIONS, TEAMS, commit, db_time, query, running, versions  # noqa: E402
from openloop import ClickBodies, Outcome, percentile, run, signed_requests, summary  # noqa: E402

from example_project.cluster import QUEUE_PREFIX, SLACK_PATH, Cluster, ClusterError, FakeSlackAPI  # noqa: E402
from example_project.issues.buttons import LEDGER_CLICK_ACTION  # noqa: E402

#: How control reaches each region.
TRANSPORTS = {"us": "http", "eu": "celery"}
#: The order they run in: ``slow`` last, its backlog outlives the run.
SCENARIOS = ("up", "down", "slow")
SCENARIO_LABELS = {
    "up": "regions up",
    "down": "regions down (us gunicorn; eu gunicorn and worker)",
    "slow": "handler slow (10 s)",
}
#: What the ``down`` scenario stops, per region.
DOWN_SERVICES = {"us": ("us",), "eu": ("eu", "eu-worker")}
SLOW_SECONDS = 10
#: The fake's triggers live this long: a run's triggers are issued before its clock starts.
TRIGGER_TTL = 900.0
#: Seconds every control process takes to see an option change (its snapshot is refreshed each second).
OPTION_PROPAGATION = 2.0
#: The issue's bar (ms).
BAR = {"ack_p99": 25.0, "open_p99": 100.0, "hop_p50": 30.0, "hop_p99": 150.0}
ENABLE_LOADING_MODAL = f"""
from silo_router.control.models import Option
from silo_router.control.options import CONTROL_RESPONSE_ACTIONS, CONTROL_RESPONSES_ENABLED
actions = Option.objects.filter(key=CONTROL_RESPONSE_ACTIONS).values_list("value", flat=True).first() or []
Option.objects.update_or_create(
    key=CONTROL_RESPONSE_ACTIONS, defaults={{"value": sorted({{*actions, {LEDGER_CLICK_ACTION!r}}})}}
)
Option.objects.update_or_create(key=CONTROL_RESPONSES_ENABLED, defaults={{"value": True}})
print("loading-modal-on")
"""


@dataclasses.dataclass(frozen=True)
class Click:
    """One scheduled click: its region, trigger and ledger key."""

    region: str
    trigger_id: str
    key: str


@dataclasses.dataclass(frozen=True)
class Timing:
    """Per-click arrival times elsewhere (Unix seconds; ``None``: never seen)."""

    views_open: dict[str, float]
    views_open_errors: dict[str, int]
    handler_start: dict[str, float]


def ms(value: float | None) -> str:
    """A latency for the table: ms, or "> run" when a percentile falls on a click that never arrived."""
    if value is None:
        return "-"
    if math.isinf(value):
        return "> run"
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def late_percentiles(delays: Sequence[float], missing: int) -> dict[str, float | None]:
    """p50/p95/p99 in ms of ``delays`` (seconds) with ``missing`` clicks counted as never arriving."""
    values = [d * 1000 for d in delays] + [math.inf] * missing
    return {f"p{q}": percentile(values, q) for q in (50, 95, 99)}


def jsonable(value: Any) -> Any:
    """``value`` with every infinite delay as "never" and floats rounded to the microsecond (JSON has no inf)."""
    if isinstance(value, float):
        return "never" if math.isinf(value) else round(value, 3)
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value


# -- the cluster ----------------------------------------------------------------------------------


def enable_loading_modal(cluster: Cluster) -> None:
    """Turn control responses on for the ledger button (as an operator would in the admin), then wait."""
    done = cluster.manage("control", "shell", "-c", ENABLE_LOADING_MODAL)
    if "loading-modal-on" not in done.stdout:
        raise ClusterError(f"could not switch the Loading modal on: {done.stderr[-2000:]}")
    time.sleep(OPTION_PROPAGATION)


def issue_triggers(cluster: Cluster, teams: Sequence[str]) -> list[str]:
    """One fresh trigger_id per entry of ``teams``, issued by the fake Slack (in parallel, before the run)."""
    local = threading.local()

    def issue(team_id: str) -> str:
        api = getattr(local, "api", None)
        if api is None:
            api = local.api = FakeSlackAPI(cluster.slack_url)
        return api.issue_trigger(team_id=team_id)

    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        return list(pool.map(issue, teams))


def prepare(
    cluster: Cluster, *, scenario: str, count: int, port: int, fresh_for: float
) -> tuple[list[Click], list[bytes]]:
    """``count`` clicks, alternately us and eu, with live triggers; their signed requests in schedule order."""
    tag = f"{scenario}{secrets.token_hex(3)}"
    regions = [REGIONS[index % len(REGIONS)] for index in range(count)]
    triggers = issue_triggers(cluster, [TEAMS[region] for region in regions])
    clicks = [
        Click(region=region, trigger_id=trigger, key=f"{tag}-{index}")
        for index, (region, trigger) in enumerate(zip(regions, triggers, strict=True))
    ]
    verb = f"slow {SLOW_SECONDS}" if scenario == "slow" else "effect"
    bodies: dict[str, list[bytes]] = {}
    for region in REGIONS:
        own = [click for click in clicks if click.region == region]
        factory = ClickBodies(
            f"{tag}{region}",
            team_id=TEAMS[region],
            action_id=LEDGER_CLICK_ACTION,
            triggers=[click.trigger_id for click in own],
            values=[f"{verb} {click.key}" for click in own],
        )
        bodies[region] = factory.bodies(len(own))
    ordered = [bodies[click.region][index // len(REGIONS)] for index, click in enumerate(clicks)]
    requests = signed_requests(ordered, port=port, path=SLACK_PATH, secret=cluster.signing_secret, fresh_for=fresh_for)
    return clicks, requests


def timings(cluster: Cluster, clicks: Sequence[Click]) -> Timing:
    """When each click's ``views.open`` reached the fake Slack and its handler started, by trigger and key."""
    triggers = {click.trigger_id for click in clicks}
    opened: dict[str, float] = {}
    errors: Counter[str] = Counter()
    for call in cluster.fake.calls("views.open"):
        trigger = str(call.get("params", {}).get("trigger_id", ""))
        if trigger not in triggers:
            continue
        if call["ok"]:
            opened.setdefault(trigger, float(call["wall"]))
        else:
            errors[str(call["error"])] += 1
    started: dict[str, float] = {}
    prefix = clicks[0].key.rsplit("-", 1)[0] + "-%" if clicks else ""
    for region in REGIONS:
        rows = query(
            cluster.region_db(region),
            "SELECT key, MIN(created_at) FROM issues_effect WHERE key LIKE ? GROUP BY key",
            (prefix,),
        )
        for key, created in rows:
            moment = db_time(created)
            if moment is not None:
                started[str(key)] = moment
    return Timing(views_open=opened, views_open_errors=dict(errors), handler_start=started)


def active_payloads(cluster: Cluster) -> int:
    """Payloads control holds as pending or in flight (a queued envelope waits in flight for its confirmation)."""
    [(count,)] = cluster.control_rows(
        "SELECT COUNT(*) FROM silo_router_control_payload WHERE state IN ('pending', 'in_flight')"
    )
    return int(count)


def loading_checks_due(cluster: Cluster) -> int:
    """Loading modals whose check by the sweeper (done / still working) has not run yet."""
    [(count,)] = cluster.control_rows(
        "SELECT COUNT(*) FROM silo_router_control_payload WHERE loading_check_at IS NOT NULL"
    )
    return int(count)


def broker_messages(cluster: Cluster) -> int:
    """Messages waiting on the Redis broker (control's queue and every region's) or taken and not acknowledged."""
    import redis

    with contextlib.closing(redis.Redis.from_url(cluster.broker_url)) as client:
        queues = ["celery", *(f"{QUEUE_PREFIX}{region}" for region in REGIONS)]
        return sum(int(client.llen(queue)) for queue in queues) + int(client.hlen("unacked"))


def wait_drained(cluster: Cluster, timeout: float, *, loading_checks: bool = False) -> float | None:
    """Seconds until control has nothing pending or in flight and the broker holds no message (and,
    with ``loading_checks``, no Loading modal is left to check); ``None`` after ``timeout``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if (
            active_payloads(cluster) == 0
            and not (loading_checks and loading_checks_due(cluster))
            and broker_messages(cluster) == 0
        ):
            return time.monotonic() - began
        time.sleep(0.25)
    return None


def wait_for_handlers(cluster: Cluster, clicks: Sequence[Click], timeout: float) -> None:
    """Wait until every click's handler started, or ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(timings(cluster, clicks).handler_start) >= len(clicks):
            return
        time.sleep(0.5)


# -- measuring ------------------------------------------------------------------------------------


def measure_saturation(
    cluster: Cluster, *, port: int, seconds: float, offered: float, connections: int
) -> dict[str, Any]:
    """Answers per second when control is offered ``offered`` clicks/s over ``connections`` connections in all."""
    count = int(offered * seconds)
    clicks, requests = prepare(cluster, scenario="saturation", count=count, port=port, fresh_for=seconds + 30)
    per_process = max(1, connections // 2)
    outcomes, pools = run(requests, port=port, rate=offered, connections=per_process, max_connections=per_process)
    answered = [o for o in outcomes if o.answered is not None and 200 <= o.status < 300]
    window = max(o.answered or 0.0 for o in answered) - outcomes[0].scheduled if answered else 0.0
    rate = len(answered) / window if window > 0 else 0.0
    return {
        "offered_per_s": offered,
        "connections": per_process * 2,
        "requests": len(outcomes),
        "ok": len(answered),
        "statuses": dict(Counter(o.status for o in outcomes)),
        "answered_per_s": round(rate, 1),
        "capped_by_offer": rate >= 0.9 * offered,
        "pools": [dataclasses.asdict(pool) for pool in pools],
        "clicks": len(clicks),
    }


def scenario_result(
    name: str, clicks: Sequence[Click], outcomes: Sequence[Outcome], timing: Timing, *, warmup: float
) -> dict[str, Any]:
    """The figures of one scenario, over the clicks scheduled after the warm-up."""
    start = outcomes[0].scheduled + warmup
    measured = [(click, o) for click, o in zip(clicks, outcomes, strict=True) if o.scheduled >= start]
    acks = summary([o for _, o in measured])
    opens = [timing.views_open[c.trigger_id] - o.scheduled for c, o in measured if c.trigger_id in timing.views_open]
    hops: dict[str, Any] = {}
    for region in REGIONS:
        own = [(c, o) for c, o in measured if c.region == region]
        delays = [timing.handler_start[c.key] - o.scheduled for c, o in own if c.key in timing.handler_start]
        hops[TRANSPORTS[region]] = {
            "region": region,
            "clicks": len(own),
            "started": len(delays),
            **late_percentiles(delays, len(own) - len(delays)),
        }
    return {
        "scenario": name,
        "label": SCENARIO_LABELS[name],
        "clicks": len(measured),
        "ack": acks,
        # A click without a 2xx answer counts as never acknowledged, as a missing modal or handler does.
        "ack_late": late_percentiles(
            [o.latency for _, o in measured if o.latency is not None and 200 <= o.status < 300],
            len(measured) - acks["ok"],
        ),
        "views_open": {
            "opened": len(opens),
            "errors": timing.views_open_errors,
            **late_percentiles(opens, len(measured) - len(opens)),
        },
        "handler_start": hops,
        "delays_ms": {
            "ack": sorted((o.latency or math.inf) * 1000 for _, o in measured),
            "views_open": sorted(d * 1000 for d in opens),
            **{f"handler_{TRANSPORTS[region]}": sorted(hops_of(measured, timing, region)) for region in REGIONS},
        },
        "timeline": [
            [
                o.scheduled - outcomes[0].scheduled,
                c.region,
                _delay_ms(o.answered, o.scheduled),
                _delay_ms(timing.views_open.get(c.trigger_id), o.scheduled),
                _delay_ms(timing.handler_start.get(c.key), o.scheduled),
            ]
            for c, o in measured
        ],
    }


def hops_of(measured: Sequence[tuple[Click, Outcome]], timing: Timing, region: str) -> list[float]:
    """Milliseconds from each click of ``region`` to its handler's start, for the clicks whose handler started."""
    return [
        (timing.handler_start[c.key] - o.scheduled) * 1000
        for c, o in measured
        if c.region == region and c.key in timing.handler_start
    ]


def _delay_ms(moment: float | None, scheduled: float) -> float | None:
    return None if moment is None else (moment - scheduled) * 1000


@contextlib.contextmanager
def profiling(
    cluster: Cluster, scenario: str, seconds: float, services: Sequence[str], directory: Path
) -> Iterator[dict[str, Any]]:
    """``py-spy record --idle`` of each service (its gunicorn workers too) for ``seconds``; summaries on exit.

    Writes collapsed stacks to ``<directory>/flow_latency.<scenario>.<service>.txt.gz`` (gunzip,
    then load them in speedscope or flamegraph.pl); the summary is each service's leaf functions by share of samples.
    """
    found: dict[str, Any] = {}
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    running: dict[str, tuple[Any, Path]] = {}
    for service in services:
        process = cluster.services[service].process
        if process is None:
            continue
        out = directory / f"flow_latency.{scenario}.{service}.txt"
        argv = [spy, "record", "--idle", "--nonblocking", "--subprocesses", "--format", "raw"]
        argv += ["--rate", "100", "--duration", f"{max(1, round(seconds))}", "--pid", str(process.pid), "-o", str(out)]
        running[service] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out)
    try:
        yield found
    finally:
        for service, (spy_process, out) in running.items():
            try:
                _, err = spy_process.communicate(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                spy_process.kill()
                _, err = spy_process.communicate()
            if not out.exists():
                found[service] = {"error": err.decode(errors="replace")[-300:]}
                continue
            packed = out.with_name(out.name + ".gz")
            packed.write_bytes(gzip.compress(out.read_bytes()))
            out.unlink()
            found[service] = leaf_shares(packed)


#: Frames of the code under test: a sample is attributed to the deepest of them.
PROJECT_FRAMES = ("silo_router/", "example_project/")


def leaf_shares(path: Path, top: int = 12) -> dict[str, Any]:
    """Where a py-spy raw profile's samples in the project's code were: ``deepest project frame -> leaf``.

    Samples with no project frame on the stack (idle pools, gunicorn's arbiter, Celery's
    loop) are counted apart, so the shares say where a request or a delivery spent its
    time, waits on locks and sockets included (``--idle``).
    """
    places: Counter[str] = Counter()
    outside = 0
    for line in gzip.decompress(path.read_bytes()).decode(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        ours = [frame for frame in frames if any(marker in frame for marker in PROJECT_FRAMES)]
        if not ours:
            outside += int(count)
            continue
        leaf = frames[-1]
        places[ours[-1] if leaf == ours[-1] else f"{ours[-1]} -> {leaf}"] += int(count)
    total = sum(places.values())
    return {
        "samples_in_project": total,
        "samples_outside": outside,
        "file": path.name,
        "places": [[place, round(count / total, 3)] for place, count in places.most_common(top)] if total else [],
    }


def run_scenario(
    cluster: Cluster,
    name: str,
    *,
    port: int,
    rate: float,
    warmup: float,
    duration: float,
    say: Any,
    profile: Sequence[str] = (),
    profile_dir: Path = RESULTS_DIR,
) -> dict[str, Any]:
    """Prepare, break what the scenario breaks, send the clicks open loop, collect, repair."""
    count = max(2, int(rate * (warmup + duration)))
    cluster.fake.reset()  # the fake scans its views on every views.open: start each scenario empty
    clicks, requests = prepare(cluster, scenario=name, count=count, port=port, fresh_for=warmup + duration + 30)
    if name == "down":
        for services in DOWN_SERVICES.values():
            for service in services:
                cluster.stop_service(service)
    at_start = {"active_payloads": active_payloads(cluster), "broker_messages": broker_messages(cluster)}
    say(f"  {name}: {count} clicks at {rate:g}/s ({warmup:g} s warm-up, {duration:g} s measured); at start {at_start}")
    with profiling(cluster, name, warmup + duration, profile, profile_dir) as profiles:
        outcomes, pools = run(requests, port=port, rate=rate)
    extra: dict[str, Any] = {"pools": [dataclasses.asdict(pool) for pool in pools], "at_start": at_start}
    if profile:
        extra["profiles"] = profiles
    if name == "up":
        wait_for_handlers(cluster, clicks, timeout=20.0)
    elif name == "slow":
        wait_for_handlers(cluster, clicks, timeout=2.0)
    timing = timings(cluster, clicks)
    if name == "down":
        restarted = time.monotonic()
        for services in DOWN_SERVICES.values():
            for service in services:
                cluster.start_service(service)
        extra["restart_s"] = round(time.monotonic() - restarted, 1)
        drained = wait_drained(cluster, timeout=120.0)
        extra["backlog_drained_s_after_restart"] = None if drained is None else round(time.monotonic() - restarted, 1)
    result = scenario_result(name, clicks, outcomes, timing, warmup=warmup)
    result.update(extra)
    return result


# -- reporting ------------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    """The scenario table (Markdown)."""
    lines = [
        "| scenario | rate/s | clicks | ack p50 | ack p95 | ack p99 | non-2xx | Loading modal p50 | p99 | "
        "to handler, http p50 | p99 | to handler, celery p50 | p99 | send lag p99 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["scenarios"]:
        ack, opened, hops = row["ack"], row["views_open"], row["handler_start"]
        non_ok = row["clicks"] - ack["ok"]
        lines.append(
            f"| {row['label']} | {result['rate']:g} | {row['clicks']} | {ms(ack['p50_ms'])} | {ms(ack['p95_ms'])} | "
            f"{ms(ack['p99_ms'])} | {non_ok} | {ms(opened['p50'])} | {ms(opened['p99'])} | "
            f"{ms(hops['http']['p50'])} | {ms(hops['http']['p99'])} | "
            f"{ms(hops['celery']['p50'])} | {ms(hops['celery']['p99'])} | {ms(ack['send_lag_p99_ms'])} |"
        )
    return "\n".join(lines)


#: The bar figures of bench/summary.py this script measures: ack p99 per scenario.
ACK_FIGURES = {"up": "flow.ack_p99.regions_up", "slow": "flow.ack_p99.region_slow", "down": "flow.ack_p99.region_down"}


def bar_figures(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The bar's ``flow.*`` figures (bench/summary.py), in ms; a percentile that fell on a click that never
    arrived is infinite (written "never")."""
    rows = {row["scenario"]: row for row in result["scenarios"]}
    at = f"{result['rate']:g} clicks/s" + (" (--quick)" if result["settings"]["quick"] else "")
    figures: list[dict[str, Any]] = []
    for scenario, figure in ACK_FIGURES.items():
        row = rows.get(scenario)
        if row is None:
            figures.append({"id": figure, "value": None, "unit": "ms", "note": f"scenario {scenario} not run"})
            continue
        ack, failed = row["ack"], row["clicks"] - row["ack"]["ok"]
        note = f"{at}, p50 {ms(ack['p50_ms'])} ms, {failed} of {row['clicks']} not 2xx"
        figures.append({"id": figure, "value": row["ack_late"]["p99"], "unit": "ms", "note": note})
    opens = {name: row["views_open"]["p99"] for name, row in rows.items()}
    worst = max(opens.values(), default=None, key=lambda value: -1.0 if value is None else value)
    figures.append({
        "id": "flow.views_open_p99",
        "value": worst,
        "unit": "ms",
        "note": f"{at}, the worst scenario's: " + ", ".join(f"{name} {ms(value)}" for name, value in opens.items()),
    })  # fmt: skip
    up = rows.get("up")
    for transport in ("celery", "http"):
        hop = up["handler_start"].get(transport) if up else None
        for q in ("p50", "p99"):
            figure = f"flow.handler_start_{q}.{transport}"
            if hop is None:
                figures.append({"id": figure, "value": None, "unit": "ms", "note": "scenario up not run"})
                continue
            note = f"{at}, regions up, {hop['started']} of {hop['clicks']} handlers started (region {hop['region']})"
            figures.append({"id": figure, "value": hop[q], "unit": "ms", "note": note})
    return figures


def verdicts(result: dict[str, Any]) -> list[str]:
    """The issue's bar, figure by figure: met or short."""
    found = []
    for row in result["scenarios"]:
        ack_p99 = row["ack"]["p99_ms"]
        ack_ok = ack_p99 is not None and ack_p99 < BAR["ack_p99"] and row["ack"]["ok"] == row["clicks"]
        found.append(f"{row['scenario']}: ack p99 {ms(ack_p99)} ms (< {BAR['ack_p99']:g}): {_met(ack_ok)}")
        open_p99 = row["views_open"]["p99"]
        found.append(
            f"{row['scenario']}: Loading modal p99 {ms(open_p99)} ms (< {BAR['open_p99']:g}): "
            f"{_met(open_p99 is not None and open_p99 < BAR['open_p99'])}"
        )
    up = next((row for row in result["scenarios"] if row["scenario"] == "up"), None)
    if up is not None:
        for transport, hop in up["handler_start"].items():
            p50, p99 = hop["p50"], hop["p99"]
            met = p50 is not None and p99 is not None and p50 < BAR["hop_p50"] and p99 < BAR["hop_p99"]
            found.append(
                f"up: Slack POST -> {transport} handler start p50 {ms(p50)} ms (< {BAR['hop_p50']:g}), "
                f"p99 {ms(p99)} ms (< {BAR['hop_p99']:g}): {_met(met)}"
            )
    return found


def _met(ok: bool) -> str:
    return "met" if ok else "SHORT"


def profile_lines(result: dict[str, Any]) -> str:
    """Each profiled service's busiest leaf frames per scenario (py-spy, idle waits included), as Markdown."""
    lines = []
    for row in result["scenarios"]:
        for service, found in (row.get("profiles") or {}).items():
            places = ", ".join(f"`{place}` {share:.0%}" for place, share in found.get("places", [])[:6])
            lines.append(
                f"- {row['scenario']}, {service} ({found.get('samples_in_project', 0)} samples in the project's "
                f"code): {places or found}"
            )
    if not lines:
        return ""
    return (
        "\nWhere the time went (py-spy record --idle; each sample in the project's code by its deepest "
        "project frame and, when that is not the leaf, the leaf; the stacks are "
        "`bench/results/flow_latency.<scenario>.<service>.txt.gz`):\n\n" + "\n".join(lines) + "\n"
    )


def snippet(result: dict[str, Any]) -> str:
    """bench/results/flow_latency.md: the table, the bar, and how it was measured."""
    saturation = result.get("saturation") or {}
    down: dict[str, Any] = next((row for row in result["scenarios"] if row["scenario"] == "down"), {})
    sat_text = (
        f"{saturation['answered_per_s']:g} clicks/s answered when offered {saturation['offered_per_s']:g}/s over "
        f"{saturation['connections']} connections"
        if saturation
        else "not measured (the rate was given)"
    )
    return f"""## Flows at half saturation

`bench/flow_latency.py` drives the example project as real processes
(`example_project.cluster.Cluster`: fake Slack, control under gunicorn with
{result["settings"]["control_processes"]} processes, regions us and eu,
{_deliverers(result["settings"])}, a throwaway Redis as the broker). Region us is reached over HTTP, region
eu through its Celery queue on Redis. Control responses are on for the clicked button, so
control opens a Loading modal (`views.open` to the fake Slack) before it stores the click
and answers.

Clicks are unique signed `block_actions` bodies carrying trigger_ids the fake Slack issued
before the run (its triggers live {TRIGGER_TTL:g} s here, so a run's can be issued ahead),
alternately from a workspace of us and one of eu, sent open loop by `bench/openloop.py`:
{result["settings"]["arrival"]} arrivals at a fixed rate from 2 processes over keep-alive
connections to control's gunicorn{" (through the buffering proxy)" if result["settings"]["via_proxy"] else ""}, a
connection opened whenever none is idle, every body built and signed before the clock
starts. Every latency is measured from the click's scheduled instant (no coordinated
omission): the ack to control's whole answer; the Loading modal to the fake Slack's record
of that trigger's `views.open`; the hop to the region to the moment the handler started
(it writes a row first thing, outside a transaction). A click that never got there
counts as infinitely late ("> run").

Saturation of control on this cluster: {sat_text}; the scenarios ran at {result["rate"]:g}
clicks/s, {result["settings"]["duration"]:g} s measured after {result["settings"]["warmup"]:g} s of warm-up each.
"Regions down" stops us's gunicorn and eu's gunicorn and worker for the whole run; after
they came back, the backlog drained in {down.get("backlog_drained_s_after_restart", "-")} s.
"Handler slow" makes every click's handler sleep {SLOW_SECONDS} s: the regions fall behind at once
(that is the scenario); what matters is that control's ack and the Loading modal do not.

{table(result)}

Latencies in ms. "send lag p99" is how late the generator itself sent its requests: a
high figure there means the machine was starved, not only control. The issue's bar:

{chr(10).join("- " + line for line in verdicts(result))}
{profile_lines(result)}
Measured {result["date"]} at commit `{result["commit"][:10]}`{" (--quick)" if result["settings"]["quick"] else ""};
load average before/after {result["machine"]["loadavg_before"]} / {result["machine"]["loadavg_after"]} on
{result["machine"]["cpus"]} CPUs (the other processes on the machine share them).

![Latency distributions per scenario](../bench/results/flow_latency.png)
"""


def plot(result: dict[str, Any], path: Path) -> None:
    """Per scenario: the share of clicks done by each delay (top), and each click's delays over the run (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["scenarios"]
    figure, axes = plt.subplots(2, len(rows), figsize=(5 * len(rows), 7.5), squeeze=False)
    legs = {
        "ack": ("ack (control's 200)", "#1565c0"),
        "views_open": ("Loading modal at Slack", "#ef6c00"),
        "handler_http": ("handler start, http (us)", "#2e7d32"),
        "handler_celery": ("handler start, celery (eu)", "#6a1b9a"),
    }
    for column, row in enumerate(rows):
        share, timeline = axes[0][column], axes[1][column]
        for leg, (label, color) in legs.items():
            values = [v for v in row["delays_ms"].get(leg, []) if not math.isinf(v)]
            transport = leg.removeprefix("handler_")
            total = max(
                row["handler_start"][transport]["clicks"] if transport in row["handler_start"] else row["clicks"], 1
            )
            if values:
                share.step(
                    values, [(i + 1) / total for i in range(len(values))], where="post", label=label, color=color
                )
        for limit in (BAR["ack_p99"], BAR["open_p99"], BAR["hop_p99"]):
            share.axvline(limit, color="#9e9e9e", linewidth=0.6, linestyle=":")
        share.set_xscale("log")
        share.set_ylim(0, 1.02)
        share.set_title(f"{row['label']}\n{result['rate']:g} clicks/s", fontsize=9)
        share.set_xlabel("ms after the click's scheduled instant")
        share.grid(True, alpha=0.3)
        points: dict[str, tuple[list[float], list[float]]] = {leg: ([], []) for leg in legs}
        for offset, region, ack, opened, started in row["timeline"]:
            handler = f"handler_{TRANSPORTS[region]}"
            for leg, value in (("ack", ack), ("views_open", opened), (handler, started)):
                if value is not None:
                    points[leg][0].append(offset)
                    points[leg][1].append(max(value, 0.01))
        for leg, (label, color) in legs.items():
            xs, ys = points[leg]
            if xs:
                timeline.scatter(xs, ys, s=2, color=color, label=label, alpha=0.6)
        timeline.set_yscale("log")
        timeline.set_xlabel("s into the measured run (click's instant)")
        timeline.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("share of clicks")
    axes[1][0].set_ylabel("ms after the click's instant")
    axes[0][0].legend(fontsize=7, loc="lower right")
    figure.suptitle(f"Flows at a fixed rate, {result['date']} ({result['machine']['cpus']} CPUs)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


# -- main -----------------------------------------------------------------------------------------


def _deliverers(settings: dict[str, Any]) -> str:
    """Who delivers in control, as the snippet says it."""
    if settings.get("control_runner") == "embedded":
        return "the embedded runner of control's web processes delivering (no control worker or beat)"
    return f"{settings.get('control_workers', 1)} Celery worker process(es) of control with 4 threads each and its beat"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every scenario briefly (under 3 minutes in all)")
    parser.add_argument("--rate", type=float, default=None, help="clicks/s (default: half the measured saturation)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per scenario (30; quick 10)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per scenario (3; quick 1)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {SCENARIOS}")
    parser.add_argument("--arrival", choices=("uniform", "poisson"), default="poisson", help="spacing of the clicks")
    parser.add_argument("--control-processes", type=int, default=2, help="control's gunicorn processes (default 2)")
    parser.add_argument("--control-workers", type=int, default=1, help="control's Celery workers (default 1)")
    parser.add_argument(
        "--control-runner",
        choices=("celery", "embedded"),
        default="celery",
        help="what delivers in control: Celery workers and beat (default), or the embedded runner of its web "
        "processes (no control worker or beat; region eu's envelopes still cross on its Celery queue)",
    )
    parser.add_argument("--via-proxy", action="store_true", help="send through the buffering proxy (no keep-alive)")
    parser.add_argument("--saturation-offer", type=float, default=600.0, help="clicks/s offered to find saturation")
    parser.add_argument("--saturation-connections", type=int, default=16, help="connections when finding saturation")
    parser.add_argument(
        "--profile",
        default="",
        help="py-spy these services during every scenario, comma-separated (control,worker,us,eu-worker...)",
    )
    parser.add_argument("--var-dir", type=Path, default=None, help="the cluster's directory (default: a temporary one)")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "flow_latency.json", help="where the JSON goes")
    args = parser.parse_args(argv)
    args.duration = args.duration if args.duration is not None else (10.0 if args.quick else 30.0)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)
    args.scenario_list = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = set(args.scenario_list) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    args.scenario_list = [name for name in SCENARIOS if name in args.scenario_list]
    return args


def _interrupt(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C, so every process is stopped."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Measure saturation, run the scenarios at a fixed rate, report; 1 if a run broke."""
    args = parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)
    began = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {message}", flush=True)

    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    var_dir = args.var_dir or Path(tempfile.mkdtemp(prefix="silo-flow-"))
    result: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "versions": versions(),
        "settings": {
            "quick": args.quick,
            "duration": args.duration,
            "warmup": args.warmup,
            "arrival": args.arrival,
            "control_processes": args.control_processes,
            "control_workers": args.control_workers,
            "control_runner": args.control_runner,
            "via_proxy": args.via_proxy,
            "transports": TRANSPORTS,
            "slow_seconds": SLOW_SECONDS,
            "profile": args.profile,
        },
        "scenarios": [],
    }
    try:
        say(f"starting Redis and the example cluster in {var_dir}")
        with running(
            var_dir,
            upstream_latency=0.0,
            region_transports=TRANSPORTS,
            trigger_ttl=TRIGGER_TTL,
            control_processes=args.control_processes,
            control_workers=args.control_workers,
            control_runner=args.control_runner,
        ) as (cluster, _redis):
            port = cluster.ports["control" if args.via_proxy else "control-app"]
            enable_loading_modal(cluster)
            if args.rate is None:
                seconds = 2.5 if args.quick else 5.0
                say(f"saturation: offering {args.saturation_offer:g} clicks/s for {seconds:g} s")
                saturation = measure_saturation(
                    cluster,
                    port=port,
                    seconds=seconds,
                    offered=args.saturation_offer,
                    connections=args.saturation_connections,
                )
                result["saturation"] = saturation
                rate = max(1.0, round(saturation["answered_per_s"] / 2))
                say(f"  control answered {saturation['answered_per_s']:g} clicks/s: the scenarios run at {rate:g}/s")
                if saturation["capped_by_offer"]:
                    say("  (that is near the offer: saturation may be higher; raise --saturation-offer)")
                # Its deliveries, and the sweeper's check of each Loading modal (done after
                # LOADING_VIEW_TIMEOUT), finish before the scenarios start.
                drained = wait_drained(cluster, timeout=90.0, loading_checks=True)
                result["saturation"]["drained_s"] = drained
                say(f"  its backlog drained in {drained:.1f} s" if drained is not None else "  not drained in 90 s")
            else:
                rate = args.rate
                # Every process imports and connects on its first requests: not part of any scenario.
                say(f"warming the cluster up: {rate:g} clicks/s for 2 s")
                _, warm = prepare(cluster, scenario="warm", count=max(2, int(rate * 2)), port=port, fresh_for=40)
                run(warm, port=port, rate=rate)
                wait_drained(cluster, timeout=60.0)
            result["rate"] = rate
            for name in args.scenario_list:
                row = run_scenario(
                    cluster,
                    name,
                    port=port,
                    rate=rate,
                    warmup=args.warmup,
                    duration=args.duration,
                    say=say,
                    profile=[service for service in args.profile.split(",") if service],
                    profile_dir=args.output.parent,
                )
                result["scenarios"].append(row)
                ack, opened = row["ack"], row["views_open"]
                say(
                    f"    ack p50/p99 {ms(ack['p50_ms'])}/{ms(ack['p99_ms'])} ms ({ack['ok']}/{row['clicks']} 2xx); "
                    f"Loading modal p50/p99 {ms(opened['p50'])}/{ms(opened['p99'])} ms ({opened['opened']} opened); "
                    + "; ".join(
                        f"{t} handler p50/p99 {ms(h['p50'])}/{ms(h['p99'])} ms ({h['started']}/{h['clicks']})"
                        for t, h in row["handler_start"].items()
                    )
                )
    except (ClusterError, RuntimeError) as exc:
        print(f"flow benchmark failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; every process is stopped", file=sys.stderr)
        return 130
    result["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_before": loadavg_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    result["verdicts"] = verdicts(result)
    result["bar_figures"] = bar_figures(result)
    result["seconds"] = round(time.monotonic() - began, 1)
    print()
    print(table(result))
    print()
    for line in result["verdicts"]:
        print(line)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(jsonable(result), indent=1) + "\n")
    plot(result, args.output.with_suffix(".png"))
    args.output.with_suffix(".md").write_text(snippet(result))
    if args.var_dir is None:  # the logs stay only when the run broke, or when asked for with --var-dir
        shutil.rmtree(var_dir, ignore_errors=True)
    say(f"wrote {args.output}, {args.output.with_suffix('.png').name}, {args.output.with_suffix('.md').name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
