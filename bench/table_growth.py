"""Flat as the tables grow: the ack, a claim, the sweeper and a retention batch with 100 and with 1,000,000 payloads.

For each storage (the embedded SQLite default: a file in WAL mode with synchronous=FULL,
as bench/projects/settings_silo.py; PostgreSQL: a throwaway cluster this script starts,
with tests/servers.py) and each table size, a fresh database is migrated and bulk-loaded
(executemany on SQLite, COPY on PostgreSQL): payloads spread over 30 days (99% delivered,
the rest failed and unroutable; a small active set of pending and in-flight rows, since a
healthy control's backlog does not grow with its history; one attempt row per ten
payloads of the last 14 days, as the sweeper keeps them) and installations (Integration +
SlackInstallation + OrganizationMapping over three regions; the same number at both
sizes, so a ratio is the payload table's alone). Then, in this process:

- ack: signed block_actions requests through the WSGI application (the control path of
  bench/control_stages.py: verify, classify, resolve a random installation, commit the
  row, publish on kombu's filesystem broker), p50/p90/p99 of N;
- claim: ``delivery.claim`` of a fresh due row; the sweeper with nothing due
  (``delivery.sweep``); the batch-claim select (``state='pending' AND region=? AND due
  ORDER BY created_at LIMIT 100``);
- retention: one ``retention.delete_batch`` of PRUNE_BATCH expired delivered rows (with
  their attempts) and one ``drop_bodies_batch``.

It prints the plan of every statement those functions run (EXPLAIN QUERY PLAN / EXPLAIN),
and writes bench/results/table_growth.json and table_growth.md (figures and plans).

    .venv/bin/python bench/table_growth.py            # 100 and 1,000,000 rows, SQLite and PostgreSQL
    .venv/bin/python bench/table_growth.py --quick    # 100 and 100,000 rows, fewer requests
    .venv/bin/python bench/table_growth.py --storage sqlite --rows 1000000

Each (storage, size) runs in a subprocess of its own (``--case``), so every Django setup is fresh.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(ROOT))

from openloop import percentile  # noqa: E402

SLACK_SIGNING_SECRET = "bench-only-slack-signing-secret-0123456789"
REGIONS = ("us", "eu", "ap")
SMALL = 100
DAYS = 30
#: The active set, the same at every size (see the module docstring).
PENDING_NOT_DUE = 50
IN_FLIGHT = 10
FAILED_SHARE = 0.006
UNROUTABLE_SHARE = 0.004
ATTEMPT_EVERY = 10
#: Attempts older than ATTEMPT_RETENTION (14 days) the sweeper has already pruned (it deletes 1000 a run).
ATTEMPT_DAYS = 14


# --------------------------------------------------------------------------- the parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="100 and 100,000 rows, fewer requests")
    parser.add_argument("--rows", type=int, default=None, help="the large table's payload rows")
    parser.add_argument("--installations", type=int, default=10_000, help="installations of the large case")
    parser.add_argument("--requests", type=int, default=None, help="acks measured per case")
    parser.add_argument("--storage", default="sqlite,postgres", help="sqlite, postgres or both")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return run_case(json.loads(args.case))

    large = args.rows or (100_000 if args.quick else 1_000_000)
    requests = args.requests or (300 if args.quick else 1000)
    sizes = [(SMALL, args.installations), (large, args.installations)]
    results: list[dict[str, Any]] = []
    for storage in [s.strip() for s in args.storage.split(",") if s.strip()]:
        with database_server(storage) as database:
            for rows, installations in sizes:
                case = {"storage": storage, "rows": rows, "installations": installations, "requests": requests}
                case["database"] = database
                print(f"\n== {storage}: {rows:,} payloads, {installations:,} installations", flush=True)
                out = subprocess.run(
                    [sys.executable, __file__, "--case", json.dumps(case)],
                    cwd=BENCH_DIR,
                    check=True,
                    stdout=subprocess.PIPE,
                    text=True,
                ).stdout
                result = json.loads(out.strip().splitlines()[-1])
                print_case(result)
                results.append(result)
    write_results(results, args.out, quick=args.quick)
    return 0


@contextlib.contextmanager
def database_server(storage: str) -> Iterator[dict[str, Any] | None]:
    """PostgreSQL: a throwaway cluster (tests/servers.py); SQLite: nothing to start."""
    if storage == "sqlite":
        yield None
        return
    if storage != "postgres":
        raise SystemExit(f"unknown storage {storage!r}: use sqlite or postgres")
    import pytest

    from tests.servers import PostgresServer

    try:
        server = PostgresServer().start()
    except pytest.skip.Exception as exc:
        raise SystemExit(f"PostgreSQL is not installed ({exc}): run tools/install-servers.sh") from exc
    try:
        yield server.database_settings(name="postgres")
    finally:
        server.cleanup()


def ratio(large: float, small: float) -> str:
    return f"{large / small:.2f}x" if small else "-"


FIGURES = (
    ("ack_p50_ms", "ack p50 (ms)"),
    ("ack_p99_ms", "ack p99 (ms)"),
    ("claim_p50_ms", "claim p50 (ms)"),
    ("sweep_idle_p50_ms", "sweep, nothing due, p50 (ms)"),
    ("batch_select_p50_ms", "batch-claim select p50 (ms)"),
    ("retention_batch_ms", "retention batch (ms)"),
    ("body_batch_ms", "body-drop batch (ms)"),
)


def print_case(result: dict[str, Any]) -> None:
    for key, label in FIGURES:
        print(f"  {label:<32} {result['figures'][key]:9.3f}")
    print(f"  (loaded in {result['load_seconds']:.0f} s; retention batch removed {result['retention_rows']} rows)")


#: The bar's table size (bench/summary.py's ``growth.*``: large over small within 1.2x), and its figures.
BAR_ROWS = 1_000_000
BAR_FIGURES = (("ack_p50", "ack_p50_ms"), ("claim", "claim_p50_ms"))


def bar_figures(results: list[dict[str, Any]], *, quick: bool) -> list[dict[str, Any]]:
    """``growth.<figure>.<storage>``: the figure with the large table over the figure with SMALL rows."""
    figures = []
    for storage in dict.fromkeys(r["storage"] for r in results):
        pair = sorted((r for r in results if r["storage"] == storage), key=lambda r: r["rows"])
        small, large = pair[0], pair[-1]
        for name, key in BAR_FIGURES:
            note = f"{large['figures'][key]:.3f} ms with {large['rows']:,} rows"
            note += f", {small['figures'][key]:.3f} with {small['rows']:,}"
            if large["rows"] != BAR_ROWS:
                note += f"; {'--quick' if quick else '--rows'}: not the bar's {BAR_ROWS:,}"
            value = (
                round(large["figures"][key] / small["figures"][key], 3)
                if len(pair) > 1 and small["figures"][key]
                else None
            )
            figures.append({"id": f"growth.{name}.{storage}", "value": value, "unit": "x", "note": note})
    return figures


def write_results(results: list[dict[str, Any]], out: Path, *, quick: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "date": datetime.date.today().isoformat(),
        "quick": quick,
        "cases": results,
        "bar_figures": bar_figures(results, quick=quick),
    }
    (out / "table_growth.json").write_text(json.dumps(document, indent=2) + "\n")
    lines = ["| storage | payload rows | installations | " + " | ".join(label for _, label in FIGURES) + " |"]
    lines.append("|" + " --- |" * (3 + len(FIGURES)))
    for r in results:
        cells = [f"{r['figures'][key]:.3f}" for key, _ in FIGURES]
        lines.append(f"| {r['storage']} | {r['rows']:,} | {r['installations']:,} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Large over small (the bar: ack p50 and claim within 1.20x):")
    lines.append("")
    lines.append("| storage | " + " | ".join(label for _, label in FIGURES) + " |")
    lines.append("|" + " --- |" * (1 + len(FIGURES)))
    for storage in dict.fromkeys(r["storage"] for r in results):
        pair = sorted((r for r in results if r["storage"] == storage), key=lambda r: r["rows"])
        if len(pair) == 2:
            small, large = pair
            cells = [ratio(large["figures"][k], small["figures"][k]) for k, _ in FIGURES]
            lines.append(f"| {storage} | " + " | ".join(cells) + " |")
    for r in results:
        if r["rows"] == SMALL:
            continue
        lines += ["", f"#### Query plans: {r['storage']}, {r['rows']:,} payloads", ""]
        for name, plan in r["plans"].items():
            lines += [f"`{name}`", "", "```", plan["sql"], "--", *plan["plan"], "```", ""]
    (out / "table_growth.md").write_text("\n".join(lines) + "\n")
    print(f"\n  wrote {out / 'table_growth.json'} and {out / 'table_growth.md'}")


# --------------------------------------------------------------------------- one case


def run_case(case: dict[str, Any]) -> int:
    with tempfile.TemporaryDirectory(prefix="silo-router-growth-") as var_dir:
        configure(case, Path(var_dir))
        import django

        django.setup()
        from django.core.management import call_command

        with contextlib.redirect_stdout(io.StringIO()):
            call_command("migrate", verbosity=0, interactive=False)
        began = time.monotonic()
        teams = load_installations(case["installations"])
        load_payloads(case["rows"])
        analyze()
        load_seconds = time.monotonic() - began
        log(f"loaded in {load_seconds:.0f} s")
        figures, retention_rows = measure(case, teams)
        plans = explain_all()
    print(
        json.dumps(
            {
                **{k: case[k] for k in ("storage", "rows", "installations", "requests")},
                "load_seconds": round(load_seconds, 1),
                "figures": {k: round(v, 4) for k, v in figures.items()},
                "retention_rows": retention_rows,
                "plans": plans,
            }
        )
    )
    return 0


def log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def configure(case: dict[str, Any], var_dir: Path) -> None:
    """The settings of bench/projects/settings_silo, on the case's database."""
    os.environ["BENCH_VAR_DIR"] = str(var_dir)
    os.environ["BENCH_SLACK_SIGNING_SECRET"] = SLACK_SIGNING_SECRET
    from django.conf import settings

    import projects.settings_silo as silo

    values = {name: getattr(silo, name) for name in dir(silo) if name.isupper()}
    values["SILO_ROUTER"] = {
        **silo.SILO_ROUTER,
        "REGIONS": {region: {"TRANSPORT": "celery"} for region in REGIONS},
    }
    if case["database"] is not None:
        database = dict(case["database"])
        database["NAME"] = f"growth_{case['rows']}"
        _create_database(case["database"], database["NAME"])
        values["DATABASES"] = {"default": {**database, "CONN_MAX_AGE": None}}
    settings.configure(**values)


def _create_database(server: dict[str, Any], name: str) -> None:
    import psycopg

    with psycopg.connect(
        host=server["HOST"], port=server["PORT"], user=server["USER"], dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def team_id(n: int) -> str:
    return f"T{n:08d}"


def load_installations(count: int) -> list[str]:
    """``count`` workspaces, each with its organization in one of the regions and a Slack installation."""
    from django.db import transaction
    from django.utils import timezone

    from silo_router.control.models import Integration, OrganizationMapping, SlackInstallation

    now = timezone.now()
    with transaction.atomic():
        orgs = OrganizationMapping.objects.bulk_create(
            [
                OrganizationMapping(organization_id=str(1000 + n), slug=f"org-{n}", region=REGIONS[n % len(REGIONS)])
                for n in range(count)
            ],
            batch_size=2000,
        )
        integrations = Integration.objects.bulk_create(
            [Integration(provider="slack", external_id=team_id(n), name=f"workspace {n}") for n in range(count)],
            batch_size=2000,
        )
        if any(i.pk is None for i in integrations):  # SQLite before RETURNING support
            integrations = list(Integration.objects.order_by("id"))
        through = Integration.organizations.through
        through.objects.bulk_create(
            [
                through(integration_id=i.pk, organizationmapping_id=o.pk)
                for i, o in zip(integrations, orgs, strict=True)
            ],
            batch_size=2000,
        )
        SlackInstallation.objects.bulk_create(
            [
                SlackInstallation(integration_id=i.pk, team_name=f"workspace {n}", bot_user_id="U0BOT", installed_at=now)
                for n, i in enumerate(integrations)
            ],
            batch_size=2000,
        )
    return [team_id(n) for n in range(count)]


def sample_envelope() -> str:
    """A real stored envelope of a block_actions click (its ids are replaced per row)."""
    from loadgen import BodyFactory

    from silo_router.envelope import Envelope

    body = BodyFactory("growth").body(1).decode()
    return (
        Envelope(
            id="ENVELOPEID",
            idempotency_key="IDEMPOTENCYKEY",
            provider="slack",
            kind="block_actions:approve",
            region="us",
            body=body,
            headers={"content-type": "application/x-www-form-urlencoded", "x-slack-signature": "v0=" + "0" * 64},
            strategy="async",
            organization_ids=("1000",),
            integration_id="1",
        )
        .to_json()
        .decode()
    )


def payload_rows(count: int) -> Iterator[tuple[Any, ...]]:
    """Rows in the table's column order (see ``COLUMNS``), oldest first."""
    from django.utils import timezone

    rng = random.Random(42)
    now = timezone.now()
    template = sample_envelope()
    span = DAYS * 86400.0
    active = min(PENDING_NOT_DUE + IN_FLIGHT, count)
    history = count - active
    for n in range(count):
        pk = uuid.UUID(int=rng.getrandbits(128), version=4)
        region = REGIONS[n % len(REGIONS)]
        if n < history:
            created = now - datetime.timedelta(seconds=span * (1 - n / max(history, 1)))
        else:
            created = now - datetime.timedelta(seconds=rng.uniform(1, 20))
        delivered_at = next_attempt = enqueued = last_attempt = lease_until = None
        lease_owner = ""
        attempts = 1
        draw = rng.random()
        if n >= history + PENDING_NOT_DUE:
            state, lease_owner = "in_flight", "bench:worker"
            last_attempt, lease_until = created, now + datetime.timedelta(days=1)  # live through the run
        elif n >= history:
            state, attempts, enqueued = "pending", 0, now  # just published: nothing is due
        elif draw < UNROUTABLE_SHARE:
            state, region, attempts = "unroutable", "", 0
        elif draw < UNROUTABLE_SHARE + FAILED_SHARE:
            state, attempts, last_attempt = "failed", 12, created + datetime.timedelta(hours=3)
        else:
            state, last_attempt = "delivered", created + datetime.timedelta(milliseconds=20)
            delivered_at = created + datetime.timedelta(milliseconds=45)
        key = f"slack:{pk.hex}"
        envelope = template.replace("ENVELOPEID", str(pk)).replace("IDEMPOTENCYKEY", key)
        yield (
            pk, key, "slack", "block_actions:approve", region, "async", envelope, state, attempts, 0, "", "",
            created, created, next_attempt, enqueued, last_attempt, delivered_at, lease_owner, lease_until,
            "", None, "", "",
        )  # fmt: skip


COLUMNS = (
    "id", "idempotency_key", "provider", "kind", "region", "strategy", "envelope", "state", "attempts", "replays",
    "last_error", "ordering_key", "created_at", "updated_at", "next_attempt_at", "enqueued_at", "last_attempt_at",
    "delivered_at", "lease_owner", "lease_until", "loading_view", "loading_check_at", "loading_view_hash", "trace_id",
)  # fmt: skip
ATTEMPT_COLUMNS = ("id", "payload_id", "number", "replay", "started_at", "duration_ms", "outcome", "error", "receipt",
                   "confirmed_at", "trace_id", "span_id")  # fmt: skip


def load_payloads(count: int) -> None:
    """Bulk-load ``count`` payloads and one attempt per ``ATTEMPT_EVERY`` of them."""
    from django.db import connection, transaction

    from silo_router.control.models import Payload, PayloadAttempt

    table, attempts_table = Payload._meta.db_table, PayloadAttempt._meta.db_table
    chunk: list[tuple[Any, ...]] = []
    attempt_chunk: list[tuple[Any, ...]] = []
    began = time.monotonic()

    from django.utils import timezone

    attempts_since = timezone.now() - datetime.timedelta(days=ATTEMPT_DAYS)

    def attempt_of(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return (uuid.uuid4(), row[0], 1, 0, row[12], 20.0, "delivered", "", "handled", None, "", "")

    def has_attempt(n: int, row: tuple[Any, ...]) -> bool:
        return n % ATTEMPT_EVERY == 0 and row[7] != "unroutable" and row[12] >= attempts_since

    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            raw = cursor.cursor  # psycopg's own cursor, for COPY
            with raw.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for n, row in enumerate(payload_rows(count)):
                    copy.write_row(row)
                    if has_attempt(n, row):
                        attempt_chunk.append(attempt_of(row))
            with raw.copy(f"COPY {attempts_table} ({', '.join(ATTEMPT_COLUMNS)}) FROM STDIN") as copy:
                for attempt in attempt_chunk:
                    copy.write_row(attempt)
        log(f"{count:,} payloads copied in {time.monotonic() - began:.0f} s")
        return

    ops = connection.ops
    insert = f"INSERT INTO {table} ({', '.join(COLUMNS)}) VALUES ({', '.join('%s' for _ in COLUMNS)})"
    insert_attempt = (
        f"INSERT INTO {attempts_table} ({', '.join(ATTEMPT_COLUMNS)}) "
        f"VALUES ({', '.join('%s' for _ in ATTEMPT_COLUMNS)})"
    )
    time_columns = {i for i, c in enumerate(COLUMNS) if c.endswith("_at") or c == "lease_until"}

    def adapt(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            ops.adapt_datetimefield_value(v) if i in time_columns else (v.hex if isinstance(v, uuid.UUID) else v)
            for i, v in enumerate(row)
        )

    def adapt_attempt(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return (row[0].hex, row[1].hex, *row[2:4], ops.adapt_datetimefield_value(row[4]), *row[5:])

    def flush() -> None:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(insert, [adapt(r) for r in chunk])
            if attempt_chunk:
                cursor.executemany(insert_attempt, [adapt_attempt(a) for a in attempt_chunk])
        chunk.clear()
        attempt_chunk.clear()

    for n, row in enumerate(payload_rows(count)):
        chunk.append(row)
        if has_attempt(n, row):
            attempt_chunk.append(attempt_of(row))
        if len(chunk) >= 20_000:
            flush()
            if n % 200_000 < 20_000:
                log(f"{n + 1:,} payloads in {time.monotonic() - began:.0f} s")
    if chunk:
        flush()
    log(f"{count:,} payloads inserted in {time.monotonic() - began:.0f} s")


def analyze() -> None:
    """Statistics for the planner, as a deployed database has them (autovacuum; SQLite's ANALYZE)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM")  # index-only scans need the visibility map, as autovacuum keeps it


def each_ms(fn: Callable[[], Any], n: int, *, warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        began = time.perf_counter()
        fn()
        out.append((time.perf_counter() - began) * 1000)
    return out


def measure(case: dict[str, Any], teams: list[str]) -> tuple[dict[str, float], int]:
    from django.utils import timezone

    from silo_router.control import delivery, retention
    from silo_router.control.models import Payload

    figures: dict[str, float] = {}
    acks = ack_timings(case["requests"], teams)
    figures["ack_p50_ms"] = statistics.median(acks)
    figures["ack_p90_ms"] = percentile(acks, 90) or math.nan
    figures["ack_p99_ms"] = percentile(acks, 99) or math.nan
    log(f"ack p50 {figures['ack_p50_ms']:.3f} ms")

    fresh = [str(pk) for pk in Payload.objects.filter(state="pending", enqueued_at__isnull=False)
             .order_by("-created_at").values_list("pk", flat=True)[: case["requests"] + 20]]  # fmt: skip
    Payload.objects.filter(pk__in=fresh).update(enqueued_at=None)  # due now
    queue = iter(fresh)
    claims = each_ms(lambda: delivery.claim(next(queue)), min(case["requests"], len(fresh) - 20))
    figures["claim_p50_ms"] = statistics.median(claims)
    # Leave nothing due for the sweeper: what was claimed is in flight with a live lease.
    Payload.objects.filter(pk__in=fresh, state="pending").update(enqueued_at=timezone.now())

    original_enqueue = delivery.enqueue
    delivery.enqueue = lambda targets, **kwargs: len(list(targets))  # nothing is due; never publish
    try:
        figures["sweep_idle_p50_ms"] = statistics.median(each_ms(delivery.sweep, 50, warmup=5))
    finally:
        delivery.enqueue = original_enqueue
    figures["batch_select_p50_ms"] = statistics.median(each_ms(lambda: list(batch_claim_select("us")), 200))

    cutoff = retention.cutoffs()[retention.DELIVERED]
    assert cutoff is not None
    removed = 0
    timings = []
    for _ in range(5):
        began = time.perf_counter()
        done, _attempts = retention.delete_batch(retention.DELIVERED, cutoff, limit=1000)
        timings.append((time.perf_counter() - began) * 1000)
        removed += done
    figures["retention_batch_ms"] = statistics.median(timings)
    body_cutoff = timezone.now() - datetime.timedelta(days=1)
    timings = []
    for _ in range(5):
        began = time.perf_counter()
        retention.drop_bodies_batch(body_cutoff, limit=1000)
        timings.append((time.perf_counter() - began) * 1000)
    figures["body_batch_ms"] = statistics.median(timings)
    return figures, removed


def batch_claim_select(region: str) -> Any:
    """The select a batch claim makes: due pending rows of one region, oldest first."""
    from django.db.models import Q
    from django.utils import timezone

    from silo_router.control.models import Payload

    return (
        Payload.objects.filter(state="pending", region=region)
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now()))
        .order_by("created_at")
        .values_list("pk", flat=True)[:100]
    )


def ack_timings(count: int, teams: list[str]) -> list[float]:
    """Milliseconds per signed block_actions request through the WSGI application, each for a random team."""
    import in_process
    from loadgen import TEAM_ID, BodyFactory
    from projects.wsgi import application
    from slack_sdk.signature import SignatureVerifier

    verifier = SignatureVerifier(SLACK_SIGNING_SECRET)
    bodies = BodyFactory("growth")
    rng = random.Random(7)
    prepared = []
    warmup = 50
    for n in range(count + warmup):
        body = bodies.body(n).replace(TEAM_ID.encode(), rng.choice(teams).encode())
        prepared.append(in_process.signed_environ(body, verifier))

    for request in prepared[:warmup]:
        in_process.answer_ok(application, request)
    out = []
    for request in prepared[warmup:]:
        began = time.perf_counter()
        in_process.answer_ok(application, request)
        out.append((time.perf_counter() - began) * 1000)
    return out


# --------------------------------------------------------------------------- plans


@contextlib.contextmanager
def captured() -> Iterator[list[tuple[str, Any]]]:
    from django.db import connection

    seen: list[tuple[str, Any]] = []

    def record(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if not many and sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield seen


def explain(sql: str, params: Any) -> list[str]:
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            return [str(row[-1]) for row in cursor.fetchall()]
        cursor.execute("EXPLAIN " + sql, params)
        return [_short(str(row[0])) for row in cursor.fetchall()]


def _short(line: str, limit: int = 240) -> str:
    """A plan line, without the thousand ids a batch names."""
    return line if len(line) <= limit else line[:limit] + " ..."


def explain_all() -> dict[str, dict[str, Any]]:
    """The plan of each statement the measured functions run (the first of each kind)."""
    from django.utils import timezone

    from silo_router.control import delivery, followups, retention
    from silo_router.control.models import Payload
    from silo_router.control.slack.authorizer import InstallationAuthorizer
    from silo_router.control.status import region_status
    from silo_router.providers.base import RoutingKeys

    now = timezone.now()
    pending = str(Payload.objects.filter(state="pending").values_list("pk", flat=True).first())
    Payload.objects.filter(pk=pending).update(enqueued_at=None)
    steps: dict[str, Callable[[], Any]] = {
        "claim (delivery.claim)": lambda: delivery.claim(pending),
        "claim a batch (delivery.claim_batch, region us)": lambda: delivery.claim_batch(region="us", limit=100),
        "expire leases (sweep)": lambda: delivery.expire_leases(now=now),
        "sweep: due rows and regions": lambda: sweep_without_publishing(delivery),
        "loading checks due (sweep)": lambda: followups.run_due_checks(now=now),
        "retention: expired delivered rows": lambda: retention.delete_batch(
            retention.DELIVERED, retention.cutoffs()[retention.DELIVERED], limit=1000  # type: ignore[arg-type]
        ),
        "retention: expired failed rows": lambda: retention.delete_batch(
            retention.FAILED, retention.cutoffs()[retention.FAILED], limit=1000  # type: ignore[arg-type]
        ),
        "retention: bodies to drop": lambda: retention.drop_bodies_batch(now - datetime.timedelta(days=1), limit=10),
        "admin region status": region_status,
        "authorizer lookup": lambda: InstallationAuthorizer._lookup(RoutingKeys(team_id=team_id(7))),
    }
    plans: dict[str, dict[str, Any]] = {}
    for name, step in steps.items():
        with captured() as seen:
            step()
        for n, (sql, params) in enumerate(s for s in seen if "EXPLAIN" not in s[0]):
            plans[f"{name} [{n + 1}]"] = {"sql": sql if len(sql) < 600 else sql[:600] + " ...", "plan": explain(sql, params)}
    sql, params = batch_claim_select("us").query.sql_with_params()
    plans["batch claim select"] = {"sql": sql, "plan": explain(sql, params)}
    from silo_router.control.models import Integration

    from django.db.models import Q

    lookup = Integration.objects.filter(Q(external_id=team_id(7)) | Q(external_id="E0000001"), provider="slack")
    sql, params = lookup.query.sql_with_params()
    plans["resolver: installation by team or enterprise"] = {"sql": sql, "plan": explain(sql, params)}
    return plans


def sweep_without_publishing(delivery: Any) -> None:
    original = delivery.enqueue
    delivery.enqueue = lambda targets, **kwargs: len(list(targets))
    try:
        delivery._sweep(regions=None, expire=False)
    finally:
        delivery.enqueue = original


if __name__ == "__main__":
    sys.exit(main())
