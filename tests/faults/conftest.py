"""Clusters for the fault tests: the example project's real processes with Redis as the Celery broker.

One cluster is alive at a time (they would share the suite's Redis) and it is reused by
the tests that follow on the same control database: SQLite (the embedded default) or
PostgreSQL (a throwaway server, ``tests/servers.py``; ``SILO_CONTROL_DATABASE_URL``).
After a passing test every service and Redis are running again; after a failing one
the cluster is thrown away, so one failure does not cascade. A failing test gets the
tails of every service's log in its report.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from example_project.cluster import Cluster
from tests.servers import PostgresServer, RedisServer

from .support import FAULT_ENV

#: Seconds the demo's "upstream issue tracker" takes; no fault test clicks a button.
UPSTREAM_LATENCY = 0.1
BACKENDS = ("sqlite", "postgres")
FAILED = pytest.StashKey[bool]()


class ClusterPool:
    """Starts fault clusters on demand, one at a time, on the suite's Redis."""

    def __init__(self, redis: RedisServer, base_dir: Path) -> None:
        self.redis = redis
        self.base_dir = base_dir
        self.active: Cluster | None = None
        self.backend = ""
        self.postgres: PostgresServer | None = None
        self._serial = itertools.count(1)

    def get(self, backend: str) -> Cluster:
        """The running cluster whose control database is on ``backend``; starts one if needed."""
        assert backend in BACKENDS, backend
        if self.active is not None and self.backend == backend:
            return self.active
        self.discard()
        serial = next(self._serial)
        env = dict(FAULT_ENV)
        if backend == "postgres":
            env["SILO_CONTROL_DATABASE_URL"] = self._postgres_database(f"control_{serial}")
        self.redis.flush()  # nothing left over from another cluster or test
        cluster = Cluster(
            self.base_dir / f"{backend}-{serial}",
            broker_url=self.redis.url,
            upstream_latency=UPSTREAM_LATENCY,
            extra_env=env,
        )
        self.active, self.backend = cluster.start(), backend
        return cluster

    def _postgres_database(self, name: str) -> str:
        """A fresh database on the pool's PostgreSQL server (started on first use); its URL."""
        if self.postgres is None:
            server = PostgresServer()  # skips, or fails under CI=true, when PostgreSQL is missing
            try:
                server.start()
            except BaseException:
                server.cleanup()
                raise
            self.postgres = server
        import psycopg

        settings = self.postgres.database_settings("postgres")
        admin_url = f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/postgres"
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return admin_url.rsplit("/", 1)[0] + f"/{name}"

    def ensure_redis(self) -> None:
        """Start Redis again if a test left it stopped."""
        if self.redis.process is None or self.redis.process.poll() is not None:
            self.redis.start()

    def restore(self) -> None:
        """After a passing test: Redis and every service of the active cluster running.

        A test restarts what it stopped; this is the safety net.
        """
        self.ensure_redis()
        if self.active is None:
            return
        for name, service in self.active.services.items():
            self.active.resume_service(name)
            if not service.running:
                self.active.start_service(name)

    def discard(self) -> None:
        """Stop the active cluster, if any (its logs stay in its var dir)."""
        cluster, self.active, self.backend = self.active, None, ""
        if cluster is not None:
            for name in cluster.services:
                cluster.resume_service(name)  # a paused process would only die at SIGKILL, 5 s later
            cluster.stop()

    def close(self) -> None:
        """Stop everything the pool started."""
        try:
            self.discard()
        finally:
            if self.postgres is not None:
                self.postgres.cleanup()
                self.postgres = None


@pytest.fixture(scope="session")
def fault_clusters(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterPool]:
    """The session's pool of fault clusters."""
    pool = ClusterPool(redis_server, tmp_path_factory.mktemp("faults"))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture(autouse=True)
def _restore_after_test(request: pytest.FixtureRequest, fault_clusters: ClusterPool) -> Iterator[None]:
    """Leave every service and Redis running after a passing test; throw the cluster away after a failure."""
    yield
    if request.node.stash.get(FAILED, False):
        fault_clusters.discard()
        fault_clusters.ensure_redis()
    else:
        fault_clusters.restore()


@pytest.fixture(scope="module", params=BACKENDS)
def control_backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` then ``postgres``: module-scoped, so pytest runs every test of a module on one before the other."""
    return str(request.param)


@pytest.fixture
def any_db_cluster(fault_clusters: ClusterPool, control_backend: str) -> Cluster:
    """A fault cluster with control on ``control_backend``."""
    cluster = fault_clusters.get(control_backend)
    on_postgres = cluster.control_database_url is not None
    assert on_postgres == (control_backend == "postgres")
    assert cluster.control_db.exists() != on_postgres, "control's database is not where the backend says"
    return cluster


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Remember failures (for ``_restore_after_test``); attach the tail of every service's log to the report."""
    report = yield
    if report.failed:
        item.stash[FAILED] = True
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Cluster):
                tails = "\n".join(f"--- {service}:\n{tail}" for service, tail in value.log_tails(30))
                report.sections.append((f"{name} logs ({value.var_dir})", tails))
    return report
