"""Where the time of one acknowledged block_actions request goes, stage by stage (one thread, no HTTP).

Runs django-silo-router's control path in this process against the same project as
``control_ack.py`` (bench/projects/settings_silo: SQLite in WAL mode, kombu's
filesystem broker), first whole through the WSGI application, then each stage alone,
and prints the time per call (the best of five batches). There is no concurrency here: the
cost of SQLite's single writer lock under load shows only in ``control_ack.py``.

    .venv/bin/python bench/control_stages.py [--iterations 2000]
    .venv/bin/python bench/control_stages.py --quick      # 300 iterations: a check that it runs

Writes bench/results/control_stages.json.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import in_process  # noqa: E402
from loadgen import BodyFactory  # noqa: E402

SLACK_SIGNING_SECRET = "bench-only-slack-signing-secret-0123456789"


BATCHES = 5

#: A message event as the Events API sends it, for the JSON side of the parser.
EVENT_CALLBACK: dict[str, Any] = {
    "token": "legacy-unused",
    "team_id": "T0US00001",
    "api_app_id": "A0APP0001",
    "event": {
        "type": "message",
        "user": "U0USER001",
        "text": "Deploy [prod] {canary} finished: see <https://example.com/runs/1|run 1>",
        "ts": "1700000000.000100",
        "channel": "C0CHAN001",
        "event_ts": "1700000000.000100",
        "channel_type": "channel",
        "blocks": [
            {
                "type": "rich_text",
                "block_id": "b1",
                "elements": [
                    {"type": "rich_text_section", "elements": [{"type": "text", "text": "Deploy [prod] finished"}]}
                ],
            }
        ],
    },
    "type": "event_callback",
    "event_id": "Ev0EVENT001",
    "event_time": 1700000000,
    "authorizations": [
        {
            "enterprise_id": None,
            "team_id": "T0US00001",
            "user_id": "U0BOT0001",
            "is_bot": True,
            "is_enterprise_install": False,
        }
    ],
    "is_ext_shared_channel": False,
    "event_context": "4-eyJldCI6Im1lc3NhZ2UiLCJ0aWQiOiJUMFVTMDAwMDEifQ",
}


def timed(fn: Callable[[], Any], iterations: int) -> tuple[float, float]:
    """Microseconds per call, wall clock and CPU: the least disturbed of ``BATCHES`` batches, after a warm-up.

    On a shared machine the other processes only ever add time, so the best batch is
    the closest to the cost of the code itself (as ``timeit`` recommends). The CPU time
    is the whole process's (``time.process_time``), so work a call hands to another thread
    of this process (the waker's publish) counts; waiting on the disk does not.
    """
    for _ in range(min(200, iterations)):
        fn()
    per_batch = max(1, iterations // BATCHES)
    best = (float("inf"), float("inf"))
    for _ in range(BATCHES):
        began, began_cpu = time.perf_counter(), time.process_time()
        for _ in range(per_batch):
            fn()
        batch = ((time.perf_counter() - began) / per_batch, (time.process_time() - began_cpu) / per_batch)
        best = min(best, batch)
    return best[0] * 1e6, best[1] * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--iterations", type=int, help="calls per stage, in 5 batches (default 2000, quick 300)")
    parser.add_argument("--quick", action="store_true", help="300 iterations: a check that it runs")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args()
    if args.iterations is None:
        args.iterations = 300 if args.quick else 2000

    with tempfile.TemporaryDirectory(prefix="silo-router-stages-") as var_dir:
        os.environ["BENCH_VAR_DIR"] = var_dir
        os.environ["BENCH_SLACK_SIGNING_SECRET"] = SLACK_SIGNING_SECRET
        os.environ["DJANGO_SETTINGS_MODULE"] = "projects.settings_silo"
        subprocess.run(
            [sys.executable, "-m", "projects.silo_db", "prepare"], cwd=BENCH_DIR, check=True, capture_output=True
        )
        stages = measure(args.iterations)

    width = max(len(name) for name in stages)
    print(f"{'stage (one thread, in-process)':<{width}}  microseconds per call: wall    cpu")
    for name, (wall, cpu) in stages.items():
        print(f"{name:<{width}}  {wall:31.1f} {cpu:6.1f}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "control_stages.json").write_text(
        json.dumps(
            {
                "iterations": args.iterations,
                "quick": args.quick,
                "microseconds": {k: round(wall, 1) for k, (wall, _) in stages.items()},
                "cpu_microseconds": {k: round(cpu, 1) for k, (_, cpu) in stages.items()},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\n  wrote {args.out / 'control_stages.json'}")
    return 0


def measure(iterations: int) -> dict[str, tuple[float, float]]:
    import django

    django.setup()
    from projects.wsgi import application
    from slack_sdk.signature import SignatureVerifier

    from silo_router import tracing
    from silo_router.control import control_responses, delivery, pipeline
    from silo_router.control.deadline import Deadline
    from silo_router.control.models import Payload
    from silo_router.control.routing import Strategy, strategy_for
    from silo_router.providers.registry import get_provider

    verifier = SignatureVerifier(SLACK_SIGNING_SECRET)
    bodies = BodyFactory("stages")
    counter = itertools.count()

    # Pre-sign every request of the WSGI run (signing is the client's cost, not ours).
    total = min(200, iterations) + max(1, iterations // BATCHES) * BATCHES
    prepared = []
    for _ in range(total):
        body = bodies.body(next(counter))
        prepared.append(in_process.signed_environ(body, verifier))  # fresh for the whole run
    queue = iter(prepared)

    def through_wsgi() -> None:
        in_process.answer_ok(application, next(queue))

    def healthz() -> None:
        environ = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/healthz",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(b""),
            "HTTP_HOST": "127.0.0.1:8000",
        }
        in_process.answer(application, environ)

    stages: dict[str, tuple[float, float]] = {}
    stages["Django request cycle alone (GET /healthz, same project)"] = timed(healthz, iterations)
    before = Payload.objects.count()
    stages["whole request through the WSGI app"] = timed(through_wsgi, iterations)
    if Payload.objects.count() - before != total:
        raise RuntimeError("the WSGI run did not store one payload per request")

    provider = get_provider("slack")
    body = bodies.body(next(counter))
    headers = in_process.signed_headers(body, verifier)
    inbound = provider.parse(body=body, headers=headers)
    stages["verify signature"] = timed(lambda: provider.verify(body=body, headers=headers), iterations)
    stages["parse + classify"] = timed(lambda: provider.parse(body=body, headers=headers), iterations)
    event_body = json.dumps(EVENT_CALLBACK).encode()
    event_headers = {**headers, "content-type": "application/json"}
    stages["parse + classify (Events API JSON)"] = timed(
        lambda: provider.parse(body=event_body, headers=event_headers), iterations
    )
    stages["routing table + control-response check"] = timed(
        lambda: (strategy_for(inbound), control_responses.select(inbound)), iterations
    )
    resolver = pipeline.resolver()
    stages["resolve (Integration -> organizations)"] = timed(lambda: resolver.resolve(inbound), iterations)
    resolution = resolver.resolve(inbound)
    arrival = pipeline.Arrival(
        provider=provider, inbound=inbound, body=body, headers=headers, deadline=Deadline.start(sent_at=None)
    )
    stages["build envelope"] = timed(
        lambda: pipeline.build_envelopes(arrival, resolution, strategy=Strategy.ASYNC, answered=None), iterations
    )
    envelope = pipeline.build_envelopes(arrival, resolution, strategy=Strategy.ASYNC, answered=None)[0]
    stages["serialize envelope (canonical JSON, signed bytes)"] = timed(envelope.to_json, iterations)
    authorized = pipeline.authorize(provider, inbound)
    if authorized.authorization is not None:
        stages["installation facts (what the envelope carries)"] = timed(authorized.authorization.facts, iterations)
    fresh_ids = (f"{n:032x}" for n in itertools.count(1))
    stages["store payload (SQLite commit)"] = timed(
        lambda: delivery.store([envelope.replace(id=next(fresh_ids))], kind_type=inbound.type), iterations
    )
    stages["enqueue (Celery publish, filesystem broker)"] = timed(
        lambda: delivery.enqueue([("0" * 32, envelope.region)], mark=False), iterations
    )

    def spans() -> None:
        with tracing.flow("control", "request", "slack request") as flow:
            for stage in ("verify", "classify", "resolve", "store"):
                with tracing.stage("control", stage, "slack"):
                    pass
            flow.set(kind=inbound.kind)
            tracing.propagation_headers()
            flow.set(ack_ms=1.0, status=200)

    stages["tracing: a flow, 4 stages, propagation (no back end active)"] = timed(spans, iterations)
    stages["tracing: one check (no back end active)"] = timed(tracing.active, iterations)
    return stages


if __name__ == "__main__":
    sys.exit(main())
