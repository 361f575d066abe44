"""Through gunicorn and Celery, with sentry-sdk initialised as the README recommends: no
response_url, trigger_id, token, signing secret or signature in any Sentry envelope or log line.

The example cluster runs with ``SILO_DEMO_SENTRY_CAPTURE_DIR`` (every process writes what
sentry-sdk would send to files), ``SILO_DEMO_LOG_LEVEL=DEBUG`` (slack_sdk's request lines
included) and every trace sampled. The demo's flows run: a Resolve click with the Loading
modal, ``/ticket`` in both regions (eu over the Celery transport), an @-mention, an options
load and ``/ticket crash`` (a handler that raises).

The workspaces' tokens were issued by the fake Slack during the OAuth installs; they exist
there and, encrypted, in control's database, and nowhere else: not in a region's settings,
environment or database, not in an envelope control stored, not on the broker.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from example_project.cluster import REGIONS, WORKSPACES, Cluster
from example_project.fake_slack.client import LEGACY_VERIFICATION_TOKEN
from example_project.install_browser import InstallBrowser, query_param

from .conftest import FAST_RETRIES, UPSTREAM_LATENCY
from .helpers import (
    ASYNC_TIMEOUT,
    CONTROL_RESPONSES_ENABLED,
    EU_TEAM,
    US_TEAM,
    issue_button,
    mention,
    new_payloads,
    payload_ids,
    replies_to,
    set_option_in_admin,
    wait_for_control_responses,
    wait_until,
)

pytestmark = pytest.mark.e2e

#: Shapes that are secrets wherever they appear: Slack signatures and tokens (bot, user, rotating).
SECRET_SHAPES = (re.compile(rb"v0=[0-9a-f]{64}"), re.compile(rb"xox[abpe][.-][A-Za-z0-9.-]{16,}"))


@pytest.fixture(scope="module")
def capture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sentry-envelopes")


@pytest.fixture(scope="module")
def sentry_cluster(tmp_path_factory: pytest.TempPathFactory, capture_dir: Path) -> Iterator[Cluster]:
    env = {
        **FAST_RETRIES,
        "SILO_ROUTER_DELIVERY_MAX_ATTEMPTS": "2",
        "SILO_DEMO_SENTRY_CAPTURE_DIR": str(capture_dir),
        "SILO_DEMO_LOG_LEVEL": "DEBUG",
        "SILO_ROUTER_TRACES_SAMPLE_RATE": "1.0",
    }
    cluster = Cluster(
        tmp_path_factory.mktemp("sentry-cluster") / "var",
        upstream_latency=UPSTREAM_LATENCY,
        extra_env=env,
        region_transports={"eu": "celery"},  # envelopes to eu travel as Celery task arguments
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def captured_items(capture_dir: Path) -> set[bytes]:
    kinds: set[bytes] = set()
    for path in capture_dir.glob("*.envelope"):
        kinds.update(re.findall(rb'\{"type":\s*"(\w+)"', path.read_bytes()))
    return kinds


def workspace_tokens(cluster: Cluster) -> list[str]:
    """Every live bot token the fake Slack issued to the cluster's workspaces (one per install)."""
    tokens = [token for team in [*cluster.workspaces, "T0LEAK001"] for token in cluster.fake.tokens(team)]
    assert len(tokens) >= len(cluster.workspaces), tokens
    return tokens


def install_a_workspace(cluster: Cluster) -> list[str]:
    """Install one more workspace through the OAuth flow; the grant, state and code it used (credentials too)."""
    team_id = "T0LEAK001"
    cluster.fake.add_workspace(team_id, name="Leak check")
    link = cluster.install_links(["acme"])["acme"]
    with InstallBrowser() as browser:
        authorize = browser.start(link)
        redirect = browser.consent(authorize, team_id=team_id)
        assert browser.finish(redirect).status == 200
    used = [str(query_param(link, "grant")), str(query_param(authorize, "state")), str(query_param(redirect, "code"))]
    assert all(used), used
    return [*used, *(urllib.parse.quote(value, safe="") for value in used)]  # as written in a URL too


def sqlite_dump(path: Path) -> bytes:
    """Every row of a SQLite database, as SQL text."""
    with contextlib.closing(sqlite3.connect(path, timeout=10)) as db:
        return "\n".join(db.iterdump()).encode()


def broker_files(cluster: Cluster) -> dict[Path, bytes]:
    """Every message file on the cluster's filesystem broker right now."""
    return {path: path.read_bytes() for path in (cluster.var_dir / "broker").rglob("*") if path.is_file()}


def test_tokens_live_only_encrypted_in_controls_database(sentry_cluster: Cluster) -> None:
    """No token in a region's settings, environment or database, in a stored envelope or on the broker.

    Control's database holds each token only as ciphertext of the cluster's encryption key.
    The broker is read while eu's worker is stopped, so eu's envelopes wait there.
    """
    cluster = sentry_cluster
    tokens = workspace_tokens(cluster)
    control_only = [*tokens, cluster.signing_secret, cluster.client_secret, cluster.token_encryption_key]

    for region in REGIONS:
        shown = cluster.manage(region, "diffsettings", "--all")
        assert shown.returncode == 0, shown.stderr
        assert "'REGION': '" + region + "'" in shown.stdout
        assert [secret for secret in control_only if secret in shown.stdout] == []
        assert "BOT_TOKEN" not in shown.stdout and "CLIENT_SECRET" not in shown.stdout
        other = "eu" if region == "us" else "us"
        assert cluster.hop_key(other)[1] not in shown.stdout  # nor can it sign as the other region
        environment = "\n".join(f"{name}={value}" for name, value in cluster.silo_env(region).items())
        assert [secret for secret in [*control_only, cluster.hop_key(other)[1]] if secret in environment] == []
        assert [token for token in tokens if token.encode() in sqlite_dump(cluster.region_db(region))] == []

    cluster.stop_service("eu-worker")
    try:
        before = set(broker_files(cluster))
        sent = cluster.sender().slash_command(team_id=EU_TEAM, command="/ticket")
        assert sent.status == 200
        queued = wait_until(
            lambda: {path: data for path, data in broker_files(cluster).items() if path not in before},
            timeout=ASYNC_TIMEOUT,
            what="eu's envelope on the broker",
        )
        assert [token for token in tokens for data in queued.values() if token.encode() in data] == []
    finally:
        cluster.start_service("eu-worker")
    wait_until(lambda: replies_to(cluster, sent.response_url), timeout=ASYNC_TIMEOUT, what="eu's reply")

    envelopes = [str(row[0]) for row in cluster.control_rows("SELECT envelope FROM silo_router_control_payload")]
    assert envelopes and all('"installation_id"' in envelope for envelope in envelopes)  # the facts travel
    assert [token for token in tokens for envelope in envelopes if token in envelope] == []

    control_dump = sqlite_dump(cluster.control_db)
    assert [token for token in tokens if token.encode() in control_dump] == []
    fernet = Fernet(cluster.token_encryption_key.encode())
    for team in cluster.workspaces:
        installed = cluster.installation(team)
        assert installed is not None and installed.encrypted_bot_token
        assert fernet.decrypt(installed.encrypted_bot_token.encode()).decode() in cluster.fake.tokens(team)


def test_no_capability_reaches_sentry_or_a_log_line(sentry_cluster: Cluster, capture_dir: Path) -> None:
    cluster = sentry_cluster
    set_option_in_admin(cluster, CONTROL_RESPONSES_ENABLED, True)
    wait_for_control_responses(cluster, enabled=True)
    sender = cluster.sender()
    before = payload_ids(cluster)

    sent = [
        sender.click_button(team_id=US_TEAM, action_id="resolve_dialog", value=issue_button("acme", 3)),
        sender.slash_command(team_id=US_TEAM, command="/ticket"),
        sender.slash_command(team_id=US_TEAM, command="/ticket", text="crash"),
        mention(sender, team_id=US_TEAM, channel=WORKSPACES[US_TEAM].channels[0]),
        sender.slash_command(team_id=EU_TEAM, command="/ticket"),
        sender.options_load(team_id=US_TEAM, action_id="pick_issue", value="a"),
    ]
    assert [s.status for s in sent] == [200] * 6
    assert "options" in sent[-1].json()
    for ticket in (sent[1], sent[4]):
        wait_until(lambda t=ticket: replies_to(cluster, t.response_url), timeout=ASYNC_TIMEOUT, what="a /ticket reply")

    def settled() -> bool:
        rows = new_payloads(cluster, before)
        return len(rows) >= 5 and all(row.state in ("delivered", "failed") for row in rows)

    wait_until(settled, timeout=ASYNC_TIMEOUT, what="every payload delivered or failed")
    ticket_states = sorted(row.state for row in new_payloads(cluster, before) if row.kind == "command:/ticket")
    assert ticket_states == ["delivered", "delivered", "failed"]  # /ticket crash fails after its 2 attempts
    wait_until(
        lambda: {b"event", b"transaction"} <= captured_items(capture_dir),
        timeout=ASYNC_TIMEOUT,
        what="an error event and a transaction captured",
    )
    install_secrets = install_a_workspace(cluster)
    tokens = workspace_tokens(cluster)
    cluster.stop()  # every process flushes sentry-sdk and its logs on the way out

    capabilities = [value for s in sent for value in (s.response_url, s.trigger_id) if value]
    capabilities += [url.rsplit("/", 1)[1] for url in capabilities if "/response/" in url]
    secrets = [
        *capabilities,
        *tokens,
        *install_secrets,
        cluster.signing_secret,
        cluster.client_secret,
        cluster.token_encryption_key,
        cluster.hop_key("us")[1],
        cluster.hop_key("eu")[1],
    ]
    secrets.append(LEGACY_VERIFICATION_TOKEN)
    written = {path: path.read_bytes() for path in [*capture_dir.glob("*.envelope"), *cluster.var_dir.glob("*.log")]}
    assert any(path.suffix == ".log" and b"slack_sdk" in data for path, data in written.items()), "no DEBUG lines"
    leaks = [(path.name, secret) for path, data in written.items() for secret in secrets if secret.encode() in data]
    assert leaks == []
    shaped = [(path.name, m.group()) for path, data in written.items() for p in SECRET_SHAPES for m in p.finditer(data)]
    assert shaped == []
