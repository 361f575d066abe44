"""The clusters the end-to-end tests drive: fake Slack, control, us and eu, Celery workers, all real processes.

``cluster`` is shared by the whole session (started on first use, 5 to 15 s): its
workspaces (``example_project.cluster.WORKSPACES``) are installed through the OAuth flow
as it starts, so every token comes from the fake Slack. The Celery-transport test starts
its own (``celery_cluster``, module-scoped), and so do the modules that need a cluster
of their own (each workspace's Slack calls, token rotation, the leak checks). Both always
stop every process they started, also when a test fails or the run is interrupted, and
keep their logs and databases under pytest's temporary directory. A failing test gets
the tails of every service's log in its report.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from pathlib import Path

import pytest
import sentry_sdk

from example_project.cluster import Cluster

#: A short retry schedule (read by example_project/settings/control.py), so a region that
#: comes back is served again within seconds: retries from 0.5 s (the default starts at
#: 2 s and doubles), circuits that open for 1 s (default 15 s), and a sweeper that runs
#: every second and republishes held payloads 1 s after they are due (defaults 5 s, 30 s).
FAST_RETRIES = {
    "SILO_ROUTER_DELIVERY_BACKOFF": "0.5",
    "SILO_ROUTER_DELIVERY_MAX_ATTEMPTS": "20",
    "SILO_ROUTER_CIRCUIT_OPEN_SECONDS": "1",
    "SILO_ROUTER_SWEEP_GRACE": "1",
    "SILO_ROUTER_SWEEP_EVERY": "1",
}
#: Seconds the demo's "upstream issue tracker" takes (the demo uses 3 s to make the
#: naive views.open fail on purpose; no e2e test needs that wait).
UPSTREAM_LATENCY = 0.1


def started(var_dir: Path, *, region_transports: Mapping[str, str] | None = None) -> Cluster:
    """A started cluster in ``var_dir``; ``start()`` stops whatever it started if it fails."""
    cluster = Cluster(
        var_dir, upstream_latency=UPSTREAM_LATENCY, extra_env=FAST_RETRIES, region_transports=region_transports
    )
    return cluster.start()


@pytest.fixture(autouse=True)
def no_sentry_in_the_test_process() -> None:
    """The test process plays Slack and the browser: it must not trace.

    A sentry-sdk client left active by an earlier test would make its HTTP integration
    add ``sentry-trace`` and ``baggage`` to every request it sends, so every Slack request
    would arrive in one trace the test process made up.
    """
    sentry_sdk.get_global_scope().set_client(None)
    sentry_sdk.get_isolation_scope().set_client(None)
    sentry_sdk.get_current_scope().set_client(None)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The example project with both regions on the http transport."""
    running = started(tmp_path_factory.mktemp("cluster") / "var")
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def celery_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The example project with region eu on the celery transport (and its own Celery worker)."""
    running = started(tmp_path_factory.mktemp("celery-cluster") / "var", region_transports={"eu": "celery"})
    try:
        yield running
    finally:
        running.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the tail of every service's log to a failed end-to-end test's report."""
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for name, running in funcargs.items():  # cluster, celery_cluster and the modules' own
            if isinstance(running, Cluster):
                tails = "\n".join(f"--- {service}:\n{tail}" for service, tail in running.log_tails(25))
                report.sections.append((f"{name} logs ({running.var_dir})", tails))
    return report
