"""What the benchmarks that run the example project as real processes share.

bench/delivery_faults.py, bench/backlog_drain.py and bench/flow_latency.py start
``example_project.cluster.Cluster`` (fake Slack, control, regions us and eu, control's
Celery worker and beat) on a throwaway ``redis-server`` broker (tests/servers.py) with
``running``, read the silos' SQLite databases with ``query`` and ``db_time``, and record
``versions`` and ``commit`` beside their figures.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
if str(REPO_DIR) not in sys.path:
    sys.path.insert(0, str(REPO_DIR))

from example_project.cluster import Cluster  # noqa: E402
from tests.servers import RedisServer  # noqa: E402

#: Workspace -> the region its organization lives in (example_project/seed.py).
TEAMS = {"us": "T0US00001", "eu": "T0EU00001"}
REGIONS = tuple(TEAMS)
PAYLOAD_TABLE = "silo_router_control_payload"
CIRCUIT_TABLE = "silo_router_control_regioncircuit"
#: The retry schedule, compressed so that a fault of seconds plays like one of minutes
#: (read by example_project/settings/control.py; defaults in docs/operations.md).
COMPRESSED_SETTINGS = {
    "SILO_ROUTER_DELIVERY_BACKOFF": "0.5",  # default 2 s
    "SILO_ROUTER_DELIVERY_MAX_BACKOFF": "2",  # default 900 s
    "SILO_ROUTER_DELIVERY_MAX_ATTEMPTS": "60",  # default 12 (about 47 min of trying); here about 2 min
    "SILO_ROUTER_DELIVERY_TIMEOUT": "3",  # default 10 s
    "SILO_ROUTER_LEASE_MARGIN": "2",  # default 30 s: a dead worker's lease expires after 5 s
    "SILO_ROUTER_CIRCUIT_OPEN_SECONDS": "1",  # default 15 s
    "SILO_ROUTER_CIRCUIT_MAX_OPEN_SECONDS": "2",  # default 600 s
    "SILO_ROUTER_SWEEP_GRACE": "3",  # default 30 s
    "SILO_ROUTER_SWEEP_EVERY": "1",  # default 5 s
}


@contextlib.contextmanager
def running(
    var_dir: Path, *, worker_concurrency: int | None = None, **cluster_options: Any
) -> Iterator[tuple[Cluster, RedisServer]]:
    """A throwaway Redis and the example cluster on it; both stopped on the way out, whatever happens.

    ``cluster_options`` go to ``Cluster`` (its ``broker_url`` is the Redis's);
    ``worker_concurrency`` replaces the threads of control's Celery worker.
    """
    redis = RedisServer()
    cluster: Cluster | None = None
    try:
        redis.start()
        cluster = Cluster(var_dir, broker_url=redis.url, **cluster_options)
        if worker_concurrency is not None:
            worker = cluster.services["worker"]
            concurrency = f"--concurrency={worker_concurrency}"
            worker.argv = [concurrency if arg.startswith("--concurrency=") else arg for arg in worker.argv]
        cluster.start()
        yield cluster, redis
    finally:
        if cluster is not None:
            cluster.stop()
        redis.cleanup()


def query(db: Path, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on a silo's SQLite database (a fresh connection: the latest commit; WAL lets us read)."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as connection:
        return connection.execute(sql, tuple(params)).fetchall()


def db_time(value: Any) -> float | None:
    """A Django UTC ``DateTimeField`` as SQLite stores it, as a Unix timestamp."""
    if not value:
        return None
    return datetime.datetime.fromisoformat(str(value)).replace(tzinfo=datetime.UTC).timestamp()


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float = 0.2) -> bool:
    """Whether ``predicate`` held within ``timeout`` seconds (asked every ``interval``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False


def versions() -> dict[str, str]:
    """Versions of what was measured."""
    found = {}
    for dist in ("Django", "gunicorn", "celery", "kombu", "redis", "django-silo-router"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    found["python"] = platform.python_version()
    found["sqlite"] = sqlite3.sqlite_version
    with contextlib.suppress(OSError, ValueError, IndexError, subprocess.SubprocessError):
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout
        found["redis-server"] = out.split("v=", 1)[1].split()[0]
    return found


def commit() -> str:
    """The repository's HEAD (uncommitted changes are not recorded)."""
    with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
        return subprocess.run(
            ["git", "-C", str(REPO_DIR), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    return ""
