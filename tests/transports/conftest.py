"""Fixtures for the transport tests: real region endpoints on loopback."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
from django.core.handlers.wsgi import WSGIHandler

from silo_router.envelope import Envelope

from ..slack_signing import event_callback

ENVELOPE_PATH = "/silo-router/envelopes/"


def make_envelope(*, event_id: str = "EvT1", region: str = "us", text: str | None = None) -> Envelope:
    """A signed-ready ``app_mention`` envelope (``text`` replaces the event's text)."""
    payload = event_callback(event_id=event_id)
    if text is not None:
        payload["event"]["text"] = text
    key = f"slack:event:{event_id}"
    return Envelope(
        id=Envelope.make_id(key, region),
        idempotency_key=key,
        provider="slack",
        kind="event_callback:app_mention",
        region=region,
        body=json.dumps(payload, ensure_ascii=False),
        headers={"content-type": "application/json"},
        strategy="async",
        organization_ids=("101",),
    )


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return


@pytest.fixture
def region_endpoint() -> Iterator[str]:
    """This process's Django, served over loopback HTTP by a threaded WSGI server."""
    server = make_server("127.0.0.1", 0, WSGIHandler(), server_class=_ThreadingServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_region(settings: Any, region_endpoint: str) -> str:
    """Region ``us`` is this process's real envelope endpoint, reached over the http transport."""
    url = region_endpoint + ENVELOPE_PATH
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "REGIONS": {**settings.SILO_ROUTER["REGIONS"], "us": {"TRANSPORT": "http", "URL": url}},
    }
    return url
