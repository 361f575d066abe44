"""A region's slack_sdk client calls Slack through control's proxy: answers come back unchanged.

These run with a single bot token in control (a single-workspace app), so no installation
rows are involved; tests/proxy/test_installations.py covers per-installation tokens.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client, override_settings
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from example_project.cluster import free_port
from example_project.fake_slack import FakeSlack
from silo_router import signing
from silo_router.conf import conf
from silo_router.providers.slack import proxy_signing
from silo_router.providers.slack.client import ControlProxyClient, NoInstallation, installation_client

from .conftest import BOT_TOKEN, KEYS, ProxyClient

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "C0PROXY01"


def test_chat_post_message_comes_back_as_slack_sent_it(proxied: FakeSlack, proxy_client: ProxyClient) -> None:
    client = proxy_client("us")
    answer = client.chat_postMessage(channel=CHANNEL, text="hello from us")
    assert answer.status_code == 200
    assert answer["ok"] is True and answer["channel"] == CHANNEL
    assert answer["message"]["text"] == "hello from us"
    assert [m["text"] for m in proxied.messages] == ["hello from us"]
    (call,) = proxied.calls("chat.postMessage")
    assert call.ok and "token" not in call.params


def test_views_open_and_auth_test_pass_through(proxied: FakeSlack, proxy_client: ProxyClient) -> None:
    client = proxy_client("eu")
    trigger = proxied.issue_trigger()
    view = {"type": "modal", "title": {"type": "plain_text", "text": "Hi"}, "blocks": []}
    opened = client.views_open(trigger_id=trigger, view=view)
    assert opened["view"]["id"] in proxied.views
    identity = client.auth_test()
    assert identity["bot_id"] == proxied.bot_id
    assert identity["user_id"] == proxied.bot_user_id


def test_slack_errors_come_back_as_slack_api_errors(proxied: FakeSlack, proxy_client: ProxyClient) -> None:
    with pytest.raises(SlackApiError) as info:
        proxy_client("us").views_open(trigger_id="0.0.deadbeef", view={"type": "modal"})
    assert info.value.response.status_code == 200
    assert info.value.response["error"] in {"invalid_trigger_id", "invalid_arguments"}


def test_a_429_comes_back_with_retry_after_and_the_client_retries(
    proxied: FakeSlack, proxy_client: ProxyClient
) -> None:
    proxied.fail_next("chat.postMessage", status=429, retry_after=1)
    client = proxy_client("us", retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    started = time.monotonic()
    answer = client.chat_postMessage(channel=CHANNEL, text="after the wait")
    assert answer["ok"] is True
    assert time.monotonic() - started >= 1.0
    assert [c.error for c in proxied.calls("chat.postMessage")] == ["ratelimited", None]


def test_without_retries_the_429_and_its_retry_after_reach_the_caller(
    proxied: FakeSlack, proxy_client: ProxyClient
) -> None:
    proxied.fail_next("chat.postMessage", status=429, retry_after=7)
    with pytest.raises(SlackApiError) as info:
        proxy_client("us", retry_handlers=[]).chat_postMessage(channel=CHANNEL, text="x")
    response = info.value.response
    assert response.status_code == 429
    assert response["error"] == "ratelimited"
    assert response.headers["Retry-After"] == "7"


def test_each_attempt_is_signed_anew(proxied: FakeSlack, proxy_client: ProxyClient, settings: Any) -> None:
    """A retry after Retry-After would otherwise carry a signature older than the replay window."""
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SIGNATURE_MAX_AGE": 2}
    proxied.fail_next("chat.postMessage", status=429, retry_after=4)
    client = proxy_client("us", retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])
    assert client.chat_postMessage(channel=CHANNEL, text="late but signed")["ok"] is True


def test_the_region_client_of_installation_client(proxied: FakeSlack, control_url: str) -> None:
    """In region mode installation_client is a ControlProxyClient to CONTROL_URL, signed with the region's key."""
    region_mode = {**conf._raw, "MODE": "region", "REGION": "us", "SIGNING_KEYS": KEYS["us"], "SIGNING_KEY_ID": None}
    region_mode["SLACK"] = {**region_mode["SLACK"], "BOT_TOKEN": None}
    with override_settings(SILO_ROUTER=region_mode):
        client = installation_client("", timeout=5.0)
        assert isinstance(client, ControlProxyClient)
        assert client.token is None
        assert client.base_url == control_url + conf.WEB_API_PROXY_PATH
    # back in control's settings, the server verifies it with REGIONS["us"]'s key
    assert client.chat_postMessage(channel=CHANNEL, text="from a region")["ok"] is True


def test_region_without_control_url_cannot_call_slack(settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "MODE": "region", "CONTROL_URL": None}
    with pytest.raises(NoInstallation, match="CONTROL_URL"):
        installation_client("12")


# -- refusals ------------------------------------------------------------------------


def raw_call(
    method: str,
    *,
    region: str = "us",
    installation_id: str = "",
    body: bytes = b"channel=C1&text=hi",
    key: tuple[str, str] | None = None,
    signed_body: bytes | None = None,
    timestamp: float | None = None,
) -> dict[str, str]:
    """Headers of a call signed as ``region`` (``signed_body`` differs from ``body`` to tamper)."""
    key_id, secret = key or next(iter(KEYS[region].items()))
    return proxy_signing.sign_call(
        method=method,
        installation_id=installation_id,
        region=region,
        body=body if signed_body is None else signed_body,
        key_id=key_id,
        key=secret,
        timestamp=timestamp,
    )


def post(path: str, body: bytes, headers: dict[str, str]) -> Any:
    return Client().post(path, data=body, content_type="application/x-www-form-urlencoded", headers=headers)


def refusal(response: Any) -> tuple[int, str]:
    data = json.loads(response.content)
    assert data["ok"] is False and data["detail"]
    return response.status_code, data["error"]


@pytest.mark.parametrize(
    ("method", "status", "reason"),
    [
        ("oauth.v2.access", 403, "method_not_proxied"),
        ("oauth.access", 403, "method_not_proxied"),
        ("openid.connect.token", 403, "method_not_proxied"),
        ("auth.revoke", 403, "method_not_proxied"),
        ("apps.uninstall", 403, "method_not_proxied"),
        ("apps.permissions.request", 403, "method_not_proxied"),
        ("tooling.tokens.rotate", 403, "method_not_proxied"),
        ("OAuth.V2.Access", 403, "method_not_proxied"),
        ("chat.post%20Message", 400, "invalid_method"),
        ("chat.postMessage/..", 400, "invalid_method"),
        ("", 400, "invalid_method"),
    ],
)
def test_methods_that_are_not_proxied(proxied: FakeSlack, method: str, status: int, reason: str) -> None:
    body = b"channel=C1&text=hi"
    headers = raw_call("chat.postMessage", body=body)
    assert refusal(post(conf.WEB_API_PROXY_PATH + method, body, headers)) == (status, reason)
    assert proxied.calls() == []


def test_only_post(proxied: FakeSlack) -> None:
    response = Client().get(conf.WEB_API_PROXY_PATH + "auth.test")
    assert refusal(response) == (405, "method_not_allowed")
    assert response["Allow"] == "POST"


def test_an_unsigned_call_is_refused(proxied: FakeSlack) -> None:
    headers = {proxy_signing.REGION_HEADER: "us"}
    assert refusal(post(conf.WEB_API_PROXY_PATH + "auth.test", b"", headers)) == (403, "missing_signature")
    assert proxied.calls() == []


def test_a_tampered_body_is_refused(proxied: FakeSlack) -> None:
    headers = raw_call("chat.postMessage", body=b"channel=C1&text=hi", signed_body=b"channel=C1&text=bye")
    response = post(conf.WEB_API_PROXY_PATH + "chat.postMessage", b"channel=C1&text=hi", headers)
    assert refusal(response) == (403, "signature_mismatch")
    assert proxied.calls() == []


def test_a_call_signed_for_another_method_is_refused(proxied: FakeSlack) -> None:
    body = b"channel=C1&text=hi"
    headers = raw_call("chat.update", body=body)
    assert refusal(post(conf.WEB_API_PROXY_PATH + "chat.postMessage", body, headers)) == (403, "signature_mismatch")


def test_another_regions_key_does_not_sign_for_this_region(proxied: FakeSlack) -> None:
    body = b"channel=C1&text=hi"
    eu_key = next(iter(KEYS["eu"].items()))
    headers = raw_call("chat.postMessage", region="us", body=body, key=eu_key)
    assert refusal(post(conf.WEB_API_PROXY_PATH + "chat.postMessage", body, headers)) == (403, "unknown_key")
    same_id = ("us-1", eu_key[1])  # eu's secret under us's key id
    headers = raw_call("chat.postMessage", region="us", body=body, key=same_id)
    assert refusal(post(conf.WEB_API_PROXY_PATH + "chat.postMessage", body, headers)) == (403, "signature_mismatch")
    assert proxied.calls() == []


def test_a_stale_signature_is_refused(proxied: FakeSlack) -> None:
    body = b"channel=C1&text=hi"
    headers = raw_call("chat.postMessage", body=body, timestamp=time.time() - conf.SIGNATURE_MAX_AGE - 10)
    assert refusal(post(conf.WEB_API_PROXY_PATH + "chat.postMessage", body, headers)) == (403, "stale_signature")


@pytest.mark.parametrize("region", ["", "ap", "us:eu"])
def test_an_unknown_region_is_refused(proxied: FakeSlack, region: str) -> None:
    body = b"channel=C1&text=hi"
    headers = raw_call("chat.postMessage", body=body)
    headers[proxy_signing.REGION_HEADER] = region
    assert refusal(post(conf.WEB_API_PROXY_PATH + "chat.postMessage", body, headers)) == (403, "unknown_region")


def test_a_body_over_the_limit_is_refused(proxied: FakeSlack, settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "WEB_API_PROXY_MAX_BODY_SIZE": 64}
    body = b"channel=C1&text=" + b"x" * 100
    headers = raw_call("chat.postMessage", body=body)
    assert refusal(post(conf.WEB_API_PROXY_PATH + "chat.postMessage", body, headers)) == (413, "payload_too_large")


def test_a_malformed_installation_header_is_refused(proxied: FakeSlack) -> None:
    body = b""
    headers = raw_call("auth.test", body=body)
    headers[proxy_signing.INSTALLATION_HEADER] = "1:2"
    assert refusal(post(conf.WEB_API_PROXY_PATH + "auth.test", body, headers)) == (400, "invalid_installation")


def test_without_a_single_token_a_call_must_name_an_installation(
    proxied: FakeSlack, proxy_client: ProxyClient, settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": {**settings.SILO_ROUTER["SLACK"], "BOT_TOKEN": None}}
    with pytest.raises(SlackApiError) as info:
        proxy_client("us").auth_test()
    assert (info.value.response.status_code, info.value.response["error"]) == (404, "installation_not_found")


# -- Slack down or slow ---------------------------------------------------------------


@pytest.fixture
def silent_slack() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api/"
    finally:
        stop.set()
        thread.join(timeout=2)
        for sock in held:
            sock.close()
        listener.close()


def test_slack_timing_out_is_a_504(
    proxied: FakeSlack, proxy_client: ProxyClient, settings: Any, silent_slack: str
) -> None:
    slack = {**settings.SILO_ROUTER["SLACK"], "API_URL": silent_slack}
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": slack, "WEB_API_PROXY_TIMEOUT": 0.3}
    with pytest.raises(SlackApiError) as info:
        proxy_client("us", retry_handlers=[]).auth_test()
    assert (info.value.response.status_code, info.value.response["error"]) == (504, "slack_timeout")


def test_slack_unreachable_is_a_502(proxied: FakeSlack, proxy_client: ProxyClient, settings: Any) -> None:
    slack = {**settings.SILO_ROUTER["SLACK"], "API_URL": f"http://127.0.0.1:{free_port()}/api/"}
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": slack}
    with pytest.raises(SlackApiError) as info:
        proxy_client("us", retry_handlers=[]).auth_test()
    assert (info.value.response.status_code, info.value.response["error"]) == (502, "slack_unreachable")


def test_no_token_or_body_in_logs_or_answers(
    proxied: FakeSlack, proxy_client: ProxyClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_text = "a private message body"
    client = proxy_client("us")
    client.chat_postMessage(channel=CHANNEL, text=secret_text)
    proxied.fail_next("auth.test", status=429, retry_after=1)
    with pytest.raises(SlackApiError) as info:
        proxy_client("us", retry_handlers=[]).auth_test()
    text = "\n".join(record.getMessage() for record in caplog.records)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("silo_router"))
    assert "chat.postMessage" in ours and "region us" in ours
    assert BOT_TOKEN not in text
    assert secret_text not in ours  # the region's own slack_sdk may log what it sends, at DEBUG
    assert BOT_TOKEN not in json.dumps(dict(info.value.response.data))
    for keys in KEYS.values():
        for secret in keys.values():
            assert secret not in text
    assert signing.HEADER not in text
