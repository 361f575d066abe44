"""Control's Web API proxy, called the way a region calls it, over real HTTP.

A region holds no token: it signs each call with its own hop key and names the
installation (``silo_router.providers.slack.proxy_signing``); control checks that the
installation has an organization in that region, adds its token and forwards the call to
Slack. Here the test process plays a region (it knows each region's key from the cluster).
"""

from __future__ import annotations

import json
import secrets

import pytest
import requests

from example_project.cluster import WORKSPACES, Cluster
from silo_router.providers.slack.proxy_signing import sign_call

from .helpers import BOTH_TEAM, EU_TEAM, US_TEAM

pytestmark = pytest.mark.e2e

PROXY_PATH = "/silo-router/slack-api/"
EU_CHANNEL = WORKSPACES[EU_TEAM].channels[2]


def installation_id(cluster: Cluster, team_id: str) -> str:
    """Control's id of workspace ``team_id``'s installation."""
    installed = cluster.installation(team_id)
    assert installed is not None and installed.active, team_id
    return installed.installation_id


def call_as(
    cluster: Cluster,
    region: str,
    method: str,
    *,
    installation: str,
    params: dict[str, str] | None = None,
    signed_by: str | None = None,
    signed: bool = True,
) -> requests.Response:
    """POST ``method`` to control's proxy as region ``region`` (signed with ``signed_by``'s key, default its own)."""
    body = json.dumps(params or {}).encode()
    headers = {"Content-Type": "application/json; charset=utf-8"}
    key_id, key = cluster.hop_key(signed_by or region)
    call_headers = sign_call(
        method=method, installation_id=installation, region=region, body=body, key_id=key_id, key=key
    )
    if not signed:
        call_headers.pop("X-Silo-Router-Signature")
    return requests.post(
        cluster.control_app_url + PROXY_PATH + method, data=body, headers={**headers, **call_headers}, timeout=10
    )


def posted_texts(cluster: Cluster, channel: str) -> list[str]:
    """Texts of every chat.postMessage call into ``channel`` the fake recorded, ok or not."""
    return [
        str(call["params"].get("text"))
        for call in cluster.fake.calls("chat.postMessage")
        if call["params"].get("channel") == channel
    ]


@pytest.mark.parametrize(
    ("region", "team_id"), [("us", US_TEAM), ("eu", EU_TEAM), ("us", BOTH_TEAM), ("eu", BOTH_TEAM)]
)
def test_a_region_calls_slack_with_the_token_of_its_own_installation(
    cluster: Cluster, region: str, team_id: str
) -> None:
    """auth.test through the proxy answers as the installation's workspace; the fake saw its token."""
    before = len(cluster.fake.calls("auth.test"))

    answer = call_as(cluster, region, "auth.test", installation=installation_id(cluster, team_id))

    assert answer.status_code == 200, answer.text
    assert answer.json()["ok"] is True
    assert answer.json()["team_id"] == team_id
    [recorded] = cluster.fake.calls("auth.test")[before:]
    assert (recorded["ok"], recorded["team_id"]) == (True, team_id)


def test_a_region_asking_for_another_regions_installation_is_refused(cluster: Cluster) -> None:
    """us, signing with its own key, names T0EU00001's installation (globex, eu only): 403, Slack never called."""
    text = "us speaking for eu " + secrets.token_hex(4)

    answer = call_as(
        cluster,
        "us",
        "chat.postMessage",
        installation=installation_id(cluster, EU_TEAM),
        params={"channel": EU_CHANNEL, "text": text},
    )

    assert answer.status_code == 403
    assert answer.json()["ok"] is False
    assert answer.json()["error"] == "installation_not_in_region"
    assert text not in posted_texts(cluster, EU_CHANNEL)
    allowed = call_as(
        cluster,
        "eu",
        "chat.postMessage",
        installation=installation_id(cluster, EU_TEAM),
        params={"channel": EU_CHANNEL, "text": text},
    )
    assert allowed.status_code == 200 and allowed.json()["ok"] is True
    assert posted_texts(cluster, EU_CHANNEL).count(text) == 1


@pytest.mark.parametrize(
    ("region", "signed_by", "signed", "reason"),
    [
        ("eu", "us", True, "unknown_key"),  # us's key, claiming to be eu
        ("eu", None, False, "missing_signature"),
    ],
)
def test_a_call_not_signed_by_the_region_it_names_is_refused(
    cluster: Cluster, region: str, signed_by: str | None, signed: bool, reason: str
) -> None:
    """A region cannot borrow another's name: eu's installation asked for under eu's name, without eu's key."""
    text = "not eu " + secrets.token_hex(4)

    answer = call_as(
        cluster,
        region,
        "chat.postMessage",
        installation=installation_id(cluster, EU_TEAM),
        params={"channel": EU_CHANNEL, "text": text},
        signed_by=signed_by,
        signed=signed,
    )

    assert answer.status_code == 403
    assert answer.json()["error"] == reason
    assert text not in posted_texts(cluster, EU_CHANNEL)


def test_credential_methods_are_never_proxied(cluster: Cluster) -> None:
    """auth.revoke (or any oauth.* method) on a region's behalf: 403, and the token still works."""
    us_installation = installation_id(cluster, US_TEAM)

    for method in ("auth.revoke", "oauth.v2.access"):
        answer = call_as(cluster, "us", method, installation=us_installation)
        assert (answer.status_code, answer.json()["error"]) == (403, "method_not_proxied"), method

    assert call_as(cluster, "us", "auth.test", installation=us_installation).json()["ok"] is True
    assert not cluster.fake.calls("auth.revoke")
