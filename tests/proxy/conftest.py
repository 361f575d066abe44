"""Control's Web API proxy on a real loopback server, in front of the fake Slack.

The test process plays both sides: its Django is control (served over HTTP by a threaded
WSGI server), and a ``ControlProxyClient`` signs as a region with the key control has
for that region in ``REGIONS``. Each region has a key of its own.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from django.core.handlers.wsgi import WSGIHandler

from example_project.fake_slack import FakeSlack
from silo_router.conf import conf
from silo_router.providers.slack.client import ControlProxyClient

BOT_TOKEN = "xoxb-proxy-tests-single-token"
KEYS = {
    "us": {"us-1": "us-region-hop-key-0123456789abcdefghijklmnop"},
    "eu": {"eu-1": "eu-region-hop-key-0123456789abcdefghijklmnop"},
}


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return


@pytest.fixture
def control_url() -> Iterator[str]:
    """This process's Django (control) over loopback HTTP."""
    server = make_server("127.0.0.1", 0, WSGIHandler(), server_class=_ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    with FakeSlack(signing_secret="proxy-tests-signing-secret", bot_token=BOT_TOKEN) as server:
        yield server


def region_settings(base: dict[str, Any], *, api_url: str, control_url: str, **slack: Any) -> dict[str, Any]:
    """Monolith settings where each region has its own hop key and Slack is the fake."""
    return {
        **base,
        "REGIONS": {name: {"TRANSPORT": "local", "SIGNING_KEYS": keys} for name, keys in KEYS.items()},
        "CONTROL_URL": control_url,
        "SLACK": {**base["SLACK"], "API_URL": api_url, **slack},
    }


@pytest.fixture
def proxied(settings: Any, control_url: str, fake_slack: FakeSlack) -> FakeSlack:
    """Control proxies to the fake Slack, with a single bot token (no installations needed)."""
    settings.SILO_ROUTER = region_settings(
        settings.SILO_ROUTER, api_url=fake_slack.api_url, control_url=control_url, BOT_TOKEN=BOT_TOKEN
    )
    return fake_slack


ProxyClient = Callable[..., ControlProxyClient]


@pytest.fixture
def proxy_client(control_url: str) -> ProxyClient:
    """``proxy_client(region, installation_id="", key=None, **options)``: a region's client to control."""

    def build(
        region: str, installation_id: str = "", *, key: tuple[str, str] | None = None, **options: Any
    ) -> ControlProxyClient:
        key_id, secret = key or next(iter(conf.signing_keys_for(region).items()))
        return ControlProxyClient(
            base_url=control_url + conf.WEB_API_PROXY_PATH,
            region=region,
            key_id=key_id,
            key=secret,
            installation_id=installation_id,
            **options,
        )

    return build
