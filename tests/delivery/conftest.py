"""Fixtures for delivery tests: a programmable region on loopback and a non-eager Celery app."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from silo_router.envelope import Envelope

Reply = tuple[int, dict[str, Any], dict[str, str]]


class RegionServer:
    """A real HTTP server on loopback that answers envelopes as a script says.

    ``script`` maps an envelope id to a list of replies used in turn (the last one
    repeats); ids not in it get ``default``. Every received envelope id is recorded.
    """

    def __init__(self) -> None:
        self.received: list[str] = []
        self.script: dict[str, list[Reply]] = {}
        self.default: Reply = (200, {"outcome": "handled", "response": None}, {})
        self.on_request: Callable[[], None] | None = None
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                envelope = Envelope.from_json(body)
                with outer._lock:
                    outer.received.append(envelope.id)
                    replies = outer.script.get(envelope.id)
                    reply = (replies.pop(0) if len(replies) > 1 else replies[0]) if replies else outer.default
                if outer.on_request is not None:
                    outer.on_request()
                status, data, headers = reply
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/silo-router/envelopes/"

    def start(self) -> RegionServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def region_server() -> Iterator[RegionServer]:
    server = RegionServer().start()
    yield server
    server.stop()


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Record what would be published to the broker instead of running it: one entry per payload id."""
    from silo_router.control import tasks

    sent: list[tuple[str, dict[str, Any]]] = []

    def record(args: tuple[str], **options: Any) -> None:
        sent.append((args[0], options))

    def record_batch(args: tuple[list[str]], **options: Any) -> None:
        sent.extend((payload_id, options) for payload_id in args[0])

    monkeypatch.setattr(tasks.deliver_payload, "apply_async", record)
    monkeypatch.setattr(tasks.deliver_payloads, "apply_async", record_batch)
    yield sent


@pytest.fixture
def http_regions(settings: Any, region_server: RegionServer) -> RegionServer:
    """``us`` goes to the scriptable server; ``eu`` to a port where nothing listens."""
    settings.SILO_ROUTER = {
        **settings.SILO_ROUTER,
        "REGIONS": {
            "us": {"TRANSPORT": "http", "URL": region_server.url},
            "eu": {"TRANSPORT": "http", "URL": "http://127.0.0.1:9/silo-router/envelopes/", "CONNECT_TIMEOUT": 0.5},
        },
        "RETRY_JITTER": 0,
        "DELIVERY_BACKOFF": 1.0,
        "CIRCUIT_FAILURE_THRESHOLD": 3,
        "CIRCUIT_OPEN_SECONDS": 30.0,
    }
    return region_server
