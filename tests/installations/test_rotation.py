"""Token rotation: refreshed before expiry, once, even with several processes racing for it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from silo_router.control.beat import ROTATE_TOKENS_TASK, token_rotation_schedule
from silo_router.control.models import SlackInstallation
from silo_router.control.slack.authorizer import InstallationAuthorizer, rotate_expiring_tokens
from silo_router.control.slack.store import DjangoInstallationStore
from silo_router.control.tasks import rotate_tokens
from silo_router.providers.base import RoutingKeys

from .builders import rotating_install
from .processes import Workers
from .token_server import CLIENT_ID, CLIENT_SECRET, TokenServer

TEAM = "T0ROT0001"
RACERS = 4


@pytest.fixture
def slack() -> Iterator[TokenServer]:
    server = TokenServer(delay=0.5).start()
    yield server
    server.stop()


@pytest.fixture
def workers(tmp_path: Path, slack: TokenServer) -> Workers:
    return Workers(tmp_path / "control.sqlite3", api_url=slack.url)


def install(workers: Workers, slack: TokenServer, *, expires_in: int) -> tuple[str, str]:
    """Migrate the shared database and store one rotating installation; return its tokens."""
    token, refresh = slack.issue(TEAM, expires_in=expires_in)
    installs = [{"team_id": TEAM, "bot_token": token, "refresh_token": refresh, "expires_in": expires_in}]
    workers.run({"op": "setup", "installs": installs})
    return token, refresh


def test_an_expiring_token_is_refreshed_once_by_racing_processes(workers: Workers, slack: TokenServer) -> None:
    """Within the margin but still valid: one process refreshes, the others use the current token."""
    old_token, old_refresh = install(workers, slack, expires_in=600)

    tokens = workers.race([{"op": "authorize", "team_id": TEAM}] * RACERS)

    assert slack.refreshes == 1 and slack.rejected == [], "one refresh, no refresh token burnt twice"
    assert slack.presented == [old_refresh]
    stored = workers.run({"op": "inspect", "team_id": TEAM})
    assert stored["bot_token"] != old_token and slack.valid(stored["bot_token"])
    assert stored["refresh_token"] != old_refresh and stored["lease_owner"] == ""
    assert stored["expires_at"] > time.time() + 40000
    assert set(tokens) <= {old_token, stored["bot_token"]} and stored["bot_token"] in tokens
    assert all(slack.valid(token) for token in tokens)


def test_an_expired_token_makes_the_others_wait_for_the_new_one(workers: Workers, slack: TokenServer) -> None:
    old_token, _ = install(workers, slack, expires_in=-60)

    tokens = workers.race([{"op": "authorize", "team_id": TEAM}] * RACERS)

    assert slack.refreshes == 1 and slack.rejected == []
    stored = workers.run({"op": "inspect", "team_id": TEAM})
    assert tokens == [stored["bot_token"]] * RACERS
    assert old_token not in tokens and slack.valid(stored["bot_token"])


def test_two_processes_consuming_one_state_get_one_ok(workers: Workers) -> None:
    state = workers.run({"op": "setup"})
    outcomes = workers.race([{"op": "consume_state", "state": state}] * RACERS)
    assert sorted(outcomes) == ["ok"] + ["used"] * (RACERS - 1)


# -- in one process ----------------------------------------------------------------------


@pytest.fixture
def rotating_app(settings: Any, slack: TokenServer) -> None:
    slack_settings = {k: v for k, v in settings.SILO_ROUTER["SLACK"].items() if k != "BOT_TOKEN"}
    slack_settings.update({"CLIENT_ID": CLIENT_ID, "CLIENT_SECRET": CLIENT_SECRET, "API_URL": slack.url})
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": slack_settings}


def save(slack: TokenServer, team_id: str = TEAM, *, expires_in: int) -> tuple[str, str]:
    token, refresh = slack.issue(team_id, expires_in=expires_in)
    DjangoInstallationStore().save(
        rotating_install(team_id, bot_token=token, bot_refresh_token=refresh, expires_in=expires_in)
    )
    return token, refresh


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("rotating_app")
def test_a_token_far_from_expiry_is_not_refreshed(slack: TokenServer) -> None:
    token, _ = save(slack, expires_in=43200)
    found = InstallationAuthorizer().authorize(RoutingKeys(team_id=TEAM))
    assert found is not None and found.token == token and slack.refreshes == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("rotating_app")
def test_a_cached_token_is_refreshed_when_it_comes_within_the_margin(slack: TokenServer, settings: Any) -> None:
    def margin(seconds: int) -> None:
        slack_settings = {**settings.SILO_ROUTER["SLACK"], "TOKEN_ROTATION_MARGIN": seconds}
        settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": slack_settings, "RESOLVER_CACHE_SECONDS": 3600}

    token, _ = save(slack, expires_in=3600)
    margin(60)
    auth = InstallationAuthorizer()
    first = auth.authorize(RoutingKeys(team_id=TEAM))
    assert first is not None and first.token == token and slack.refreshes == 0
    margin(7200)  # as if time passed: the cached token now expires within the margin
    again = auth.authorize(RoutingKeys(team_id=TEAM))
    assert again is not None and again.token != token and slack.valid(again.token) and slack.refreshes == 1
    assert auth.authorize(RoutingKeys(team_id=TEAM)) == again and slack.refreshes == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("rotating_app")
def test_a_failed_refresh_is_logged_by_name_and_not_retried_before_the_lease_ends(
    slack: TokenServer, caplog: Any
) -> None:
    slack.fail_with = "invalid_refresh_token"
    token, refresh = save(slack, expires_in=600)
    auth = InstallationAuthorizer()
    with caplog.at_level(logging.ERROR, logger="silo_router.control"):
        found = auth.authorize(RoutingKeys(team_id=TEAM))
    assert found is not None and found.token == token, "the current token is still valid: it is used"
    assert "token refresh failed: invalid_refresh_token" in caplog.text
    assert refresh not in caplog.text and token not in caplog.text
    record = SlackInstallation.objects.get()
    assert record.rotation_lease_until is not None and record.rotation_lease_until.timestamp() > time.time()
    assert auth.authorize(RoutingKeys(team_id=TEAM)) is not None
    assert len(slack.presented) == 1, "no second call while the failed attempt's lease lasts"


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("rotating_app")
def test_the_beat_task_refreshes_every_installation_due(slack: TokenServer) -> None:
    save(slack, "T0ROT0001", expires_in=600)
    save(slack, "T0ROT0002", expires_in=-5)
    kept, _ = save(slack, "T0ROT0003", expires_in=43200)
    DjangoInstallationStore().save(rotating_install("T0ROT0004", expires_in=600, bot_refresh_token=None))

    assert rotate_expiring_tokens() == 2
    assert slack.refreshes == 2
    assert rotate_tokens.delay().get() == 0, "nothing is due any more"
    tokens = {r.integration.external_id: r.bot_token for r in SlackInstallation.objects.select_related("integration")}
    assert tokens["T0ROT0003"] == kept
    assert slack.valid(str(tokens["T0ROT0001"])) and slack.valid(str(tokens["T0ROT0002"]))


@pytest.mark.django_db
@pytest.mark.usefixtures("rotating_app")
def test_nothing_is_refreshed_inside_a_transaction(slack: TokenServer) -> None:
    """The lease and the call to Slack never run inside a transaction (the ``db`` fixture holds one)."""
    token, _ = save(slack, expires_in=600)
    found = InstallationAuthorizer().authorize(RoutingKeys(team_id=TEAM))
    assert found is not None and found.token == token and slack.presented == []


def test_the_schedule_entry() -> None:
    entry = token_rotation_schedule(every=300)["silo-router-rotate-tokens"]
    assert entry["task"] == ROTATE_TOKENS_TASK == "silo_router.control.rotate_tokens"
    assert entry["schedule"] == 300
