"""A loopback Slack that only rotates tokens: ``oauth.v2.access`` with ``grant_type=refresh_token``.

Each refresh token works once (as Slack's do): a second use answers
``invalid_refresh_token``. It counts every refresh so tests can tell how many
processes called Slack.
"""

from __future__ import annotations

import base64
import http.server
import json
import secrets
import threading
import time
import urllib.parse
from typing import Any

CLIENT_ID = "111.222"
CLIENT_SECRET = "tests-client-secret"


class TokenServer:
    """``start()``, then ``url`` is an ``API_URL`` for slack_sdk (``http://127.0.0.1:<port>/api/``)."""

    def __init__(self, *, expires_in: int = 43200, delay: float = 0.0, fail_with: str | None = None) -> None:
        self.expires_in = expires_in
        self.delay = delay
        self.fail_with = fail_with
        self.refreshes = 0
        self.rejected: list[str] = []
        self.presented: list[str] = []
        self._live_refresh: dict[str, str] = {}  # refresh token -> team
        self.access_tokens: dict[str, float] = {}  # access token -> expires at
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/api/"

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def issue(self, team_id: str, *, expires_in: int | None = None) -> tuple[str, str]:
        """A first access token and refresh token for ``team_id`` (what an install would give)."""
        with self._lock:
            return self._issue(team_id, self.expires_in if expires_in is None else expires_in)

    def _issue(self, team_id: str, expires_in: int) -> tuple[str, str]:
        access = f"xoxe.xoxb-{team_id}-{secrets.token_hex(6)}"
        refresh = f"xoxe-1-{team_id}-{secrets.token_hex(6)}"
        self.access_tokens[access] = time.time() + expires_in
        self._live_refresh[refresh] = team_id
        return access, refresh

    def valid(self, token: str) -> bool:
        return self.access_tokens.get(token, 0.0) > time.time()

    def _refresh(self, fields: dict[str, str], authorization: str) -> dict[str, Any]:
        client = fields.get("client_id"), fields.get("client_secret")
        if authorization.startswith("Basic "):
            client = tuple(base64.b64decode(authorization[6:]).decode().split(":", 1))  # type: ignore[assignment]
        if client != (CLIENT_ID, CLIENT_SECRET):
            return {"ok": False, "error": "invalid_client_id"}
        if fields.get("grant_type") != "refresh_token":
            return {"ok": False, "error": "invalid_grant_type"}
        time.sleep(self.delay)  # a slow Slack: competitors arrive while the winner waits
        with self._lock:
            presented = fields.get("refresh_token", "")
            self.presented.append(presented)
            team = self._live_refresh.pop(presented, None)
            if self.fail_with or team is None:
                self.rejected.append(presented)
                return {"ok": False, "error": self.fail_with or "invalid_refresh_token"}
            self.refreshes += 1
            access, refresh = self._issue(team, self.expires_in)
        return {
            "ok": True,
            "app_id": "A0APP0001",
            "token_type": "bot",
            "access_token": access,
            "refresh_token": refresh,
            "expires_in": self.expires_in,
            "team": {"id": team},
        }

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                fields = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                if self.path.rstrip("/") == "/api/oauth.v2.access":
                    answer = server._refresh(fields, self.headers.get("Authorization") or "")
                else:
                    answer = {"ok": False, "error": "unknown_method"}
                body = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
