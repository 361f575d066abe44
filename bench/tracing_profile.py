"""Where the CPU of one traced control acknowledgement goes: sentry-sdk's work, the library's spans, the scrubbing.

Each tracing set-up of ``projects/tracing.py`` (``BENCH_TRACING``) runs in a process of
its own: the control path of ``tracing_overhead.py`` (verify, classify, resolve, commit a
Payload row to SQLite, publish a Celery message) called through the WSGI application,
one signed request at a time, with sentry-sdk's own HTTP transport minus the network.
For every set-up it prints the CPU per request of the request thread and of the other
threads (sentry-sdk's transport worker), then, from a cProfile of the request thread,
the self time per part and the functions that cost most.

    .venv/bin/python bench/tracing_profile.py                      # off, sentry, sentry_unscrubbed
    .venv/bin/python bench/tracing_profile.py --modes sentry --top 40
    BENCH_SENTRY_DJANGO="signals_spans=0" .venv/bin/python bench/tracing_profile.py --modes sentry

``BENCH_SENTRY_DJANGO`` and ``BENCH_SENTRY_OPTIONS`` (``name=value,...``) change
``DjangoIntegration``'s and ``sentry_sdk.init``'s options (see ``projects/tracing.py``).
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

#: Where a function's self time is counted, by the first part of its file's path that matches.
PARTS = (
    ("silo_router/redaction.py", "library: scrubbing (redaction)"),
    ("silo_router/tracing/scrubbing.py", "library: scrubbing (before_send)"),
    ("silo_router/tracing/", "library: spans and tracing"),
    ("sentry_sdk/serializer.py", "sentry-sdk: event serialisation"),
    ("sentry_sdk/integrations/django", "sentry-sdk: Django integration"),
    ("sentry_sdk/integrations/celery", "sentry-sdk: Celery integration"),
    ("sentry_sdk/integrations/", "sentry-sdk: other integrations"),
    ("sentry_sdk/", "sentry-sdk: spans, scopes, client"),
    ("silo_router/", "library: control path"),
    ("django/", "Django"),
    ("kombu/", "Celery publish (kombu, celery)"),
    ("celery/", "Celery publish (kombu, celery)"),
    ("sqlite3", "SQLite"),
)


def part_of(filename: str) -> str:
    """The part a function belongs to, from its file name."""
    for fragment, part in PARTS:
        if fragment in filename:
            return part
    return "other (stdlib, builtins)"


def child(mode: str, requests: int, top: int) -> dict[str, Any]:
    """In this process: warm up, then time and profile ``requests`` requests with tracing ``mode``."""
    import django

    django.setup()
    import control_ack
    import in_process
    from loadgen import BodyFactory
    from projects.wsgi import application
    from slack_sdk.signature import SignatureVerifier
    from tracing_overhead import flush_tracing

    verifier = SignatureVerifier(control_ack.SLACK_SIGNING_SECRET)
    bodies = BodyFactory(f"prof{mode}{int(time.time()):x}")
    numbers = itertools.count()

    def environ() -> dict[str, Any]:
        return in_process.signed_environ(bodies.body(next(numbers)), verifier, fresh_for=60)

    def run(environs: list[dict[str, Any]]) -> None:
        for each in environs:
            in_process.answer_ok(application, each)

    hooks = _timed_hooks()
    run([environ() for _ in range(200)])
    flush_tracing()

    batch = [environ() for _ in range(requests)]
    others_before = _other_threads_cpu()
    began_main, began_process = time.thread_time(), time.process_time()
    run(batch)
    main_ms = (time.thread_time() - began_main) * 1000 / requests
    flush_tracing()
    process_ms = (time.process_time() - began_process) * 1000 / requests
    others_ms = (_other_threads_cpu() - others_before) * 1000 / requests

    hooks_ms = hooks.pop("seconds", 0.0) * 1000 / requests if hooks else 0.0
    hooks.clear()
    batch = [environ() for _ in range(requests)]
    profile = cProfile.Profile()
    profile.enable()
    run(batch)
    profile.disable()
    flush_tracing()
    stats = pstats.Stats(profile)
    by_part: dict[str, float] = defaultdict(float)
    rows = []
    for (filename, line, function), (_, calls, self_time, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_part[part_of(filename)] += self_time
        rows.append((self_time, cumulative, calls, f"{_short(filename)}:{line}({function})"))
    total = sum(by_part.values()) or 1.0
    rows.sort(reverse=True)
    return {
        "mode": mode,
        "requests": requests,
        "cpu_ms_per_request": {
            "process": round(process_ms, 3),
            "request_thread": round(main_ms, 3),
            "other_threads": round(others_ms, 3),
            "scrubbing_hooks": round(hooks_ms, 3),
        },
        "profiled_self_share": {part: round(t / total, 3) for part, t in sorted(by_part.items(), key=lambda x: -x[1])},
        "profiled_ms_per_request": {part: round(t * 1000 / requests, 3) for part, t in by_part.items()},
        "top_self": [
            {"self_ms": round(s * 1000 / requests, 4), "cum_ms": round(c * 1000 / requests, 4), "calls": n, "fn": f}
            for s, c, n, f in rows[:top]
        ],
    }


def _timed_hooks() -> dict[str, float]:
    """Wrap the ``before_send`` hooks sentry-sdk was given so that the time spent in them adds up (wall time,
    on the request thread, where sentry-sdk calls them). Empty when sentry-sdk is off or has none."""
    import sentry_sdk

    client = sentry_sdk.get_client()
    spent: dict[str, float] = {}
    if not client.is_active():
        return spent
    for option in ("before_send", "before_send_transaction"):
        hook = client.options.get(option)
        if hook is None:
            continue

        def timed(event: Any, hint: Any, hook: Any = hook) -> Any:
            began = time.perf_counter()
            try:
                return hook(event, hint)
            finally:
                spent["seconds"] = spent.get("seconds", 0.0) + time.perf_counter() - began

        client.options[option] = timed
        spent.setdefault("seconds", 0.0)
    return spent


def _other_threads_cpu() -> float:
    """CPU seconds of every thread of this process but the current one (sentry-sdk's transport worker)."""
    total = 0.0
    for thread in threading.enumerate():
        if thread is threading.current_thread() or thread.ident is None:
            continue
        try:
            total += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        except (OSError, AttributeError):
            continue
    return total


def _short(filename: str) -> str:
    if "site-packages/" in filename:
        return filename.split("site-packages/", 1)[1]
    if "/silo_router/" in filename:
        return "silo_router/" + filename.split("/silo_router/", 1)[1]
    return filename.split("/lib/python3", 1)[-1]


def profile_mode(mode: str, requests: int, top: int, var_dir: Path) -> dict[str, Any]:
    """One child process for ``mode``, on a fresh database of its own."""
    from tracing_overhead import silo_db, traced

    target = traced(mode, mode)
    silo_db("prepare", var_dir, target)
    env = {
        **os.environ,
        **target.env,
        "DJANGO_SETTINGS_MODULE": target.settings,
        "BENCH_VAR_DIR": str(var_dir / target.name),
    }
    env.pop("SENTRY_DSN", None)
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", mode,
         "--requests", str(requests), "--top", str(top)],
        cwd=BENCH_DIR, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the {mode} profile failed:\n{done.stdout}\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def report(results: Sequence[dict[str, Any]]) -> None:
    base = next((r for r in results if r["mode"] == "off"), None)
    for result in results:
        cpu = result["cpu_ms_per_request"]
        added = "" if base is None else f" ({cpu['process'] - base['cpu_ms_per_request']['process']:+.2f} ms vs off)"
        print(f"\n== {result['mode']}: {cpu['process']:.2f} ms CPU per request{added}: request thread "
              f"{cpu['request_thread']:.2f} (of which the before_send hooks {cpu['scrubbing_hooks']:.2f}), "
              f"other threads (transport) {cpu['other_threads']:.2f}")  # fmt: skip
        print("   profiled self time per request, by part (cProfile inflates it evenly):")
        for part, ms in sorted(result["profiled_ms_per_request"].items(), key=lambda x: -x[1]):
            print(f"   {ms:8.3f} ms  {result['profiled_self_share'][part]:6.1%}  {part}")
        print("   top functions by self time (ms per request; cumulative; calls over the batch):")
        for row in result["top_self"]:
            print(f"   {row['self_ms']:8.4f} {row['cum_ms']:8.4f} {row['calls']:>8}  {row['fn']}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--modes", default="off,sentry,sentry_unscrubbed", help="comma-separated BENCH_TRACING modes")
    parser.add_argument("--requests", type=int, default=500, help="requests timed, then as many profiled")
    parser.add_argument("--top", type=int, default=25, help="functions listed per mode")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.requests, args.top)))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="silo-router-tracing-profile-") as var_dir:
        for mode in (m.strip() for m in args.modes.split(",") if m.strip()):
            results.append(profile_mode(mode, args.requests, args.top, Path(var_dir)))
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
