"""Draining a region's backlog: 10,000 payloads for region eu, stored while it was down,
delivered after it comes back, while region us keeps getting fresh traffic.

Starts the example project as real processes (``example_project.cluster.Cluster``: fake
Slack, control under gunicorn, regions us and eu under gunicorn, control's Celery worker
with ``--concurrency`` threads and beat) on a throwaway ``redis-server`` broker, with the
compressed retry schedule of ``bench/delivery_faults.py`` (a circuit probes every 1-2 s).
Both regions use the http transport, so a backlog goes to eu's batch endpoint.

1. eu is stopped; a few signed ``message`` events for workspace T0EU00001 go through
   control, their deliveries fail, and eu's circuit opens;
2. ``--payloads`` more are stored for eu by control's own ``delivery.store`` (in a
   control shell, 500 a call), copies of one of those events' envelope with fresh event
   ids: the request path is not what this measures, and sending 10,000 events through
   it would take longer than the drain;
3. signed ``message`` events for workspace T0US00001 (region us) go through control at
   ``--us-rate`` per second from before eu is started until after its backlog is gone;
4. eu is started; the drain time is from the moment eu answers its health check until
   control has delivered every eu payload (read from control's ``delivered_at``).

Prints the figures, and the delivery latency of us payloads (``delivered_at`` minus
``created_at``, in control's database) before and during the drain; writes
bench/results/backlog_drain.json and bench/results/backlog_drain.png. Exits 1 if an eu
payload was not delivered, or a region handled an event twice.

    .venv/bin/python bench/backlog_drain.py            # 10,000 payloads
    .venv/bin/python bench/backlog_drain.py --quick    # 2,000 payloads

Needs ``redis-server`` (``bash tools/install-servers.sh`` installs it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cluster_runs import (  # noqa: E402
    CIRCUIT_TABLE,
    COMPRESSED_SETTINGS,
    PAYLOAD_TABLE,
    RESULTS_DIR,
    TEAMS,
    db_time,
    query,
    running,
    wait_for,
)
from openloop import percentile  # noqa: E402

from example_project.cluster import Cluster  # noqa: E402

#: Events sent through control while eu is down, to open its circuit (the threshold is 5).
OPENING_EVENTS = 8
STORE_CALL = 500
#: The backlog of the issue's bar: drained in under 20 s after its region comes back.
BAR_PAYLOADS = 10_000
#: Seconds of us traffic measured before eu is started, and after its backlog is gone.
BEFORE_S = 6.0
AFTER_S = 4.0

STORE_SCRIPT = """
import json, time
from silo_router.control import delivery
from silo_router.control.models import Payload
from silo_router.envelope import Envelope
template = Envelope.from_json(Payload.objects.get(pk={template!r}).envelope)
body = json.loads(template.body)
started = time.perf_counter()
stored = 0
for start in range(0, {count}, {per_call}):
    batch = []
    for i in range(start, min({count}, start + {per_call})):
        event_id = "{tag}%06d" % i
        body["event_id"] = event_id
        key = "slack:event:" + event_id
        batch.append(template.replace(
            id=Envelope.make_id(key, "eu"), idempotency_key=key,
            body=json.dumps(body, separators=(",", ":")), created_at=time.time()))
    stored += len(delivery.store(batch))
print("stored", stored, round(time.perf_counter() - started, 3))
"""


class UsTraffic:
    """Signed ``message`` events for region us through control, at ``rate`` per second, until stopped."""

    def __init__(self, cluster: Cluster, *, rate: float, tag: str) -> None:
        self.sender = cluster.sender()
        self.rate = rate
        self.tag = tag
        self.sent: list[tuple[str, float, int]] = []  # event id, wall time, status
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="us-traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        started = time.monotonic()
        index = 0
        while not self._stop.is_set():
            due = started + index / self.rate
            if self._stop.wait(max(due - time.monotonic(), 0.0)):
                return
            event_id = f"{self.tag}US{index:06d}"
            sent_at = time.time()
            try:
                answer = self.sender.event(
                    team_id=TEAMS["us"],
                    event_type="message",
                    event={"type": "message", "text": "effect", "channel": "C0US00001", "user": "U0USER001"},
                    event_id=event_id,
                )
                status = answer.status
            except Exception:  # a refused connection or a timeout: counted as no answer
                status = 0
            self.sent.append((event_id, sent_at, status))
            index += 1


def drain_figures(cluster: Cluster, *, eu_up_at: float) -> dict[str, Any]:
    """When each eu payload was delivered, relative to eu answering again."""
    eu = cluster.control_rows(f"SELECT state, delivered_at FROM {PAYLOAD_TABLE} WHERE region = 'eu'")
    delivered = sorted(t for state, at in eu if state == "delivered" and (t := db_time(at)) is not None)
    last = delivered[-1] if delivered else None
    first_after = next((t for t in delivered if t >= eu_up_at), None)
    return {
        "eu_payloads": len(eu),
        "eu_delivered": len(delivered),
        "eu_not_delivered": len(eu) - len(delivered),
        "drain_s": round(last - eu_up_at, 3) if last is not None else None,
        "first_delivery_after_up_s": round(first_after - eu_up_at, 3) if first_after is not None else None,
        "drain_after_first_delivery_s": round(last - first_after, 3) if last and first_after else None,
        "delivered_offsets_s": [round(t - eu_up_at, 3) for t in delivered],
    }


def us_latencies(cluster: Cluster, *, eu_up_at: float, drained_at: float) -> dict[str, Any]:
    """Delivery latency of us payloads (control's delivered_at - created_at), by phase."""
    us = cluster.control_rows(f"SELECT created_at, delivered_at, state FROM {PAYLOAD_TABLE} WHERE region = 'us'")
    phases: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    points: list[tuple[float, float]] = []
    undelivered = 0
    for created, delivered, state in us:
        start, end = db_time(created), db_time(delivered)
        if start is None or end is None or state != "delivered":
            undelivered += 1
            continue
        phase = "before" if start < eu_up_at else "during" if start <= drained_at else "after"
        phases[phase].append(end - start)
        points.append((start - eu_up_at, end - start))
    return {
        "undelivered": undelivered,
        "phases": {
            name: {
                "count": len(values),
                "p50_ms": _ms(percentile(values, 50)),
                "p99_ms": _ms(percentile(values, 99)),
                "max_ms": _ms(max(values) if values else None),
            }
            for name, values in phases.items()
        },
        "points": sorted((round(t, 3), round(lat * 1000, 1)) for t, lat in points),
    }


def _ms(value: float | None) -> float | None:
    return round(value * 1000, 1) if value is not None else None


def region_effects(cluster: Cluster, region: str, prefix: str) -> tuple[int, int]:
    """(effect rows, distinct event ids) of events whose id starts with ``prefix`` in ``region``'s database."""
    [(total, distinct)] = query(
        cluster.region_db(region),
        "SELECT COUNT(*), COUNT(DISTINCT key) FROM issues_effect WHERE key LIKE ?",
        (prefix + "%",),
    )
    return int(total), int(distinct)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drain, us = result["drain"], result["us"]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    offsets = drain["delivered_offsets_s"]
    top.plot(offsets, range(1, len(offsets) + 1), color="tab:blue")
    top.axvline(0, color="grey", linestyle="--", label="eu answers again")
    top.set_ylabel("eu payloads delivered")
    top.set_title(
        f"Backlog of {result['config']['payloads']} payloads to eu: drained in {drain['drain_s']} s "
        f"(worker concurrency {result['config']['worker_concurrency']})"
    )
    top.legend(loc="lower right")
    points = us["points"]
    bottom.scatter([t for t, _ in points], [ms for _, ms in points], s=6, color="tab:orange")
    bottom.axvline(0, color="grey", linestyle="--")
    if drain["drain_s"] is not None:
        bottom.axvline(drain["drain_s"], color="tab:blue", linestyle=":", label="eu backlog gone")
        bottom.legend(loc="upper right")
    bottom.set_yscale("log")
    bottom.set_ylabel("us delivery latency (ms)")
    bottom.set_xlabel("seconds since eu answers again")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args: argparse.Namespace) -> dict[str, Any]:
    var_dir = Path(tempfile.mkdtemp(prefix="silo-backlog-"))
    tag = "Ev" + secrets.token_hex(3).upper()
    with running(var_dir, worker_concurrency=args.concurrency, extra_env=COMPRESSED_SETTINGS) as (cluster, _):
        sender = cluster.sender()
        cluster.stop_service("eu")
        for i in range(OPENING_EVENTS):
            sender.event(
                team_id=TEAMS["eu"],
                event_type="message",
                event={"type": "message", "text": "effect", "channel": "C0EU00001", "user": "U0USER001"},
                event_id=f"{tag}OPEN{i:02d}",
            )
        opened = wait_for(
            lambda: (
                cluster.control_rows(f"SELECT state FROM {CIRCUIT_TABLE} WHERE region = 'eu'")
                in ([("open",)], [("half_open",)])
            ),
            timeout=30,
        )
        if not opened:
            raise RuntimeError("eu's circuit did not open while eu was down")
        [(template,)] = cluster.control_rows(f"SELECT id FROM {PAYLOAD_TABLE} WHERE region = 'eu' LIMIT 1")
        template_id = str(template)
        if len(template_id) == 32:  # SQLite stores a UUID as 32 hex digits
            template_id = (
                f"{template_id[:8]}-{template_id[8:12]}-{template_id[12:16]}-{template_id[16:20]}-{template_id[20:]}"
            )
        script = STORE_SCRIPT.format(template=template_id, count=args.payloads, per_call=STORE_CALL, tag=tag)
        store_started = time.monotonic()
        out = cluster.manage("control", "shell", "-c", script, timeout=600)
        store_s = time.monotonic() - store_started
        if "stored" not in out.stdout:
            raise RuntimeError(f"storing the backlog failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
        print(f"stored {args.payloads} eu payloads in {store_s:.1f} s ({out.stdout.strip().splitlines()[-1]})")
        traffic = UsTraffic(cluster, rate=args.us_rate, tag=tag)
        traffic.start()
        time.sleep(BEFORE_S)
        cluster.start_service("eu")
        eu_up_at = time.time()
        print("eu is up; draining ...")

        def eu_left() -> int:
            [(count,)] = cluster.control_rows(
                f"SELECT COUNT(*) FROM {PAYLOAD_TABLE} WHERE region = 'eu' AND state != 'delivered'"
            )
            return int(count)

        drained = wait_for(lambda: eu_left() == 0, timeout=args.timeout, interval=0.1)
        drained_at = time.time()
        time.sleep(AFTER_S)
        traffic.stop()
        wait_for(
            lambda: (
                cluster.control_rows(
                    f"SELECT COUNT(*) FROM {PAYLOAD_TABLE} WHERE region = 'us' AND state != 'delivered'"
                )
                == [(0,)]
            ),
            timeout=30,
        )
        effects, distinct = region_effects(cluster, "eu", tag)
        return {
            "config": {
                "payloads": args.payloads,
                "quick": args.quick,
                "us_rate": args.us_rate,
                "worker_concurrency": args.concurrency,
                "transport": "http (batch endpoint)",
                "broker": "redis",
                "database": "sqlite (WAL, synchronous=NORMAL)",
                "stored_through": "delivery.store in a control shell (copies of a real event's envelope)",
                "compressed_settings": COMPRESSED_SETTINGS,
                "store_s": round(store_s, 2),
            },
            "drained": drained,
            "drain": drain_figures(cluster, eu_up_at=eu_up_at),
            "us": {
                "sent": len(traffic.sent),
                "answered_200": sum(1 for _, _, status in traffic.sent if status == 200),
                **us_latencies(cluster, eu_up_at=eu_up_at, drained_at=drained_at),
            },
            "eu_effects": {"rows": effects, "distinct_events": distinct},
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "finished_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }


def bar_figures(result: dict[str, Any], *, timeout: float) -> list[dict[str, Any]]:
    """The bar's ``drain.10000`` (bench/summary.py): seconds from eu answering to its last payload delivered."""
    drain, payloads = result["drain"], result["config"]["payloads"]
    notes = [f"{payloads:,} payloads, {payloads / drain['drain_s']:.0f}/s" if drain["drain_s"] else f"{payloads:,}"]
    if payloads != BAR_PAYLOADS:
        notes.append(f"{'--quick' if result['config']['quick'] else '--payloads'}: not the bar's {BAR_PAYLOADS:,}")
    value = drain["drain_s"]
    if not result["drained"]:
        value = max(value or 0.0, timeout)  # at least that long: the wait gave up
        notes.append(f"NOT drained: {drain['eu_not_delivered']} eu payloads left after {timeout:g} s")
    return [{"id": "drain.10000", "value": value, "unit": "s", "note": "; ".join(notes)}]


def report(result: dict[str, Any]) -> None:
    drain, us = result["drain"], result["us"]
    rate = result["config"]["payloads"] / drain["drain_s"] if drain["drain_s"] else None
    print()
    print(f"backlog: {drain['eu_payloads']} eu payloads, {drain['eu_not_delivered']} not delivered")
    print(f"drain (eu up -> last delivered): {drain['drain_s']} s" + (f", {rate:.0f} payloads/s" if rate else ""))
    print(f"  eu up -> first delivery: {drain['first_delivery_after_up_s']} s (the circuit's probe)")
    print(f"  first -> last delivery:  {drain['drain_after_first_delivery_s']} s")
    print(f"us: {us['sent']} sent, {us['answered_200']} answered 200, {us['undelivered']} not delivered")
    print(f"  {'phase':<8} {'count':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, phase in us["phases"].items():
        print(f"  {name:<8} {phase['count']:>6} {phase['p50_ms']!s:>8} {phase['p99_ms']!s:>8} {phase['max_ms']!s:>8}")
    effects = result["eu_effects"]
    print(f"eu effects: {effects['rows']} rows for {effects['distinct_events']} events")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, help=f"the backlog (default {BAR_PAYLOADS:,}; quick 2,000)")
    parser.add_argument("--us-rate", type=float, default=20.0, help="us events per second during the run")
    parser.add_argument("--concurrency", type=int, default=2, help="control worker threads")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the drain")
    parser.add_argument("--quick", action="store_true", help="2,000 payloads: a check that it runs, not the bar")
    args = parser.parse_args()
    if args.payloads is None:
        args.payloads = 2_000 if args.quick else BAR_PAYLOADS
    result = run(args)
    result["bar_figures"] = bar_figures(result, timeout=args.timeout)
    report(result)
    RESULTS_DIR.mkdir(exist_ok=True)
    name = "backlog_drain"
    (RESULTS_DIR / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS_DIR / f"{name}.png")
    print(f"wrote bench/results/{name}.json and .png")
    effects = result["eu_effects"]
    ok = (
        result["drained"] and result["drain"]["eu_not_delivered"] == 0 and effects["rows"] == effects["distinct_events"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
