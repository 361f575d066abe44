"""A fake Slack Web API and response_url server on loopback, for tests and the demo.

`FakeSlack` is a real HTTP server (stdlib ``ThreadingHTTPServer``, no Django) that a
slack_sdk ``WebClient(base_url=fake.api_url)`` or ``WebhookClient(response_url)`` talks
to exactly as it would talk to Slack: HTTP 200 with ``{"ok": ..., "error": ...}`` for Web
API outcomes, HTTP 429 with ``Retry-After`` when rate limited.

Behaviour taken from Slack's documentation (docs.slack.dev method reference pages):

- views.open / views.push errors ``invalid_trigger_id``, ``expired_trigger_id``,
  ``exchanged_trigger_id``, ``duplicate_external_id``, ``view_too_large`` (> 250 kB);
  views.push ``push_limit_reached`` ("currently the limit is 3": a root view plus two
  pushed views) and ``not_found``; views.update ``hash_conflict`` and ``not_found``,
  and "exactly one of" ``view_id`` / ``external_id``.
- Success bodies: ``{"ok": true, "view": {...}}`` with ``id``, ``hash``, ``external_id``,
  ``state``, ``root_view_id``, ``previous_view_id``, ``app_id``, ``bot_id``;
  chat.postMessage ``channel``, ``ts``, ``message``; chat.update ``channel``, ``ts``,
  ``text``, ``message``; chat.postEphemeral ``message_ts``; auth.test ``url``, ``team``,
  ``user``, ``team_id``, ``user_id``, ``bot_id``.
- A ``trigger_id`` expires after 3 seconds and can be exchanged once.
- A ``response_url`` can be used up to 5 times within 30 minutes.
- Tokens arrive as ``Authorization: Bearer`` or as a ``token`` POST parameter; missing is
  ``not_authed``, wrong is ``invalid_auth``. Rate limits are HTTP 429 + ``Retry-After``
  with ``{"ok": false, "error": "ratelimited"}``.

Behaviour Slack does not document, chosen here (inferred, and kept in one place):

- A trigger is consumed only by a successful views.open / views.push. A call rejected
  for its arguments (bad view, duplicate external_id, push limit) leaves the trigger
  usable until it expires; a 429 never reaches the trigger at all. An already exchanged
  trigger answers ``exchanged_trigger_id`` even once it is also older than the TTL.
- A missing ``trigger_id`` is ``invalid_arguments``.
- views.push with a trigger that did not come from an interaction inside an open modal
  answers ``not_found`` (the docs require a trigger "generated from an interaction within
  the existing modal"). Issue such triggers with ``issue_trigger(view_id=...)``.
- response_url refusals: Slack documents the limits but not the answer past them. This
  fake answers HTTP 404 with the plain-text body ``used_url`` after the fifth use and
  ``expired_url`` after the window, ``no_service`` (404) for a URL it never issued, and
  ``invalid_payload`` / ``no_text`` (400) for bad bodies, following the status-code style
  of Slack's incoming-webhook errors. Only successful posts count as uses.
- An unknown Web API method answers HTTP 200 ``unknown_method``.

The ``/_fake/*`` endpoints (inspection, reset, fault injection, trigger and response_url
issuing) exist so a demo or a SlackSender in another process can drive the fake. They
are unauthenticated; the server binds to loopback only.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from example_project.fake_slack.client import SlackSender

MAX_VIEW_STACK = 3
MAX_VIEW_BYTES = 250 * 1024
MAX_TITLE_CHARS = 24
MAX_EXTERNAL_ID_CHARS = 255
RESPONSE_URL_MAX_USES = 5
_JSON_FIELDS = ("view", "blocks", "attachments", "metadata")

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One recorded call, as the fake answered it.

    ``method`` is the Web API method name ("views.open") or "response_url"; ``params``
    are the call's arguments without the token (for response_url: the posted JSON plus
    the ``response_url`` itself); ``at`` is time.monotonic(), ``wall`` time.time().
    """

    method: str
    params: JsonDict
    ok: bool
    error: str | None
    at: float
    wall: float

    def to_dict(self) -> JsonDict:
        """Return a JSON-ready copy."""
        return asdict(self)


class SlackError(Exception):
    """An ``ok: false`` Web API answer with Slack's error name."""

    def __init__(self, error: str, detail: str | None = None) -> None:
        """Keep the error name and an optional response_metadata message."""
        super().__init__(error)
        self.error = error
        self.detail = detail


@dataclass
class _Trigger:
    issued_at: float
    view_id: str | None
    user_id: str | None
    used: bool = False


@dataclass
class _ResponseUrl:
    issued_at: float
    channel_id: str | None
    user_id: str | None
    uses: int = 0


@dataclass
class _FailRule:
    status: int
    retry_after: int
    remaining: int


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


def _json_reply(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> _Reply:
    """Encode ``data`` as a JSON reply."""
    return _Reply(status, json.dumps(data).encode("utf-8"), headers=headers or {})


def _text_reply(text: str, status: int) -> _Reply:
    """Build a plain-text reply (response_url answers are text, not JSON)."""
    return _Reply(status, text.encode("utf-8"), content_type="text/plain; charset=utf-8")


def _has_content(payload: Mapping[str, Any]) -> bool:
    """Whether a message payload carries text, blocks or attachments."""
    return any(payload.get(key) for key in ("text", "blocks", "attachments"))


def _truthy(value: Any) -> bool:
    """Read a boolean that may arrive form-encoded ("true", "1")."""
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes"}
    return bool(value)


def _parse_body(content_type: str, body: bytes) -> JsonDict:
    """Parse a JSON or form-encoded request body into a dict; ValueError if malformed."""
    if not body:
        return {}
    if content_type.split(";")[0].strip().lower() == "application/json":
        parsed = json.loads(body.decode("utf-8"))
        if not isinstance(parsed, dict):
            raise ValueError("JSON body must be an object")
        return parsed
    pairs = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    return {key: values[-1] for key, values in pairs.items()}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeSlack) -> None:
        """Bind and remember the FakeSlack that answers requests."""
        self.fake = fake
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        """Answer a GET."""
        self._answer("GET")

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        """Answer a POST."""
        self._answer("POST")

    def _answer(self, verb: str) -> None:
        """Read the request, let the fake route it, write the reply."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {key.lower(): value for key, value in self.headers.items()}
        try:
            reply = self.server.fake._route(verb, self.path, headers, body)
        except Exception as exc:  # noqa: BLE001 - a fake's own bug must still answer, visibly
            reply = _json_reply({"ok": False, "error": "fake_slack_internal_error", "detail": repr(exc)}, 500)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Stay quiet; calls are recorded instead."""


class FakeSlack:
    """A loopback HTTP server that plays Slack's Web API and response_url endpoints."""

    def __init__(
        self,
        *,
        signing_secret: str,
        bot_token: str,
        trigger_ttl: float = 3.0,
        host: str = "127.0.0.1",
        port: int = 0,
        response_url_ttl: float = 1800.0,
        team_id: str = "T0FAKE001",
        app_id: str = "A0APP0001",
    ) -> None:
        """Configure the fake; nothing listens until start()."""
        if not ipaddress.ip_address(host).is_loopback or ":" in host:
            raise ValueError(f"FakeSlack binds to an IPv4 loopback address only, not {host!r}")
        self.signing_secret = signing_secret
        self.bot_token = bot_token
        self.trigger_ttl = trigger_ttl
        self.response_url_ttl = response_url_ttl
        self.team_id = team_id
        self.app_id = app_id
        self.bot_id = "B0FAKEBOT1"
        self.bot_user_id = "U0FAKEBOT1"
        self._host = host
        self._requested_port = port
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0
        self._calls: list[Call] = []
        self._views: dict[str, JsonDict] = {}
        self._by_external_id: dict[str, str] = {}
        self._stacks: dict[str, list[str]] = {}
        self._messages: list[JsonDict] = []
        self._triggers: dict[str, _Trigger] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._fail_rules: dict[str, _FailRule] = {}
        self._methods: dict[str, Callable[[JsonDict], JsonDict]] = {
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.push": self._views_push,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "auth.test": self._auth_test,
        }

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Bind the port and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("FakeSlack is already started")
        self._httpd = _Server((self._host, self._requested_port), self)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-slack:{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeSlack:
        """Start on entering a with block."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop on leaving a with block."""
        self.stop()

    @property
    def port(self) -> int:
        """The bound TCP port (after start())."""
        if self._httpd is None:
            raise RuntimeError("FakeSlack is not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` without a trailing slash."""
        return f"http://{self._host}:{self.port}"

    @property
    def api_url(self) -> str:
        """Web API base for ``WebClient(base_url=...)``, with its trailing slash."""
        return f"{self.base_url}/api/"

    # -- issuing what Slack would put in a payload ----------------------------------

    def issue_trigger(self, *, view_id: str | None = None, user_id: str | None = None) -> str:
        """Issue a fresh trigger_id now; ``view_id`` marks an interaction inside that modal."""
        with self._lock:
            self._counter += 1
            trigger_id = f"{self._counter}.{secrets.randbelow(10**10):010d}.{secrets.token_hex(16)}"
            self._triggers[trigger_id] = _Trigger(time.monotonic(), view_id, user_id)
            return trigger_id

    def issue_response_url(self, *, channel_id: str | None = None, user_id: str | None = None) -> str:
        """Issue a fresh response_url served by this fake."""
        token = secrets.token_urlsafe(18)
        with self._lock:
            self._response_urls[token] = _ResponseUrl(time.monotonic(), channel_id, user_id)
        return f"{self.base_url}/response/{token}"

    def sender(self, target_url: str, *, app_id: str | None = None) -> SlackSender:
        """A SlackSender that signs with this fake's secret and posts to ``target_url``."""
        from example_project.fake_slack.client import SlackSender

        return SlackSender(
            fake=self,
            signing_secret=self.signing_secret,
            target_url=target_url,
            app_id=app_id or self.app_id,
        )

    # -- fault injection --------------------------------------------------------------

    def fail_next(self, method: str, *, status: int = 429, retry_after: int = 1, count: int = 1) -> None:
        """Answer the next ``count`` calls to ``method`` with ``status`` (429: ratelimited)."""
        if count < 1 or not 400 <= status <= 599:
            raise ValueError("fail_next needs count >= 1 and a 4xx/5xx status")
        with self._lock:
            self._fail_rules[method] = _FailRule(status, retry_after, count)

    # -- inspection -------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        """Recorded calls, oldest first, optionally only one method."""
        with self._lock:
            return [call for call in self._calls if method is None or call.method == method]

    def errors(self, name: str) -> list[Call]:
        """Recorded calls that failed with error ``name``."""
        with self._lock:
            return [call for call in self._calls if call.error == name]

    def wait_for(self, method: str, *, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Block until ``count`` calls to ``method`` are recorded; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [call for call in self._calls if call.method == method]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(found)} of {count} {method} calls after {timeout}s")
                self._changed.wait(remaining)

    @property
    def views(self) -> dict[str, JsonDict]:
        """Current views by id (copies)."""
        with self._lock:
            return copy.deepcopy(self._views)

    def view_by_external_id(self, external_id: str) -> JsonDict | None:
        """The current view with this external_id, or None."""
        with self._lock:
            view_id = self._by_external_id.get(external_id)
            return copy.deepcopy(self._views[view_id]) if view_id else None

    @property
    def messages(self) -> list[JsonDict]:
        """Posted messages, ephemeral messages and response_url posts, oldest first."""
        with self._lock:
            return copy.deepcopy(self._messages)

    def reset(self) -> None:
        """Forget calls, views, messages, triggers, response_urls and fault rules."""
        with self._lock:
            self._calls.clear()
            self._views.clear()
            self._by_external_id.clear()
            self._stacks.clear()
            self._messages.clear()
            self._triggers.clear()
            self._response_urls.clear()
            self._fail_rules.clear()

    # -- routing ----------------------------------------------------------------------

    def _route(self, verb: str, raw_path: str, headers: dict[str, str], body: bytes) -> _Reply:
        """Answer one HTTP request (called from a server thread)."""
        parts = urlsplit(raw_path)
        path = parts.path
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        content_type = headers.get("content-type", "")
        if path.startswith("/api/"):
            return self._api(path[len("/api/") :], headers, query, content_type, body)
        if path.startswith("/response/") and verb == "POST":
            return self._response_url(path[len("/response/") :], content_type, body)
        if path.startswith("/_fake/"):
            return self._control(verb, path[len("/_fake/") :], query, content_type, body)
        return _json_reply({"ok": False, "error": "not_found"}, status=404)

    def _control(self, verb: str, name: str, query: dict[str, str], content_type: str, body: bytes) -> _Reply:
        """The /_fake/* endpoints for other processes."""
        try:
            data = _parse_body(content_type or "application/json", body)
        except ValueError:
            return _json_reply({"ok": False, "error": "invalid_json"}, status=400)
        if verb == "GET" and name == "health":
            return _json_reply({"ok": True})
        if verb == "GET" and name == "calls":
            calls = self.calls(query.get("method"))
            if "error" in query:
                calls = [call for call in calls if call.error == query["error"]]
            return _json_reply([call.to_dict() for call in calls])
        if verb == "GET" and name == "views":
            if "external_id" in query:
                view = self.view_by_external_id(query["external_id"])
                return _json_reply(view) if view else _json_reply({"ok": False, "error": "not_found"}, status=404)
            return _json_reply(self.views)
        if verb == "GET" and name.startswith("views/"):
            view = self.views.get(name[len("views/") :])
            return _json_reply(view) if view else _json_reply({"ok": False, "error": "not_found"}, status=404)
        if verb == "GET" and name == "messages":
            return _json_reply(self.messages)
        if verb == "POST" and name == "reset":
            self.reset()
            return _json_reply({"ok": True})
        if verb == "POST" and name == "fail_next":
            try:
                self.fail_next(
                    str(data["method"]),
                    status=int(data.get("status", 429)),
                    retry_after=int(data.get("retry_after", 1)),
                    count=int(data.get("count", 1)),
                )
            except (KeyError, TypeError, ValueError) as exc:
                return _json_reply({"ok": False, "error": "invalid_arguments", "detail": str(exc)}, status=400)
            return _json_reply({"ok": True})
        if verb == "POST" and name == "trigger":
            trigger_id = self.issue_trigger(view_id=data.get("view_id"), user_id=data.get("user_id"))
            return _json_reply({"ok": True, "trigger_id": trigger_id})
        if verb == "POST" and name == "response_url":
            url = self.issue_response_url(channel_id=data.get("channel_id"), user_id=data.get("user_id"))
            return _json_reply({"ok": True, "response_url": url})
        return _json_reply({"ok": False, "error": "not_found"}, status=404)

    def _record(self, method: str, params: JsonDict, error: str | None) -> None:
        """Append a Call and wake wait_for()."""
        with self._changed:
            self._calls.append(Call(method, copy.deepcopy(params), error is None, error, time.monotonic(), time.time()))
            self._changed.notify_all()

    def _take_failure(self, method: str) -> _FailRule | None:
        """Consume one injected failure for ``method`` if any is pending."""
        with self._lock:
            rule = self._fail_rules.get(method)
            if rule is None:
                return None
            rule.remaining -= 1
            if rule.remaining <= 0:
                del self._fail_rules[method]
            return rule

    # -- Web API ----------------------------------------------------------------------

    def _api(
        self, method: str, headers: dict[str, str], query: dict[str, str], content_type: str, body: bytes
    ) -> _Reply:
        """Answer POST /api/<method> like Slack: HTTP 200 with ok/error, 429 when limited."""
        try:
            params = {**query, **_parse_body(content_type, body)}
        except (ValueError, UnicodeDecodeError):
            self._record(method, {}, "invalid_json")
            return _json_reply({"ok": False, "error": "invalid_json"})
        token = params.pop("token", None)
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            token = authorization[len("bearer ") :].strip()
        if not token:
            error: str | None = "not_authed"
        elif not secrets.compare_digest(str(token).encode(), self.bot_token.encode()):
            error = "invalid_auth"
        else:
            error = None
        if error is not None:
            self._record(method, params, error)
            return _json_reply({"ok": False, "error": error})
        rule = self._take_failure(method)
        if rule is not None:
            error = "ratelimited" if rule.status == 429 else "fatal_error"
            self._record(method, params, error)
            return _json_reply({"ok": False, "error": error}, rule.status, {"Retry-After": str(rule.retry_after)})
        handler = self._methods.get(method)
        try:
            if handler is None:
                raise SlackError("unknown_method")
            with self._lock:
                result = handler(self._decode_json_fields(params))
        except SlackError as exc:
            self._record(method, params, exc.error)
            answer: JsonDict = {"ok": False, "error": exc.error}
            if exc.detail:
                answer["response_metadata"] = {"messages": [exc.detail]}
            return _json_reply(answer)
        self._record(method, params, None)
        return _json_reply({"ok": True, **result})

    @staticmethod
    def _decode_json_fields(params: JsonDict) -> JsonDict:
        """Form-encoded calls carry view/blocks as JSON strings: decode them."""
        decoded = dict(params)
        for name in _JSON_FIELDS:
            value = decoded.get(name)
            if isinstance(value, str) and value.strip():
                try:
                    decoded[name] = json.loads(value)
                except ValueError as exc:
                    error = "invalid_blocks" if name == "blocks" else "invalid_arguments"
                    raise SlackError(error, f"[ERROR] failed to parse {name} as JSON") from exc
        return decoded

    def _next_ts(self) -> str:
        """A unique Slack-style message timestamp."""
        self._counter += 1
        return f"{int(time.time())}.{self._counter:06d}"

    def _check_trigger(self, params: JsonDict) -> _Trigger:
        """Validate a trigger_id without consuming it."""
        trigger_id = params.get("trigger_id") or params.get("interactivity_pointer")
        if not trigger_id:
            raise SlackError("invalid_arguments", "[ERROR] missing required field: trigger_id")
        trigger = self._triggers.get(str(trigger_id))
        if trigger is None:
            raise SlackError("invalid_trigger_id")
        if trigger.used:
            raise SlackError("exchanged_trigger_id")
        if time.monotonic() - trigger.issued_at > self.trigger_ttl:
            raise SlackError("expired_trigger_id")
        return trigger

    @staticmethod
    def _check_view(params: JsonDict) -> JsonDict:
        """Validate the ``view`` argument the way Slack's schema check would."""
        view = params.get("view")
        if view is None or view == "":
            raise SlackError("invalid_arguments", "[ERROR] missing required field: view")
        if not isinstance(view, dict):
            raise SlackError("invalid_arguments", "[ERROR] must be an object [json-pointer:/view]")
        if len(json.dumps(view).encode("utf-8")) > MAX_VIEW_BYTES:
            raise SlackError("view_too_large")
        if view.get("type") != "modal":
            raise SlackError("invalid_arguments", "[ERROR] must be 'modal' [json-pointer:/view/type]")
        title = view.get("title")
        if not isinstance(title, dict) or not isinstance(title.get("text"), str):
            raise SlackError("invalid_arguments", "[ERROR] missing required field: title [json-pointer:/view]")
        if len(title["text"]) > MAX_TITLE_CHARS:
            raise SlackError(
                "invalid_arguments", "[ERROR] must be less than 25 characters [json-pointer:/view/title/text]"
            )
        if not isinstance(view.get("blocks"), list):
            raise SlackError("invalid_arguments", "[ERROR] missing required field: blocks [json-pointer:/view]")
        if len(str(view.get("external_id") or "")) > MAX_EXTERNAL_ID_CHARS:
            raise SlackError(
                "invalid_arguments", "[ERROR] must be at most 255 characters [json-pointer:/view/external_id]"
            )
        return view

    def _build_view(
        self, view: JsonDict, *, view_id: str, external_id: str, root_view_id: str, previous_view_id: str | None
    ) -> JsonDict:
        """The stored/returned view: the caller's definition plus Slack's fields."""
        return {
            "id": view_id,
            "team_id": self.team_id,
            "type": "modal",
            "title": copy.deepcopy(view["title"]),
            "submit": copy.deepcopy(view.get("submit")),
            "close": copy.deepcopy(view.get("close")),
            "blocks": copy.deepcopy(view["blocks"]),
            "private_metadata": str(view.get("private_metadata") or ""),
            "callback_id": str(view.get("callback_id") or ""),
            "external_id": external_id,
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "clear_on_close": _truthy(view.get("clear_on_close", False)),
            "notify_on_close": _truthy(view.get("notify_on_close", False)),
            "submit_disabled": _truthy(view.get("submit_disabled", False)),
            "root_view_id": root_view_id,
            "previous_view_id": previous_view_id,
            "app_id": self.app_id,
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }

    def _new_view_id(self) -> str:
        """A fresh view id: "V" + counter."""
        self._counter += 1
        return f"V{self._counter:08d}"

    def _store_view(self, stored: JsonDict, old_external_id: str = "") -> None:
        """Save a view and keep the external_id index in step."""
        if old_external_id and old_external_id != stored["external_id"]:
            self._by_external_id.pop(old_external_id, None)
        self._views[stored["id"]] = stored
        if stored["external_id"]:
            self._by_external_id[stored["external_id"]] = stored["id"]

    def _views_open(self, params: JsonDict) -> JsonDict:
        """views.open: exchange a live trigger for a new root modal."""
        trigger = self._check_trigger(params)
        view = self._check_view(params)
        external_id = str(view.get("external_id") or "")
        if external_id and external_id in self._by_external_id:
            raise SlackError("duplicate_external_id")
        trigger.used = True
        view_id = self._new_view_id()
        stored = self._build_view(
            view, view_id=view_id, external_id=external_id, root_view_id=view_id, previous_view_id=None
        )
        self._store_view(stored)
        self._stacks[view_id] = [view_id]
        return {"view": copy.deepcopy(stored)}

    def _views_push(self, params: JsonDict) -> JsonDict:
        """views.push: exchange a trigger from inside a modal for a view on its stack."""
        trigger = self._check_trigger(params)
        view = self._check_view(params)
        source = self._views.get(trigger.view_id or "")
        if source is None:
            raise SlackError("not_found")
        stack = self._stacks.setdefault(source["root_view_id"], [source["root_view_id"]])
        if len(stack) >= MAX_VIEW_STACK:
            raise SlackError("push_limit_reached")
        external_id = str(view.get("external_id") or "")
        if external_id and external_id in self._by_external_id:
            raise SlackError("duplicate_external_id")
        trigger.used = True
        view_id = self._new_view_id()
        stored = self._build_view(
            view,
            view_id=view_id,
            external_id=external_id,
            root_view_id=source["root_view_id"],
            previous_view_id=stack[-1],
        )
        self._store_view(stored)
        stack.append(view_id)
        return {"view": copy.deepcopy(stored)}

    def _views_update(self, params: JsonDict) -> JsonDict:
        """views.update: replace a view by view_id or external_id, guarded by hash."""
        view_id = params.get("view_id")
        external_id = params.get("external_id")
        if not view_id and not external_id:
            raise SlackError("invalid_arguments", "[ERROR] exactly one of view_id or external_id is required")
        if view_id:
            current = self._views.get(str(view_id))
        else:
            current = self._views.get(self._by_external_id.get(str(external_id), ""))
        if current is None:
            raise SlackError("not_found")
        expected_hash = params.get("hash")
        if expected_hash and expected_hash != current["hash"]:
            raise SlackError("hash_conflict")
        view = self._check_view(params)
        new_external_id = str(view.get("external_id") or current["external_id"])
        owner = self._by_external_id.get(new_external_id)
        if new_external_id and owner is not None and owner != current["id"]:
            raise SlackError("duplicate_external_id")
        stored = self._build_view(
            view,
            view_id=current["id"],
            external_id=new_external_id,
            root_view_id=current["root_view_id"],
            previous_view_id=current["previous_view_id"],
        )
        self._store_view(stored, old_external_id=current["external_id"])
        return {"view": copy.deepcopy(stored)}

    def _message_content(self, params: JsonDict) -> JsonDict:
        """text/blocks/attachments of a chat.* call; no_text / invalid_blocks otherwise."""
        if not _has_content(params):
            raise SlackError("no_text")
        blocks = params.get("blocks")
        if blocks is not None and not isinstance(blocks, list):
            raise SlackError("invalid_blocks")
        content: JsonDict = {"text": str(params.get("text") or "")}
        if blocks is not None:
            content["blocks"] = copy.deepcopy(blocks)
        if params.get("attachments"):
            content["attachments"] = copy.deepcopy(params["attachments"])
        return content

    def _chat_post_message(self, params: JsonDict) -> JsonDict:
        """chat.postMessage: store and echo the message with a fresh ts."""
        channel = params.get("channel")
        if not channel:
            raise SlackError("channel_not_found")
        content = self._message_content(params)
        ts = self._next_ts()
        message: JsonDict = {
            "type": "message",
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "ts": ts,
            **content,
        }
        if params.get("thread_ts"):
            message["thread_ts"] = str(params["thread_ts"])
        self._messages.append({"kind": "message", "channel": str(channel), **copy.deepcopy(message)})
        return {"channel": str(channel), "ts": ts, "message": message}

    def _chat_update(self, params: JsonDict) -> JsonDict:
        """chat.update: replace the content of a message this fake posted."""
        channel, ts = params.get("channel"), params.get("ts")
        if not channel:
            raise SlackError("channel_not_found")
        target = next(
            (
                message
                for message in self._messages
                if message["kind"] == "message" and message["channel"] == channel and message["ts"] == ts
            ),
            None,
        )
        if target is None:
            raise SlackError("message_not_found")
        content = self._message_content(params)
        for key in ("text", "blocks", "attachments"):
            target.pop(key, None)
        target.update(content)
        target["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        message = {key: copy.deepcopy(value) for key, value in target.items() if key not in {"kind", "channel"}}
        return {"channel": str(channel), "ts": str(ts), "text": content["text"], "message": message}

    def _chat_post_ephemeral(self, params: JsonDict) -> JsonDict:
        """chat.postEphemeral: store an ephemeral message, answer its message_ts."""
        channel, user = params.get("channel"), params.get("user")
        if not channel:
            raise SlackError("channel_not_found")
        if not user:
            raise SlackError("user_not_in_channel")
        content = self._message_content(params)
        ts = self._next_ts()
        self._messages.append({"kind": "ephemeral", "channel": str(channel), "user": str(user), "ts": ts, **content})
        return {"message_ts": ts}

    def _auth_test(self, params: JsonDict) -> JsonDict:
        """auth.test: who the bot token belongs to."""
        return {
            "url": f"{self.base_url}/",
            "team": "Fake Workspace",
            "user": "fake-bot",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "is_enterprise_install": False,
        }

    # -- response_url -------------------------------------------------------------------

    def _response_url(self, token: str, content_type: str, body: bytes) -> _Reply:
        """POST /response/<token>: up to 5 uses within response_url_ttl, then 404."""
        url = f"{self.base_url}/response/{token}"
        try:
            payload = _parse_body(content_type or "application/json", body)
            if "payload" in payload and isinstance(payload["payload"], str):
                payload = json.loads(payload["payload"])
            if not isinstance(payload, dict):
                raise ValueError("payload must be an object")
        except (ValueError, UnicodeDecodeError):
            self._record("response_url", {"response_url": url}, "invalid_payload")
            return _text_reply("invalid_payload", 400)
        recorded = {**payload, "response_url": url}
        rule = self._take_failure("response_url")
        if rule is not None:
            error = "ratelimited" if rule.status == 429 else "fatal_error"
            self._record("response_url", recorded, error)
            reply = _text_reply(error, rule.status)
            reply.headers["Retry-After"] = str(rule.retry_after)
            return reply
        with self._lock:
            entry = self._response_urls.get(token)
            if entry is None:
                error_reply: tuple[str, int] | None = ("no_service", 404)
            elif time.monotonic() - entry.issued_at > self.response_url_ttl:
                error_reply = ("expired_url", 404)
            elif entry.uses >= RESPONSE_URL_MAX_USES:
                error_reply = ("used_url", 404)
            elif not _has_content(payload) and not _truthy(payload.get("delete_original")):
                error_reply = ("no_text", 400)
            else:
                error_reply = None
                entry.uses += 1
                self._messages.append(
                    {
                        "kind": "response_url",
                        "response_url": url,
                        "channel": entry.channel_id,
                        "user": entry.user_id,
                        "ts": self._next_ts(),
                        "use": entry.uses,
                        "text": str(payload.get("text") or ""),
                        "blocks": copy.deepcopy(payload.get("blocks")),
                        "response_type": payload.get("response_type", "ephemeral"),
                        "replace_original": _truthy(payload.get("replace_original", False)),
                        "delete_original": _truthy(payload.get("delete_original", False)),
                    }
                )
        if error_reply is not None:
            self._record("response_url", recorded, error_reply[0])
            return _text_reply(*error_reply)
        self._record("response_url", recorded, None)
        return _text_reply("ok", 200)
