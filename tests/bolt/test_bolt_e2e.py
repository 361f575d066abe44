"""The bar, with real processes: a Bolt app in region us behind control, Slack played by the fake.

Region us (gunicorn) loads ``tests.bolt.e2e_handlers``, which mounts the Bolt app of
``tests/bolt/e2e_app.py``, in the environment docs/bolt.md gives a region's operator:
no Slack token, placeholders for the signing secret and OAuth credentials. Control (gunicorn
behind its buffering proxy, a Celery worker and beat) verifies the signed requests the
fake's sender posts, answers the synchronous ones with the region's answer, and
delivers the rest; the Bolt listeners' Slack calls go through control's Web API proxy,
which adds the workspace's token. The fake Slack records which workspace's token each
call carried and refuses a wrong one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from example_project.cluster import WORKSPACES, Cluster, JsonDict

from ..e2e.conftest import FAST_RETRIES, UPSTREAM_LATENCY, no_sentry_in_the_test_process  # noqa: F401
from ..e2e.helpers import ASYNC_TIMEOUT, SLACK_WINDOW_MS, US_TEAM
from .conftest import REGION_ENV

pytestmark = pytest.mark.e2e

US_CHANNEL = WORKSPACES[US_TEAM].channels[0]
REGION_SETTINGS = "tests.bolt.e2e_region_us"


@pytest.fixture(scope="module")
def bolt_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The example cluster with region us serving Slack through the Bolt app."""
    cluster = Cluster(
        tmp_path_factory.mktemp("bolt-cluster") / "var",
        upstream_latency=UPSTREAM_LATENCY,
        extra_env=FAST_RETRIES,
        region_env={"us": {"DJANGO_SETTINGS_MODULE": REGION_SETTINGS, **REGION_ENV}},
    )
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def response_url_posts(cluster: Cluster, response_url: str | None, count: int) -> list[JsonDict]:
    """The first ``count`` posts to ``response_url``, oldest first (waits for them)."""
    assert response_url
    cluster.fake.wait_for_call(
        lambda call: (
            len([c for c in cluster.fake.calls("response_url") if c["params"]["response_url"] == response_url]) >= count
        ),
        method="response_url",
        timeout=ASYNC_TIMEOUT,
    )
    posts = [call for call in cluster.fake.calls("response_url") if call["params"]["response_url"] == response_url]
    return posts[:count]


def posted(cluster: Cluster, text: str) -> JsonDict:
    """The chat.postMessage call whose text is ``text`` (waits for it)."""
    return cluster.fake.wait_for_call(
        lambda call: call["params"].get("text") == text, method="chat.postMessage", timeout=ASYNC_TIMEOUT
    )


def test_the_region_runs_bolt_with_no_slack_credential(bolt_cluster: Cluster) -> None:
    env = bolt_cluster.silo_env("us")
    assert env["DJANGO_SETTINGS_MODULE"] == REGION_SETTINGS
    assert "SLACK_BOT_TOKEN" not in env and env["SLACK_SIGNING_SECRET"] == REGION_ENV["SLACK_SIGNING_SECRET"]
    assert bolt_cluster.signing_secret not in env.values() and bolt_cluster.client_secret not in env.values()


def test_an_action_listener_says_and_responds_with_the_workspaces_token(bolt_cluster: Cluster) -> None:
    sent = bolt_cluster.sender().click_button(team_id=US_TEAM, action_id="bolt_approve", channel_id=US_CHANNEL)
    assert (sent.status, sent.body) == (200, b"")
    assert sent.elapsed_ms < SLACK_WINDOW_MS
    said = posted(bolt_cluster, "<@U0USER001> approved")
    assert (said["ok"], said["error"], said["team_id"], said["params"]["channel"]) == (True, None, US_TEAM, US_CHANNEL)
    [responded] = response_url_posts(bolt_cluster, sent.response_url, 1)
    assert (responded["ok"], responded["team_id"]) == (True, US_TEAM)
    assert (responded["params"]["text"], responded["params"]["response_type"]) == ("Only you can see this", "ephemeral")


def test_a_commands_ack_text_reaches_the_user_privately_then_its_respond(bolt_cluster: Cluster) -> None:
    sent = bolt_cluster.sender().slash_command(
        team_id=US_TEAM, command="/bolt-deploy", text="v2", channel_id=US_CHANNEL
    )
    assert (sent.status, sent.body) == (200, b"")  # control acknowledged it at once
    ack, respond = response_url_posts(bolt_cluster, sent.response_url, 2)
    assert (ack["ok"], ack["team_id"], ack["params"]["text"], ack["params"]["response_type"]) == (
        True,
        US_TEAM,
        "Deploying v2...",
        "ephemeral",
    )
    assert (respond["ok"], respond["params"]["text"], respond["params"]["response_type"]) == (
        True,
        "Deployed v2",
        "in_channel",
    )


def test_an_options_load_is_answered_with_the_listeners_options(bolt_cluster: Cluster) -> None:
    sent = bolt_cluster.sender().options_load(team_id=US_TEAM, action_id="bolt_pick", value="ap")
    assert sent.status == 200 and sent.elapsed_ms < SLACK_WINDOW_MS
    assert sent.json() == {
        "options": [
            {"text": {"type": "plain_text", "text": "apple"}, "value": "apple"},
            {"text": {"type": "plain_text", "text": "apricot"}, "value": "apricot"},
        ]
    }


def test_a_view_submission_gets_the_listeners_errors_or_closes(bolt_cluster: Cluster) -> None:
    sender = bolt_cluster.sender()
    short = sender.submit_view(team_id=US_TEAM, callback_id="bolt_form", values={"title": {"title": "abc"}})
    assert short.status == 200 and short.elapsed_ms < SLACK_WINDOW_MS
    assert short.json() == {"response_action": "errors", "errors": {"title": "Use at least 5 characters"}}
    fine = sender.submit_view(team_id=US_TEAM, callback_id="bolt_form", values={"title": {"title": "A fine title"}})
    assert (fine.status, fine.body) == (200, b"")  # an empty body: the modal closes


def test_a_lazy_listener_calls_slack_through_control_after_the_ack(bolt_cluster: Cluster) -> None:
    sent = bolt_cluster.sender().slash_command(
        team_id=US_TEAM, command="/bolt-report", text="weekly", channel_id=US_CHANNEL
    )
    assert (sent.status, sent.body) == (200, b"")
    report = posted(bolt_cluster, "Report: weekly")
    assert (report["ok"], report["error"], report["team_id"]) == (True, None, US_TEAM)


def test_no_token_or_capability_in_the_regions_log(bolt_cluster: Cluster) -> None:
    """After every flow above: the region's log names none of the workspace's tokens or response_urls."""
    log = (bolt_cluster.var_dir / "us.log").read_text(errors="replace")
    secrets: list[Any] = [*bolt_cluster.fake.tokens(US_TEAM)]
    secrets += [call["params"]["response_url"] for call in bolt_cluster.fake.calls("response_url")]
    assert secrets
    for secret in secrets:
        assert secret not in log
