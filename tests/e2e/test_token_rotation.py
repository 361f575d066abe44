"""Token rotation with real processes racing for the refresh: two control Celery workers, two gunicorn processes.

The fake Slack runs with token rotation: a bot token lives ``TOKEN_TTL`` seconds and a
refresh token is single use (a second exchange with it answers ``invalid_refresh_token``
and, in a real app, leaves that process with a dead token). Control refreshes a token
``MARGIN`` seconds before it expires, so each token is due ``TOKEN_TTL - MARGIN`` seconds
after it was issued and still valid for ``MARGIN`` more: every process that wants it
during that window races to refresh it. Exactly one may: the others keep the current
token. Each test waits until the tokens are due, then makes many processes want them at
once, and checks that Slack saw one refresh per workspace, none refused, and no call
with an expired token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from example_project.cluster import Cluster

from .conftest import FAST_RETRIES, UPSTREAM_LATENCY
from .helpers import (
    ASYNC_TIMEOUT,
    CONTROL_RESPONSES_ENABLED,
    EU_TEAM,
    US_TEAM,
    issue_button,
    set_option_in_admin,
    views_opened_with,
    wait_for_control_responses,
    wait_until,
)

pytestmark = pytest.mark.e2e

TOKEN_TTL = 30.0
MARGIN = 24
#: Seconds a token is used as it is before it is due.
FRESH_FOR = TOKEN_TTL - MARGIN
TEAMS = (US_TEAM, EU_TEAM)
#: Rotation tasks published at once (two workers, four threads each).
BURST = 24


@pytest.fixture(scope="module")
def rotating_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Tokens that rotate, two control workers and two control web processes; beat leaves rotation to the tests."""
    cluster = Cluster(
        tmp_path_factory.mktemp("rotation-cluster") / "var",
        upstream_latency=UPSTREAM_LATENCY,
        extra_env={**FAST_RETRIES, "SILO_ROUTER_ROTATE_TOKENS_EVERY": "3600"},
        token_ttl=TOKEN_TTL,
        token_rotation_margin=MARGIN,
        control_workers=2,
        control_processes=2,
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def expiries(cluster: Cluster) -> dict[str, float]:
    """``{team: when its stored bot token expires}`` from control's database."""
    found: dict[str, float] = {}
    for team in TEAMS:
        installed = cluster.installation(team)
        assert installed is not None and installed.bot_token_expires_at is not None, (team, installed)
        found[team] = installed.bot_token_expires_at
    return found


def wait_until_due(cluster: Cluster) -> dict[str, float]:
    """Sleep until every workspace's token is due for a refresh (and still valid); return the expiries."""
    current = expiries(cluster)
    due_at = max(current.values()) - MARGIN + 0.5
    assert due_at < min(current.values()) - 2, "the tokens are not due at the same time"
    time.sleep(max(0.0, due_at - time.time()))
    return current


def refreshes(cluster: Cluster) -> dict[str, int]:
    """``{team: refresh exchanges}`` the fake Slack has seen."""
    return {team: cluster.fake.refreshes(team) for team in TEAMS}


def assert_no_refresh_refused_or_token_expired(cluster: Cluster) -> None:
    """No process spent a refresh token twice, and no call went out with an expired token."""
    assert cluster.fake.calls("oauth.v2.access", error="invalid_refresh_token") == []
    assert cluster.fake.calls(error="token_expired") == []
    assert cluster.fake.calls(error="invalid_auth") == []


def settled(cluster: Cluster, before: dict[str, int]) -> dict[str, int]:
    """The refresh counts once every workspace has one more and nothing moved for a second."""
    wait_until(
        lambda: all(count > before[team] for team, count in refreshes(cluster).items()),
        timeout=ASYNC_TIMEOUT,
        what="a refresh for every workspace",
    )
    last = refreshes(cluster)
    while True:
        time.sleep(1.0)
        now = refreshes(cluster)
        if now == last:
            return now
        last = now


def test_two_workers_racing_for_due_tokens_refresh_each_once(rotating_cluster: Cluster) -> None:
    """A burst of rotation tasks on two Celery workers: one refresh per workspace, the new token stored."""
    cluster = rotating_cluster
    assert cluster.services["worker"].running and cluster.services["worker-2"].running
    old = wait_until_due(cluster)
    before = refreshes(cluster)

    published = cluster.manage(
        "control",
        "shell",
        "-c",
        f"from silo_router.control.tasks import rotate_tokens\nfor _ in range({BURST}): rotate_tokens.delay()",
    )
    assert published.returncode == 0, published.stderr

    after = settled(cluster, before)
    assert after == {team: count + 1 for team, count in before.items()}
    new = expiries(cluster)
    assert all(new[team] > old[team] for team in TEAMS)
    assert_no_refresh_refused_or_token_expired(cluster)
    logs = [cluster.services[name].log_path.read_text() for name in ("worker", "worker-2")]
    assert all("silo_router.control.rotate_tokens" in log for log in logs), "both workers took part"


def test_requests_in_two_web_processes_racing_for_due_tokens_refresh_each_once(rotating_cluster: Cluster) -> None:
    """Clicks in both workspaces at once, on two gunicorn processes: one refresh each, every Loading modal opens."""
    cluster = rotating_cluster
    set_option_in_admin(cluster, CONTROL_RESPONSES_ENABLED, True)
    wait_for_control_responses(cluster, enabled=True)
    wait_until_due(cluster)
    before = refreshes(cluster)
    sender = cluster.sender()
    sent: list[tuple[str, str | None, int]] = []
    lock = threading.Lock()

    def click(team_id: str) -> None:
        answer = sender.click_button(team_id=team_id, action_id="archive_dialog", value=issue_button("acme", 9999))
        with lock:
            sent.append((team_id, answer.trigger_id, answer.status))

    threads = [threading.Thread(target=click, args=(team,)) for team in TEAMS for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)

    assert sorted(status for _, _, status in sent) == [200] * len(threads)
    after = settled(cluster, before)
    assert after == {team: count + 1 for team, count in before.items()}
    for team_id, trigger_id, _ in sent:
        [opened] = views_opened_with(cluster, trigger_id)
        assert (opened["ok"], opened["error"], opened["team_id"]) == (True, None, team_id)
    assert_no_refresh_refused_or_token_expired(cluster)
