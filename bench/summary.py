"""One record and one table of a whole benchmark suite run (``make bench``).

Reads the JSON every benchmark script wrote in ``bench/results/`` and writes:

  bench/results/<YYYY-MM-DD>.json  every script's record merged, with the machine, the
                                   commit measured, and the bar figures
  bench/results/summary.md         one table: each bar figure of the performance issue,
                                   the value measured, the target, met or NOT MET
  bench/results/summary.png        each figure against its target

A figure comes from its script's record: ``control_ack.json``'s summary for the ack
figures; for the others, the record's ``bar_figures`` list, entries of
``{"id", "value", "unit", "note"}`` whose ``id`` is one of ``FIGURES`` below (the script
knows best which of its numbers is the figure). A figure without a value is listed as
not measured, with the reason (script missing, record older than this run, no entry).

    .venv/bin/python bench/summary.py                       # after the scripts ran
    .venv/bin/python bench/summary.py --since 1764745200    # records older than that are stale
    .venv/bin/python bench/summary.py --docs docs/benchmarks.md   # and put the table there

With ``--docs`` the table replaces what stands between the ``DOCS_BEGIN`` and
``DOCS_END`` comment lines of that file.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import operator
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

#: The records a suite run writes, by script.
SCRIPTS = (
    "control_ack",
    "control_stages",
    "delivery_faults",
    "tracing_overhead",
    "backlog_drain",
    "table_growth",
    "flow_latency",
)

#: A latency figure whose percentile fell on a request that never got there (JSON has no infinity).
NEVER = "never"
DOCS_BEGIN = "<!-- bench/summary.py: the latest summary table begins -->"
DOCS_END = "<!-- bench/summary.py: the latest summary table ends -->"

COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    "<": operator.lt,
}


@dataclasses.dataclass(frozen=True)
class Figure:
    """One figure of the bar: what it is, where it comes from, and the target it must meet."""

    id: str
    title: str
    script: str
    op: str
    target: float
    unit: str


FIGURES = (
    Figure("ack.sqlite.vs_bolt_pbr", "Durable ack at saturation, SQLite default / Bolt process_before_response",
           "control_ack", ">=", 1.0, "x"),
    Figure("ack.sqlite.vs_bolt", "Durable ack at saturation, SQLite default / Bolt default mode",
           "control_ack", ">=", 2.5, "x"),
    Figure("ack.postgres_redis.vs_bolt_pbr",
           "Durable ack at saturation, PostgreSQL + Redis / Bolt process_before_response",
           "control_ack", ">=", 1.0, "x"),
    Figure("ack.one_connection.p50", "One request at a time, SQLite default: ack p50", "control_ack", "<=", 1.5, "ms"),
    Figure("ack.one_connection.p99", "One request at a time, SQLite default: ack p99", "control_ack", "<=", 5.0, "ms"),
    Figure("ack.open_loop.sqlite.p99", "Half saturation, fixed rate, bench project (no region), SQLite: ack p99",
           "control_ack", "<", 25.0, "ms"),
    Figure("ack.open_loop.postgres_redis.p99",
           "Half saturation, fixed rate, bench project (no region), PostgreSQL + Redis: ack p99",
           "control_ack", "<", 25.0, "ms"),
    Figure("loadgen.python_vs_wrk", "Bare view at saturation: the Python generator's rate differs from wrk's by",
           "control_ack", "<=", 10.0, "%"),
    Figure("flow.ack_p99.regions_up", "Half saturation: ack p99, regions up", "flow_latency", "<", 25.0, "ms"),
    Figure("flow.ack_p99.region_slow", "Half saturation: ack p99, region handler slow (10 s)",
           "flow_latency", "<", 25.0, "ms"),
    Figure("flow.ack_p99.region_down", "Half saturation: ack p99, region down", "flow_latency", "<", 25.0, "ms"),
    Figure("flow.views_open_p99", "Half saturation: Loading modal views.open at the fake Slack, p99",
           "flow_latency", "<", 100.0, "ms"),
    Figure("flow.handler_start_p50.celery", "Slack POST to region handler start, celery (Redis), p50",
           "flow_latency", "<", 30.0, "ms"),
    Figure("flow.handler_start_p99.celery", "Slack POST to region handler start, celery (Redis), p99",
           "flow_latency", "<", 150.0, "ms"),
    Figure("flow.handler_start_p50.http", "Slack POST to region handler start, http, p50",
           "flow_latency", "<", 30.0, "ms"),
    Figure("flow.handler_start_p99.http", "Slack POST to region handler start, http, p99",
           "flow_latency", "<", 150.0, "ms"),
    Figure("drain.10000", "A backlog of 10,000 payloads to one region drains after it comes back",
           "backlog_drain", "<", 20.0, "s"),
    Figure("growth.ack_p50.sqlite", "Ack p50 with 1,000,000 payload rows / with 100, SQLite",
           "table_growth", "<=", 1.2, "x"),
    Figure("growth.claim.sqlite", "Claim time with 1,000,000 payload rows / with 100, SQLite",
           "table_growth", "<=", 1.2, "x"),
    Figure("growth.ack_p50.postgres", "Ack p50 with 1,000,000 payload rows / with 100, PostgreSQL",
           "table_growth", "<=", 1.2, "x"),
    Figure("growth.claim.postgres", "Claim time with 1,000,000 payload rows / with 100, PostgreSQL",
           "table_growth", "<=", 1.2, "x"),
)  # fmt: skip


def control_ack_figures(record: dict[str, Any]) -> dict[str, tuple[float | None, str]]:
    """The ack figures, from ``control_ack.json`` (value, note)."""
    summary = record.get("summary", {})
    ratios = record.get("ratios", {})
    found: dict[str, tuple[float | None, str]] = {}

    def ratio(figure: str, key: str) -> None:
        if key in ratios:
            a, b = key.split("/")
            found[figure] = (ratios[key], f"{summary[a]['rps_median']:.0f} vs {summary[b]['rps_median']:.0f} req/s")

    ratio("ack.sqlite.vs_bolt_pbr", "silo_router/bolt_pbr")
    ratio("ack.sqlite.vs_bolt", "silo_router/bolt")
    ratio("ack.postgres_redis.vs_bolt_pbr", "silo_router_postgres_redis/bolt_pbr")
    floor = ratios.get("floor_sqlite/bolt_pbr")
    if floor is not None and "ack.sqlite.vs_bolt_pbr" in found:  # the most a durable SQLite ack can reach here
        value, note = found["ack.sqlite.vs_bolt_pbr"]
        floor_rps = summary["floor_sqlite"]["rps_median"]
        found["ack.sqlite.vs_bolt_pbr"] = (value, f"{note}; the durable floor {floor:.2f}x ({floor_rps:.0f} req/s)")
    one = (summary.get("silo_router") or {}).get("one_connection")
    if one:
        found["ack.one_connection.p50"] = (one["p50_ms"], f"{one['rps']:.0f} req/s on one connection")
        found["ack.one_connection.p99"] = (one["p99_ms"], f"{one['rps']:.0f} req/s on one connection")
    for figure, name in (("ack.open_loop.sqlite.p99", "silo_router"),
                         ("ack.open_loop.postgres_redis.p99", "silo_router_postgres_redis")):  # fmt: skip
        opened = (summary.get(name) or {}).get("open_loop")
        if opened:
            lag = opened["send_lag_p99_ms"]
            found[figure] = (
                opened["p99_ms"],
                f"at {opened['rate']:.0f}/s, p50 {opened['p50_ms']:.1f} ms, send lag p99 {lag:.1f} ms",
            )
    check = record.get("generator_check")
    if check:
        found["loadgen.python_vs_wrk"] = (
            round(abs(check["python_over_wrk"] - 1) * 100, 1),
            f"{check['python_rps_median']:.0f} vs {check['wrk_rps_median']:.0f} req/s",
        )
    return found


def declared_figures(record: dict[str, Any]) -> dict[str, tuple[float | None, str]]:
    """The ``bar_figures`` a script's record declares (id -> value, note)."""
    found: dict[str, tuple[float | None, str]] = {}
    for entry in record.get("bar_figures") or ():
        if isinstance(entry, dict) and "id" in entry:
            value = entry.get("value")
            number = None if value is None else math.inf if value == NEVER else float(value)
            found[str(entry["id"])] = (number, str(entry.get("note", "")))
    return found


def load(results: Path, since: float | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Every script's record, and for each script not included, why."""
    records: dict[str, Any] = {}
    absent: dict[str, str] = {}
    for script in SCRIPTS:
        path = results / f"{script}.json"
        if not (BENCH_DIR / f"{script}.py").exists():
            absent[script] = f"bench/{script}.py does not exist yet"
        elif not path.exists():
            absent[script] = f"{path.name} was not written"
        elif since is not None and path.stat().st_mtime < since:
            absent[script] = f"{path.name} is older than this run (the script failed or was skipped)"
        else:
            records[script] = json.loads(path.read_text())
    return records, absent


def bar_rows(records: dict[str, Any], absent: dict[str, str]) -> list[dict[str, Any]]:
    figures: dict[str, tuple[float | None, str]] = {}
    for script, record in records.items():
        figures |= declared_figures(record)
        if script == "control_ack":
            figures |= control_ack_figures(record)
    rows = []
    for figure in FIGURES:
        value, note = figures.get(figure.id, (None, ""))
        if value is None and not note:
            note = absent.get(figure.script) or f"{figure.script}.json has no figure {figure.id}"
        met = None if value is None else COMPARISONS[figure.op](value, figure.target)
        rows.append({**dataclasses.asdict(figure), "value": value, "met": met, "note": note})
    return rows


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any], profiles: list[str]) -> str:
    def shown(value: float | None, unit: str) -> str:
        if value is None:
            return "not measured"
        if math.isinf(value):
            return "never (a percentile fell on a request that never got there)"
        if unit == "x":
            return f"{value:.2f}x"
        return f"{value:,.0f} {unit}" if value >= 1000 else f"{value:.3g} {unit}"

    lines = [
        f"Suite run of {meta['date']} at commit `{meta['source'].get('commit', '?')[:12]}`"
        f"{' (uncommitted changes)' if meta['source'].get('dirty') else ''}, {meta['machine']['cpus']} CPUs "
        f"({meta['machine']['cpu_model']}), load average {meta['machine']['loadavg']} at the end."
        + (
            " **Every script ran with `--quick`: a check that the suite runs, not the bar's figures.**"
            if meta.get("quick")
            else ""
        ),
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
    ]
    for row in rows:
        verdict = {True: "met", False: "**NOT MET**", None: "not measured"}[row["met"]]
        target = f"{row['op']} {row['target']:g}{'x' if row['unit'] == 'x' else ' ' + row['unit']}"
        note = f" ({row['note']})" if row["note"] else ""
        lines.append(f"| {row['title']} | {shown(row['value'], row['unit'])}{note} | {target} | {verdict} |")
    lines.append("")
    for profile in profiles:
        lines.append(f"py-spy profile of a saturated run (where the time of a short figure goes): `{profile}`")
    if profiles:
        lines.append("")
    return "\n".join(lines)


def update_docs(path: Path, table: str) -> bool:
    """Put ``table`` between the markers of ``path``; False when the file has no markers."""
    text = path.read_text()
    begin, end = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if begin < 0 or end < begin:
        return False
    path.write_text(text[: begin + len(DOCS_BEGIN)] + "\n\n" + table.strip() + "\n\n" + text[end:])
    return True


def plot(rows: list[dict[str, Any]], path: Path, subtitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r["value"] is not None]
    if not measured:
        return
    # How far each figure is from its target, as a factor: above 1 is better than the target.
    factors = []
    for row in measured:
        value, target = max(row["value"], 1e-9), row["target"]
        factor = value / target if row["op"] == ">=" else target / value
        factors.append(min(max(factor, 1e-3), 1e3))  # "never" is far off the bar, not off the plot
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(measured) + 1.6))
    colors = ["#2e7d32" if r["met"] else "#c62828" for r in measured]
    ax.barh(range(len(measured)), factors, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(measured)))
    ax.set_yticklabels([r["title"] for r in measured], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("target / measured (or measured / target for a floor): right of 1 meets the bar", fontsize=8)
    ax.set_title("Bar figures of the performance issue\n" + subtitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def source() -> dict[str, Any]:
    git = ["git", "-C", str(REPO_DIR)]
    info: dict[str, Any] = {}
    try:
        info["commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        status = subprocess.run([*git, "status", "--porcelain", "--", "silo_router"], capture_output=True, text=True)
        info["dirty"] = bool(status.stdout.strip())
    except OSError:
        pass
    return info


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the scripts wrote their records")
    parser.add_argument("--since", type=float, help="Unix time the suite started: older records are stale")
    parser.add_argument("--docs", type=Path, help="a Markdown file whose summary-table markers get the table")
    parser.add_argument("--skipped", default="", help="comma-separated scripts the suite skipped, with no record")
    parser.add_argument("--quick", action="store_true", help="the scripts ran with --quick: say the table is no bar")
    args = parser.parse_args(argv)
    records, absent = load(args.results, args.since)
    for script in filter(None, args.skipped.split(",")):
        absent.setdefault(script, f"bench/{script}.py was skipped")
    today = datetime.date.today().isoformat()
    meta = {"date": today, "machine": machine(), "source": source(), "quick": args.quick}
    rows = bar_rows(records, absent)
    written = [{**row, "value": NEVER if row["value"] == math.inf else row["value"]} for row in rows]
    merged = {**meta, "bar": written, "not_included": absent, "results": records}
    (args.results / f"{today}.json").write_text(json.dumps(merged, indent=1) + "\n")
    profiles = [str(r["profile"]) for r in records.values() if isinstance(r, dict) and r.get("profile")]
    table = markdown(rows, meta, profiles)
    (args.results / "summary.md").write_text(table)
    plot(rows, args.results / "summary.png", f"{today}, {meta['machine']['cpus']} CPUs")
    print(table)
    if args.docs is not None and not update_docs(args.docs, table):
        print(f"  {args.docs} has no summary-table markers: not updated", file=sys.stderr)
    for script, why in absent.items():
        print(f"  not included: {script}: {why}")
    print(f"  wrote {args.results / f'{today}.json'}, {args.results / 'summary.md'}, {args.results / 'summary.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
