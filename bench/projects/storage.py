"""The storage a silo_router benchmark project runs on, and the servers it needs.

Three set-ups (``STORAGES``), chosen per server by environment variables that
``settings_silo`` reads:

  sqlite-filesystem  the embedded default: SQLite in WAL mode, kombu's filesystem broker
  sqlite-redis       SQLite, the Celery broker on Redis
  postgres-redis     PostgreSQL (persistent connections), the Celery broker on Redis

PostgreSQL and Redis are throwaway servers on free loopback ports, started from the
binaries ``tools/install-servers.sh`` installs, like the test suite's (``tests/servers.py``).
PostgreSQL keeps ``fsync`` and ``synchronous_commit`` on, as in production: a committed
row is on disk. Redis runs without persistence: it is the wake-up, not the truth.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_DIR = Path(__file__).resolve().parents[2]

STORAGES = ("sqlite-filesystem", "sqlite-redis", "postgres-redis")
POSTGRES_DATABASE = "silo_bench"


def _test_servers() -> Any:
    """``tests/servers.py``, imported from the repository (it needs pytest, a dev requirement)."""
    if str(REPO_DIR) not in sys.path:
        sys.path.insert(0, str(REPO_DIR))
    from tests import servers

    return servers


@dataclasses.dataclass
class StorageServers:
    """The running servers (``None`` when no target needs one) and how to reach them."""

    postgres: Any = None
    redis: Any = None

    def environment(self, storage: str, *, redis_db: int) -> dict[str, str]:
        """The ``BENCH_*`` variables that point a silo_router project at ``storage``."""
        database, broker = storage.split("-")
        env = {"BENCH_DATABASE": database, "BENCH_BROKER": broker}
        if database == "postgres":
            env |= {
                "BENCH_POSTGRES_PORT": str(self.postgres.port),
                "BENCH_POSTGRES_NAME": POSTGRES_DATABASE,
            }
        if broker == "redis":
            env["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{self.redis.port}/{redis_db}"
        return env


def missing_binaries(storages: set[str]) -> list[str]:
    """The server binaries ``storages`` need that are not installed."""
    servers = _test_servers()
    missing = []
    if any(s.startswith("postgres") for s in storages) and not (
        servers._pg_bin("initdb") and servers._pg_bin("pg_ctl")
    ):
        missing.append("PostgreSQL (initdb, pg_ctl)")
    if any(s.endswith("redis") for s in storages) and not (
        shutil.which("redis-server") or Path("/usr/bin/redis-server").exists()
    ):
        missing.append("redis-server")
    return missing


def _durable_postgres() -> Any:
    """A throwaway cluster like the tests' one, but with ``fsync`` on: commits reach the disk."""
    servers = _test_servers()

    class DurablePostgres(servers.PostgresServer):
        def start(self) -> DurablePostgres:
            if self.as_user:
                shutil.chown(self.dir, "postgres")
            self._run(self.initdb, "-D", str(self.data), "-U", self.USER, "--auth=trust", "-E", "UTF8", "--no-sync")
            options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
            self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.dir / "log"), "-w", "start")
            servers._wait_for_port(self.port)
            subprocess.run(
                [*self.as_user, str(Path(self.initdb).with_name("createdb")), "-h", "127.0.0.1", "-p", str(self.port),
                 "-U", self.USER, POSTGRES_DATABASE],
                check=True, capture_output=True,
            )  # fmt: skip
            return self

    return DurablePostgres()


@contextlib.contextmanager
def storage_servers(storages: set[str]) -> Iterator[StorageServers]:
    """Start the PostgreSQL and Redis servers ``storages`` need; stop and remove them at the end."""
    missing = missing_binaries(storages)
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not installed: run bash tools/install-servers.sh")
    running = StorageServers()
    try:
        if any(s.startswith("postgres") for s in storages):
            running.postgres = _durable_postgres()
            running.postgres.start()
        if any(s.endswith("redis") for s in storages):
            running.redis = _test_servers().RedisServer()
            running.redis.start()
        yield running
    finally:
        for server in (running.redis, running.postgres):
            if server is not None:
                server.cleanup()


def versions(running: StorageServers) -> dict[str, str]:
    """The server versions measured (``postgres``, ``redis``), where they ran."""
    found: dict[str, str] = {}
    servers = _test_servers()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        if running.postgres is not None:
            postgres = servers._pg_bin("postgres")
            found["postgresql"] = subprocess.run(
                [postgres, "--version"], capture_output=True, text=True, timeout=10
            ).stdout.strip()
        if running.redis is not None:
            found["redis"] = subprocess.run(
                [running.redis.binary, "--version"],
                capture_output=True, text=True, timeout=10,
            ).stdout.strip()  # fmt: skip
    return found
