"""The fake Slack's workspaces and tokens driven over HTTP, as another process does it."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from example_project.fake_slack import FakeSlack

SECRET = "fake-slack-endpoints-signing-secret"
REPO_ROOT = Path(__file__).resolve().parents[2]
MODAL: dict[str, Any] = {
    "type": "modal",
    "title": {"type": "plain_text", "text": "Loading..."},
    "blocks": [],
}


@pytest.fixture
def base() -> Iterator[str]:
    """The ``/_fake`` base URL of a running fake with token rotation."""
    with FakeSlack(signing_secret=SECRET, token_rotation=True) as fake:
        yield f"{fake.base_url}/_fake"


def test_workspaces_installs_and_tokens_over_http(base: str) -> None:
    """Add workspaces, install, read tokens, issue team-bound triggers, revoke, count refreshes: all over HTTP."""
    added = requests.post(f"{base}/workspaces", json={"team_id": "T1", "channels": ["C1"]}, timeout=5).json()
    requests.post(f"{base}/workspaces", json={"team_id": "T2", "enterprise_id": "E2", "name": "Two"}, timeout=5)
    assert added["team_id"] == "T1" and added["channels"] == ["C1"] and added["bot_user_id"].startswith("U")
    listed = requests.get(f"{base}/workspaces", timeout=5).json()
    assert [w["team_id"] for w in listed] == ["T0FAKE001", "T1", "T2"]
    two = requests.get(f"{base}/workspaces", params={"team_id": "T2"}, timeout=5).json()
    assert (two["enterprise_id"], two["name"]) == ("E2", "Two")
    assert requests.get(f"{base}/workspaces", params={"team_id": "T9"}, timeout=5).status_code == 404

    installed = requests.post(f"{base}/install", json={"team_id": "T1", "scopes": ["commands"]}, timeout=5).json()
    requests.post(f"{base}/install", json={"team_id": "T2"}, timeout=5).raise_for_status()
    tokens = requests.get(f"{base}/tokens", params={"team_id": "T1"}, timeout=5).json()["tokens"]
    assert tokens == [installed["access_token"]] and installed["scope"] == "commands"
    api = base.replace("/_fake", "/api/")
    other = requests.get(f"{base}/tokens", params={"team_id": "T2"}, timeout=5).json()["tokens"][0]

    trigger_id = requests.post(f"{base}/trigger", json={"team_id": "T1"}, timeout=5).json()["trigger_id"]
    with pytest.raises(SlackApiError) as refused:
        WebClient(token=other, base_url=api).views_open(trigger_id=trigger_id, view=MODAL)
    assert refused.value.response["error"] == "invalid_trigger_id"
    assert WebClient(token=tokens[0], base_url=api).views_open(trigger_id=trigger_id, view=MODAL)["ok"] is True
    calls = requests.get(f"{base}/calls", params={"method": "views.open"}, timeout=5).json()
    assert [(c["error"], c["team_id"]) for c in calls] == [("invalid_trigger_id", "T2"), (None, "T1")]

    url = requests.post(f"{base}/response_url", json={"team_id": "T1", "channel_id": "C1"}, timeout=5).json()
    assert requests.post(url["response_url"], json={"text": "hi"}, timeout=5).text == "ok"
    assert requests.get(f"{base}/messages", timeout=5).json()[0]["team_id"] == "T1"

    WebClient(base_url=api).oauth_v2_access(
        client_id="1111111111.2222222222",
        client_secret="fake-slack-client-secret",
        grant_type="refresh_token",
        refresh_token=installed["refresh_token"],
    )
    assert requests.get(f"{base}/refreshes", params={"team_id": "T1"}, timeout=5).json()["refreshes"] == 1

    assert requests.post(f"{base}/revoke", json={"team_id": "T1"}, timeout=5).json() == {"ok": True, "revoked": 1}
    assert requests.get(f"{base}/tokens", params={"team_id": "T1"}, timeout=5).json()["tokens"] == []
    with pytest.raises(SlackApiError) as revoked:
        WebClient(token=tokens[0], base_url=api).auth_test()
    assert revoked.value.response["error"] == "token_revoked"

    assert requests.post(f"{base}/reset", timeout=5).json() == {"ok": True}
    assert len(requests.get(f"{base}/workspaces", timeout=5).json()) == 3


def test_bad_requests_to_the_endpoints_are_precise_4xx(base: str) -> None:
    """Missing team_id, bad ids or channels owned elsewhere answer 400 with a reason."""
    missing = requests.get(f"{base}/tokens", timeout=5)
    bad_team = requests.post(f"{base}/workspaces", json={"team_id": "X1"}, timeout=5)
    requests.post(f"{base}/workspaces", json={"team_id": "T1", "channels": ["C1"]}, timeout=5)
    taken = requests.post(f"{base}/workspaces", json={"team_id": "T2", "channels": ["C1"]}, timeout=5)
    no_enterprise = requests.post(f"{base}/install", json={"team_id": "T1", "enterprise": True}, timeout=5)
    for response in (missing, bad_team, taken, no_enterprise):
        assert response.status_code == 400 and response.json()["ok"] is False
    assert missing.json()["detail"] == "team_id is required"
    assert "C1 already belongs to T1" in taken.json()["detail"]


def test_runs_as_a_process_with_workspaces_and_oauth_flags() -> None:
    """--workspace, --channel, --client-id and --token-rotation configure the fake; --bot-token is optional."""
    process = subprocess.Popen(
        [sys.executable, "-m", "example_project.fake_slack", "--port", "0", "--signing-secret", SECRET]
        + ["--client-id", "123.456", "--client-secret", "shh", "--token-rotation", "--token-ttl", "60"]
        + ["--workspace", "T1", "--workspace", "T2:E2", "--channel", "T1:C1"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        base_url = process.stdout.readline().strip().rsplit(" ", 1)[1]
        workspaces = {w["team_id"]: w for w in requests.get(f"{base_url}/_fake/workspaces", timeout=5).json()}
        assert (workspaces["T1"]["channels"], workspaces["T2"]["enterprise_id"]) == (["C1"], "E2")
        installed = requests.post(f"{base_url}/_fake/install", json={"team_id": "T2"}, timeout=5).json()
        assert installed["access_token"].startswith("xoxe.xoxb-1-") and installed["expires_in"] == 60
        refreshed = WebClient(base_url=f"{base_url}/api/").oauth_v2_access(
            client_id="123.456",
            client_secret="shh",
            grant_type="refresh_token",
            refresh_token=installed["refresh_token"],
        )
        assert refreshed["team"]["id"] == "T2"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
