"""A fake Slack Web API, OAuth consent and response_url server on loopback, for tests and the demo.

`FakeSlack` is a real HTTP server (stdlib ``ThreadingHTTPServer``, no Django) that a
slack_sdk ``WebClient(base_url=fake.api_url)`` or ``WebhookClient(response_url)`` talks
to exactly as it would talk to Slack: HTTP 200 with ``{"ok": ..., "error": ...}`` for Web
API outcomes, HTTP 429 with ``Retry-After`` when rate limited.

It serves many workspaces. Each gets its own bot user and tokens through a real OAuth
flow (``GET /oauth/v2/authorize`` then ``oauth.v2.access``, or `FakeSlack.install` in
unit tests), and a token only reaches what belongs to its workspace. The optional
``bot_token`` is the single-workspace token (an app configured with one token, like
Bolt's ``App(token=...)``): it is valid for every workspace and passes every ownership
check.

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
  ``user``, ``team_id``, ``user_id``, ``bot_id``, ``enterprise_id``,
  ``is_enterprise_install``; auth.revoke ``revoked``.
- oauth.v2.access: client credentials by HTTP Basic or as ``client_id`` /
  ``client_secret`` parameters (``invalid_client_id``, ``bad_client_secret``); a code is
  single use (``invalid_code``, ``code_already_used``) and the ``redirect_uri`` must match
  the one of the consent (``bad_redirect_uri``); the answer carries ``access_token``,
  ``token_type: "bot"``, ``scope``, ``bot_user_id``, ``app_id``, ``team``, ``enterprise``,
  ``authed_user`` and ``is_enterprise_install`` (``team`` is null for an org-wide install).
- Token rotation: access tokens ``xoxe.xoxb-1-...`` expire after ``expires_in`` seconds
  (``token_expired``); ``grant_type=refresh_token`` answers a new access token and a new
  refresh token, the old refresh token being revoked (``invalid_refresh_token``); other
  grant types are ``invalid_grant_type``.
- An uninstall revokes every token of the workspace (``token_revoked``).
- A token of another workspace than the trigger's is ``invalid_trigger_id``, than the
  view's ``not_found``, than the channel's ``channel_not_found``, than the message's
  ``message_not_found``. An org-wide install's token reaches every workspace of its
  enterprise.
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
- Message ``metadata``: chat.postMessage and chat.update keep a ``metadata`` object whose
  ``event_type`` is letters, digits, ``_`` and ``-`` and whose ``event_payload`` is an
  object, and echo it in the message; other metadata is ignored (Slack documents an
  ``invalid_metadata_schema`` warning). Slack's block_actions reference does not say
  whether a click's ``message`` carries the metadata: `message_click` includes it unless
  told not to, so tests can cover both.
- Workspaces: a channel registered to a workspace (``add_workspace(channels=...)``)
  belongs to it; a channel never registered is accepted from any workspace's token, so
  tests that never register channels keep working. A trigger or response_url issued
  without ``team_id`` belongs to no workspace and any token may use it. A view or
  message belongs to the workspace of its trigger or channel, else to the workspace of
  the token that made it (none for the single-workspace token). ``external_id`` is unique
  per workspace.
- The consent screen answers at once: ``GET /oauth/v2/authorize`` redirects to
  ``redirect_uri?code=...&state=...`` (``&fake_consent=deny``: ``?error=access_denied``;
  ``&fake_enterprise=1``: an org-wide install on the workspace's enterprise). Without
  ``team`` the first registered workspace consents; an unknown ``team`` is registered on
  the fly. A missing or unknown ``client_id``, a missing ``redirect_uri`` with no default
  ``redirect_uri`` configured, or no scope at all answers an HTML 400 page naming the error.
- A re-install issues a new bot token; the older bot tokens of the workspace keep
  working until revoked.
- A code lives 10 minutes. An oauth.v2.access refused for its client, grant type or
  redirect_uri leaves the code unused. The old access token stays valid after a refresh
  until it expires; auth.revoke kills the token with its refresh token and every token
  rotated from the same install.
- An org-wide install's token belongs to the workspace it was installed from (auth.test
  names that workspace, ``Call.team_id`` records it).
- The ``incoming-webhook`` scope adds ``incoming_webhook`` to the install, with a URL this
  fake serves (``/services/...``): it posts in the workspace's first registered channel
  and answers 403 ``invalid_token`` once the install is revoked, 404 ``no_service`` for a
  URL it never issued.

The ``/_fake/*`` endpoints (inspection, reset, fault injection, trigger and response_url
issuing, workspaces, installs, token inspection and revocation) exist so a demo or a
SlackSender in another process can drive the fake. They are unauthenticated; the server
binds to loopback only.
"""

from __future__ import annotations

import base64
import binascii
import copy
import html
import ipaddress
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from example_project.fake_slack.accounts import Accounts, Principal, SlackError, Workspace

__all__ = ["Call", "FakeSlack", "SlackError", "Workspace"]

if TYPE_CHECKING:
    from example_project.fake_slack.client import SlackSender

MAX_VIEW_STACK = 3
MAX_VIEW_BYTES = 250 * 1024
MAX_TITLE_CHARS = 24
MAX_EXTERNAL_ID_CHARS = 255
RESPONSE_URL_MAX_USES = 5
DEFAULT_CLIENT_ID = "1111111111.2222222222"
DEFAULT_CLIENT_SECRET = "fake-slack-client-secret"
_REDACTED = "(redacted)"
_SECRET_PARAMS = ("client_secret", "code", "refresh_token")
_JSON_FIELDS = ("view", "blocks", "attachments", "metadata")
_METADATA_EVENT_TYPE = re.compile(r"[A-Za-z0-9_-]+")

JsonDict = dict[str, Any]


@dataclass(frozen=True)
class Call:
    """One recorded call, as the fake answered it.

    ``method`` is the Web API method name ("views.open"), "response_url" or
    "incoming_webhook"; ``params``
    are the call's arguments without the token (for response_url: the posted JSON plus
    the ``response_url`` itself; for oauth.v2.access the client secret, code and refresh
    token are redacted); ``at`` is time.monotonic(), ``wall`` time.time(); ``team_id`` is
    the workspace of the token used (None for the single-workspace token or a refused
    token; for oauth.v2.access the workspace installed or refreshed; for response_url the
    URL's workspace).
    """

    method: str
    params: JsonDict
    ok: bool
    error: str | None
    at: float
    wall: float
    team_id: str | None = None

    def to_dict(self) -> JsonDict:
        """Return a JSON-ready copy."""
        return asdict(self)


@dataclass
class _Trigger:
    issued_at: float
    view_id: str | None
    user_id: str | None
    team_id: str | None = None
    used: bool = False


@dataclass
class _ResponseUrl:
    issued_at: float
    channel_id: str | None
    user_id: str | None
    team_id: str | None = None
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


def _html_reply(title: str, status: int, message: str = "", headers: dict[str, str] | None = None) -> _Reply:
    """A small HTML page, as the consent screen answers a browser."""
    page = (
        f"<!DOCTYPE html><html><head><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p></body></html>"
    )
    return _Reply(status, page.encode("utf-8"), content_type="text/html; charset=utf-8", headers=headers or {})


def _with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` appended to its query string."""
    return f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"


def _scope_list(value: Any) -> str:
    """A comma-separated scope string from a parameter or a sequence of scopes."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    return ",".join(item.strip() for item in items if item and item.strip())


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
    """A loopback HTTP server that plays Slack's Web API, OAuth and response_url endpoints."""

    def __init__(
        self,
        *,
        signing_secret: str,
        bot_token: str | None = None,
        trigger_ttl: float = 3.0,
        host: str = "127.0.0.1",
        port: int = 0,
        response_url_ttl: float = 1800.0,
        team_id: str = "T0FAKE001",
        app_id: str = "A0APP0001",
        client_id: str = DEFAULT_CLIENT_ID,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        token_rotation: bool = False,
        token_ttl: float = 43200.0,
        redirect_uri: str | None = None,
    ) -> None:
        """Configure the fake; nothing listens until start().

        ``bot_token`` is the single-workspace token (valid for every workspace);
        ``team_id`` is the workspace registered from the start (the one that token and
        an authorize request without ``team`` act for); ``redirect_uri`` is the app's
        configured default when an authorize request names none.
        """
        if not ipaddress.ip_address(host).is_loopback or ":" in host:
            raise ValueError(f"FakeSlack binds to an IPv4 loopback address only, not {host!r}")
        if token_ttl <= 0:
            raise ValueError("token_ttl must be positive")
        self.signing_secret = signing_secret
        self.bot_token = bot_token
        self.trigger_ttl = trigger_ttl
        self.response_url_ttl = response_url_ttl
        self.team_id = team_id
        self.app_id = app_id
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_rotation = token_rotation
        self.token_ttl = token_ttl
        self.redirect_uri = redirect_uri
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
        self._view_teams: dict[str, str | None] = {}
        self._stacks: dict[str, list[str]] = {}
        self._messages: list[JsonDict] = []
        self._triggers: dict[str, _Trigger] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._fail_rules: dict[str, _FailRule] = {}
        self._legacy_revoked = False
        self._accounts = Accounts(
            client_id=client_id,
            client_secret=client_secret,
            app_id=app_id,
            token_rotation=token_rotation,
            token_ttl=token_ttl,
        )
        self._accounts.add_workspace(team_id, name="Fake Workspace", bot_user_id=self.bot_user_id, bot_id=self.bot_id)
        self._methods: dict[str, Callable[[JsonDict, Principal], JsonDict]] = {
            "views.open": self._views_open,
            "views.update": self._views_update,
            "views.push": self._views_push,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "auth.test": self._auth_test,
            "auth.revoke": self._auth_revoke,
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
        with self._lock:
            self._accounts.base_url = self.base_url

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

    @property
    def authorize_url(self) -> str:
        """The consent screen, for ``AuthorizeUrlGenerator(authorization_url=...)``."""
        return f"{self.base_url}/oauth/v2/authorize"

    # -- workspaces and installs ------------------------------------------------------

    def add_workspace(
        self,
        team_id: str,
        *,
        enterprise_id: str | None = None,
        name: str | None = None,
        channels: Iterable[str] = (),
    ) -> Workspace:
        """Register a workspace (bot user and bot id of its own); known: add channels to it."""
        with self._lock:
            return self._accounts.add_workspace(team_id, enterprise_id=enterprise_id, name=name, channels=channels)

    def workspace(self, team_id: str) -> Workspace:
        """A registered workspace; LookupError if unknown."""
        with self._lock:
            workspace = self._accounts.workspace(team_id)
        if workspace is None:
            raise LookupError(f"no workspace {team_id}")
        return workspace

    @property
    def workspaces(self) -> list[Workspace]:
        """Every registered workspace, in registration order."""
        with self._lock:
            return self._accounts.workspaces()

    def install(
        self,
        team_id: str,
        *,
        scopes: Iterable[str] | str = ("commands", "chat:write"),
        user_scopes: Iterable[str] | str = (),
        enterprise: bool = False,
    ) -> JsonDict:
        """Install the app without the browser: the oauth.v2.access answer, tokens included.

        An unknown workspace is registered first; ``enterprise`` makes an org-wide
        install on the workspace's enterprise.
        """
        with self._lock:
            return self._accounts.install(
                team_id,
                scopes=_scope_list(scopes),
                user_scopes=_scope_list(user_scopes),
                is_enterprise_install=enterprise,
            )

    def tokens(self, team_id: str, *, kind: str = "bot") -> list[str]:
        """The workspace's live (not revoked, not expired) tokens, oldest first."""
        if kind not in ("bot", "user"):
            raise ValueError("kind is 'bot' or 'user'")
        with self._lock:
            return self._accounts.live_tokens(team_id, "bot" if kind == "bot" else "user")

    def token_of(self, team_id: str) -> str:
        """The workspace's newest live bot token; LookupError if it has none."""
        live = self.tokens(team_id)
        if not live:
            raise LookupError(f"no live bot token for {team_id}")
        return live[-1]

    def revoke_workspace(self, team_id: str) -> int:
        """Uninstall the app from a workspace: every token of it dies; returns how many."""
        with self._lock:
            return self._accounts.revoke_team(team_id)

    def expire_tokens(self, team_id: str) -> int:
        """Make the workspace's expiring access tokens expire now; returns how many."""
        with self._lock:
            return self._accounts.expire(team_id)

    def refreshes(self, team_id: str) -> int:
        """How many refresh_token exchanges the workspace has made."""
        with self._lock:
            return self._accounts.refreshes(team_id)

    # -- issuing what Slack would put in a payload ----------------------------------

    def issue_trigger(
        self, *, view_id: str | None = None, user_id: str | None = None, team_id: str | None = None
    ) -> str:
        """Issue a fresh trigger_id now; ``view_id`` marks an interaction inside that modal.

        With ``team_id`` only a token of that workspace (or the single-workspace token)
        may exchange it.
        """
        with self._lock:
            self._counter += 1
            trigger_id = f"{self._counter}.{secrets.randbelow(10**10):010d}.{secrets.token_hex(16)}"
            self._triggers[trigger_id] = _Trigger(time.monotonic(), view_id, user_id, team_id)
            return trigger_id

    def issue_response_url(
        self, *, channel_id: str | None = None, user_id: str | None = None, team_id: str | None = None
    ) -> str:
        """Issue a fresh response_url served by this fake (for workspace ``team_id``)."""
        token = secrets.token_urlsafe(18)
        with self._lock:
            self._response_urls[token] = _ResponseUrl(time.monotonic(), channel_id, user_id, team_id)
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

    def message_click(
        self,
        *,
        channel: str,
        ts: str,
        action_id: str,
        user_id: str = "U0USER001",
        include_metadata: bool = True,
    ) -> JsonDict:
        """The ``block_actions`` payload of a click on element ``action_id`` of a message this fake posted.

        As Slack sends it: the element with its ``block_id``, the message's full state,
        a fresh trigger_id and response_url of the message's workspace. The message's
        ``metadata`` is left out with ``include_metadata=False``. KeyError when there is
        no such message or element.
        """
        with self._lock:
            message = next(
                (m for m in self._messages if m["kind"] == "message" and m["channel"] == channel and m["ts"] == ts),
                None,
            )
            if message is None:
                raise KeyError(f"no message {ts} in {channel}")
            message = copy.deepcopy(message)
        block, element = next(
            (
                (block, element)
                for block in message.get("blocks") or ()
                for element in [*(block.get("elements") or ()), block.get("accessory") or {}]
                if isinstance(element, dict) and element.get("action_id") == action_id
            ),
            (None, None),
        )
        if block is None or element is None:
            raise KeyError(f"message {ts} has no element {action_id!r}")
        team_id = message.pop("team_id")
        hidden = {"kind", "channel"} | (set() if include_metadata else {"metadata"})
        action: JsonDict = {
            "type": element.get("type", "button"),
            "action_id": action_id,
            "block_id": block.get("block_id", ""),
            "action_ts": f"{time.time():.6f}",
        }
        if "text" in element:
            action["text"] = element["text"]
        if "value" in element:
            action["value"] = element["value"]
        return {
            "type": "block_actions",
            "user": {"id": user_id, "username": "fake.user", "name": "fake.user", "team_id": team_id},
            "api_app_id": self.app_id,
            "team": {"id": team_id, "domain": "fake-team"},
            "enterprise": None,
            "is_enterprise_install": False,
            "trigger_id": self.issue_trigger(user_id=user_id, team_id=team_id),
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": False},
            "channel": {"id": channel, "name": "fake-channel"},
            "message": {key: value for key, value in message.items() if key not in hidden},
            "state": {"values": {}},
            "response_url": self.issue_response_url(channel_id=channel, user_id=user_id, team_id=team_id),
            "actions": [action],
        }

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

    def view_by_external_id(self, external_id: str, *, team_id: str | None = None) -> JsonDict | None:
        """The current view with this external_id (in workspace ``team_id`` if given), or None."""
        with self._lock:
            for view_id, view in self._views.items():
                if view["external_id"] == external_id and (team_id is None or self._view_teams[view_id] == team_id):
                    return copy.deepcopy(view)
            return None

    @property
    def messages(self) -> list[JsonDict]:
        """Posted messages, ephemeral messages and response_url posts, oldest first."""
        with self._lock:
            return copy.deepcopy(self._messages)

    def reset(self) -> None:
        """Forget calls, views, messages, triggers, response_urls, fault rules, codes, refresh counts.

        Workspaces and the tokens issued to them stay: an installed app keeps working.
        """
        with self._lock:
            self._calls.clear()
            self._views.clear()
            self._view_teams.clear()
            self._accounts.reset()
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
        if path.startswith("/services/") and verb == "POST":
            return self._incoming_webhook(path[len("/services/") :], content_type, body)
        if path.startswith("/_fake/"):
            return self._control(verb, path[len("/_fake/") :], query, content_type, body)
        if path == "/oauth/v2/authorize" and verb == "GET":
            return self._authorize(query)
        return _json_reply({"ok": False, "error": "not_found"}, status=404)

    def _authorize(self, query: dict[str, str]) -> _Reply:
        """GET /oauth/v2/authorize: the user consents at once; 302 back with a code (or a refusal)."""
        client_id = query.get("client_id", "")
        if not client_id or not secrets.compare_digest(client_id.encode(), self.client_id.encode()):
            return _html_reply("invalid_client_id", 400, "The client_id is missing or unknown.")
        given_redirect = query.get("redirect_uri") or None
        redirect_uri = given_redirect or self.redirect_uri
        if not redirect_uri:
            return _html_reply("bad_redirect_uri", 400, "No redirect_uri, and the app configures none.")
        scopes, user_scopes = _scope_list(query.get("scope")), _scope_list(query.get("user_scope"))
        if not scopes and not user_scopes:
            return _html_reply("invalid_scope", 400, "Neither scope nor user_scope names a scope.")
        state = query.get("state", "")
        enterprise = _truthy(query.get("fake_enterprise", ""))
        with self._lock:
            team_id = query.get("team") or (self._accounts.workspaces()[0].team_id)
            try:
                workspace = self._accounts.workspace(team_id) or self._accounts.add_workspace(team_id)
            except ValueError as exc:
                return _html_reply("invalid_team", 400, str(exc))
            if enterprise and not workspace.enterprise_id:
                return _html_reply("invalid_team_for_enterprise_install", 400, f"{team_id} is not in an enterprise.")
            if query.get("fake_consent") == "deny":
                answer = {"error": "access_denied", "state": state}
            else:
                code = self._accounts.issue_code(
                    team_id,
                    scopes=scopes,
                    user_scopes=user_scopes,
                    redirect_uri=given_redirect,
                    is_enterprise_install=enterprise,
                )
                answer = {"code": code, "state": state}
        location = _with_query(redirect_uri, answer)
        return _html_reply("Redirecting", 302, "Back to the app.", headers={"Location": location})

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
                view = self.view_by_external_id(query["external_id"], team_id=query.get("team_id"))
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
            trigger_id = self.issue_trigger(
                view_id=data.get("view_id"), user_id=data.get("user_id"), team_id=data.get("team_id")
            )
            return _json_reply({"ok": True, "trigger_id": trigger_id})
        if verb == "POST" and name == "response_url":
            url = self.issue_response_url(
                channel_id=data.get("channel_id"), user_id=data.get("user_id"), team_id=data.get("team_id")
            )
            return _json_reply({"ok": True, "response_url": url})
        return self._control_accounts(verb, name, query, data)

    def _control_accounts(self, verb: str, name: str, query: dict[str, str], data: JsonDict) -> _Reply:
        """The /_fake/* endpoints for workspaces, installs and tokens."""
        if verb == "GET" and name == "workspaces":
            if "team_id" in query:
                with self._lock:
                    workspace = self._accounts.workspace(query["team_id"])
                if workspace is None:
                    return _json_reply({"ok": False, "error": "team_not_found"}, status=404)
                return _json_reply(workspace.to_dict())
            return _json_reply([workspace.to_dict() for workspace in self.workspaces])
        team_id = str(query.get("team_id") or data.get("team_id") or "")
        if name in {"workspaces", "install", "tokens", "revoke", "expire", "refreshes"} and not team_id:
            return _json_reply({"ok": False, "error": "invalid_arguments", "detail": "team_id is required"}, 400)
        try:
            if verb == "POST" and name == "workspaces":
                channels = data.get("channels") or ()
                if isinstance(channels, str) or not all(isinstance(channel, str) for channel in channels):
                    raise ValueError("channels is a list of channel ids")
                workspace = self.add_workspace(
                    team_id, enterprise_id=data.get("enterprise_id"), name=data.get("name"), channels=channels
                )
                return _json_reply(workspace.to_dict())
            if verb == "POST" and name == "install":
                answer = self.install(
                    team_id,
                    scopes=data.get("scopes", ("commands", "chat:write")),
                    user_scopes=data.get("user_scopes", ()),
                    enterprise=_truthy(data.get("enterprise", False)),
                )
                return _json_reply(answer)
            if verb == "GET" and name == "tokens":
                return _json_reply({"ok": True, "tokens": self.tokens(team_id, kind=query.get("kind", "bot"))})
            if verb == "POST" and name == "revoke":
                return _json_reply({"ok": True, "revoked": self.revoke_workspace(team_id)})
            if verb == "POST" and name == "expire":
                return _json_reply({"ok": True, "expired": self.expire_tokens(team_id)})
            if verb == "GET" and name == "refreshes":
                return _json_reply({"ok": True, "refreshes": self.refreshes(team_id)})
        except (TypeError, ValueError) as exc:
            return _json_reply({"ok": False, "error": "invalid_arguments", "detail": str(exc)}, status=400)
        except SlackError as exc:
            return _json_reply({"ok": False, "error": exc.error, "detail": exc.detail}, status=400)
        return _json_reply({"ok": False, "error": "not_found"}, status=404)

    def _record(self, method: str, params: JsonDict, error: str | None, team_id: str | None = None) -> None:
        """Append a Call and wake wait_for()."""
        with self._changed:
            call = Call(method, copy.deepcopy(params), error is None, error, time.monotonic(), time.time(), team_id)
            self._calls.append(call)
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
        if method == "oauth.v2.access":
            return self._oauth_v2_access(headers, params)
        token = params.pop("token", None)
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            token = authorization[len("bearer ") :].strip()
        try:
            principal = self._authenticate(token)
        except SlackError as exc:
            self._record(method, params, exc.error)
            return _json_reply({"ok": False, "error": exc.error})
        team_id = principal.recorded_team_id
        rule = self._take_failure(method)
        if rule is not None:
            error = "ratelimited" if rule.status == 429 else "fatal_error"
            self._record(method, params, error, team_id)
            return _json_reply({"ok": False, "error": error}, rule.status, {"Retry-After": str(rule.retry_after)})
        handler = self._methods.get(method)
        try:
            if handler is None:
                raise SlackError("unknown_method")
            with self._lock:
                result = handler(self._decode_json_fields(params), principal)
        except SlackError as exc:
            self._record(method, params, exc.error, team_id)
            return _json_reply(self._error_answer(exc))
        self._record(method, params, None, team_id)
        return _json_reply({"ok": True, **result})

    @staticmethod
    def _error_answer(exc: SlackError) -> JsonDict:
        """``{"ok": false, "error": ...}`` with the detail as response_metadata."""
        answer: JsonDict = {"ok": False, "error": exc.error}
        if exc.detail:
            answer["response_metadata"] = {"messages": [exc.detail]}
        return answer

    def _authenticate(self, token: Any) -> Principal:
        """Who a token acts as; SlackError not_authed / invalid_auth / token_revoked / token_expired."""
        if not token:
            raise SlackError("not_authed")
        value = str(token)
        if self.bot_token is not None and secrets.compare_digest(value.encode(), self.bot_token.encode()):
            with self._lock:
                if self._legacy_revoked:
                    raise SlackError("token_revoked")
                workspace = self._accounts.workspace(self.team_id)
            return Principal(
                kind="legacy",
                team_id=self.team_id,
                enterprise_id=workspace.enterprise_id if workspace else None,
                is_enterprise_install=False,
                user_id=self.bot_user_id,
                bot_id=self.bot_id,
                token=value,
            )
        with self._lock:
            return self._accounts.authenticate(value)

    @staticmethod
    def _client_credentials(headers: dict[str, str], params: JsonDict) -> tuple[str | None, str | None]:
        """client_id and client_secret from HTTP Basic, else from the parameters."""
        authorization = headers.get("authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[len("basic ") :].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return None, None
            basic_id, _, basic_secret = decoded.partition(":")
            return basic_id, basic_secret
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        return (str(client_id) if client_id else None), (str(client_secret) if client_secret else None)

    def _oauth_v2_access(self, headers: dict[str, str], params: JsonDict) -> _Reply:
        """oauth.v2.access: exchange a code, or a refresh token, for an installation's tokens."""
        recorded = {key: (_REDACTED if key in _SECRET_PARAMS else value) for key, value in params.items()}
        grant_type = str(params.get("grant_type") or "authorization_code")
        code, refresh_token = params.get("code"), params.get("refresh_token")
        client_id, client_secret = self._client_credentials(headers, params)
        with self._lock:
            if grant_type == "refresh_token":
                team_id = self._accounts.refresh_team(str(refresh_token or ""))
            else:
                team_id = self._accounts.code_team(str(code or ""))
            try:
                self._accounts.check_client(client_id, client_secret)
                rule = self._take_failure("oauth.v2.access")
                if rule is not None:
                    error = "ratelimited" if rule.status == 429 else "fatal_error"
                    self._record("oauth.v2.access", recorded, error, team_id)
                    limited = {"ok": False, "error": error}
                    return _json_reply(limited, rule.status, {"Retry-After": str(rule.retry_after)})
                if grant_type == "refresh_token":
                    answer = self._accounts.refresh(str(refresh_token or ""))
                elif grant_type == "authorization_code":
                    redirect_uri = params.get("redirect_uri")
                    answer = self._accounts.exchange_code(
                        str(code or ""),
                        redirect_uri=str(redirect_uri) if redirect_uri else None,
                        default_redirect_uri=self.redirect_uri,
                    )
                else:
                    raise SlackError("invalid_grant_type")
            except SlackError as exc:
                self._record("oauth.v2.access", recorded, exc.error, team_id)
                return _json_reply(self._error_answer(exc))
            self._record("oauth.v2.access", recorded, None, team_id)
        return _json_reply(answer)

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

    def _check_trigger(self, params: JsonDict, principal: Principal) -> _Trigger:
        """Validate a trigger_id without consuming it; another workspace's is invalid_trigger_id."""
        trigger_id = params.get("trigger_id") or params.get("interactivity_pointer")
        if not trigger_id:
            raise SlackError("invalid_arguments", "[ERROR] missing required field: trigger_id")
        trigger = self._triggers.get(str(trigger_id))
        if trigger is None or not self._accounts.covers(principal, trigger.team_id):
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
        self,
        view: JsonDict,
        *,
        view_id: str,
        external_id: str,
        root_view_id: str,
        previous_view_id: str | None,
        team_id: str | None,
    ) -> JsonDict:
        """The stored/returned view: the caller's definition plus Slack's fields."""
        workspace = self._accounts.workspace(team_id) or self._accounts.workspace(self.team_id)
        installed_team = workspace.team_id if workspace else self.team_id
        return {
            "id": view_id,
            "team_id": installed_team,
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
            "app_installed_team_id": installed_team,
            "bot_id": workspace.bot_id if workspace else self.bot_id,
        }

    def _new_view_id(self) -> str:
        """A fresh view id: "V" + counter."""
        self._counter += 1
        return f"V{self._counter:08d}"

    def _store_view(self, stored: JsonDict, team_id: str | None) -> None:
        """Save a view with the workspace it belongs to."""
        self._views[stored["id"]] = stored
        self._view_teams[stored["id"]] = team_id

    def _external_id_taken(self, external_id: str, team_id: str | None, *, other_than: str = "") -> bool:
        """Whether another view of the same workspace already has this external_id."""
        if not external_id:
            return False
        return any(
            view["external_id"] == external_id
            and view_id != other_than
            and (team_id is None or self._view_teams[view_id] in (None, team_id))
            for view_id, view in self._views.items()
        )

    def _reachable_view(self, principal: Principal, *, view_id: str = "", external_id: str = "") -> JsonDict | None:
        """The view the caller names, if its token reaches the view's workspace."""
        if view_id:
            candidates = [self._views[view_id]] if view_id in self._views else []
        elif not external_id:
            return None
        else:
            candidates = [view for view in self._views.values() if view["external_id"] == external_id]
        reachable = [view for view in candidates if self._accounts.covers(principal, self._view_teams[view["id"]])]
        own = [view for view in reachable if self._view_teams[view["id"]] == principal.team_id]
        found = own or reachable
        return found[0] if found else None

    def _views_open(self, params: JsonDict, principal: Principal) -> JsonDict:
        """views.open: exchange a live trigger for a new root modal."""
        trigger = self._check_trigger(params, principal)
        view = self._check_view(params)
        team_id = trigger.team_id or principal.recorded_team_id
        external_id = str(view.get("external_id") or "")
        if self._external_id_taken(external_id, team_id):
            raise SlackError("duplicate_external_id")
        trigger.used = True
        view_id = self._new_view_id()
        stored = self._build_view(
            view,
            view_id=view_id,
            external_id=external_id,
            root_view_id=view_id,
            previous_view_id=None,
            team_id=team_id,
        )
        self._store_view(stored, team_id)
        self._stacks[view_id] = [view_id]
        return {"view": copy.deepcopy(stored)}

    def _views_push(self, params: JsonDict, principal: Principal) -> JsonDict:
        """views.push: exchange a trigger from inside a modal for a view on its stack."""
        trigger = self._check_trigger(params, principal)
        view = self._check_view(params)
        source = self._reachable_view(principal, view_id=trigger.view_id or "")
        if source is None:
            raise SlackError("not_found")
        team_id = self._view_teams[source["id"]] or trigger.team_id or principal.recorded_team_id
        stack = self._stacks.setdefault(source["root_view_id"], [source["root_view_id"]])
        if len(stack) >= MAX_VIEW_STACK:
            raise SlackError("push_limit_reached")
        external_id = str(view.get("external_id") or "")
        if self._external_id_taken(external_id, team_id):
            raise SlackError("duplicate_external_id")
        trigger.used = True
        view_id = self._new_view_id()
        stored = self._build_view(
            view,
            view_id=view_id,
            external_id=external_id,
            root_view_id=source["root_view_id"],
            previous_view_id=stack[-1],
            team_id=team_id,
        )
        self._store_view(stored, team_id)
        stack.append(view_id)
        return {"view": copy.deepcopy(stored)}

    def _views_update(self, params: JsonDict, principal: Principal) -> JsonDict:
        """views.update: replace a view by view_id or external_id, guarded by hash."""
        view_id = params.get("view_id")
        external_id = params.get("external_id")
        if not view_id and not external_id:
            raise SlackError("invalid_arguments", "[ERROR] exactly one of view_id or external_id is required")
        if view_id:
            current = self._reachable_view(principal, view_id=str(view_id))
        else:
            current = self._reachable_view(principal, external_id=str(external_id))
        if current is None:
            raise SlackError("not_found")
        expected_hash = params.get("hash")
        if expected_hash and expected_hash != current["hash"]:
            raise SlackError("hash_conflict")
        view = self._check_view(params)
        team_id = self._view_teams[current["id"]]
        new_external_id = str(view.get("external_id") or current["external_id"])
        if self._external_id_taken(new_external_id, team_id, other_than=current["id"]):
            raise SlackError("duplicate_external_id")
        stored = self._build_view(
            view,
            view_id=current["id"],
            external_id=new_external_id,
            root_view_id=current["root_view_id"],
            previous_view_id=current["previous_view_id"],
            team_id=team_id,
        )
        self._store_view(stored, team_id)
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
        metadata = params.get("metadata")
        if (
            isinstance(metadata, dict)
            and isinstance(metadata.get("event_type"), str)
            and _METADATA_EVENT_TYPE.fullmatch(metadata["event_type"])
            and isinstance(metadata.get("event_payload"), dict)
        ):
            content["metadata"] = copy.deepcopy(metadata)
        return content

    def _channel_team(self, channel: Any, principal: Principal) -> str | None:
        """The workspace a chat.* call posts in; channel_not_found for another workspace's channel."""
        if not channel:
            raise SlackError("channel_not_found")
        owner = self._accounts.channel_team(str(channel))
        if owner is not None and not self._accounts.covers(principal, owner):
            raise SlackError("channel_not_found")
        return owner or principal.recorded_team_id

    def _author(self, principal: Principal, team_id: str | None) -> JsonDict:
        """The ``user`` / ``bot_id`` / ``app_id`` / ``team`` fields of a message the caller posts."""
        author: JsonDict = {"user": principal.user_id}
        if principal.bot_id is not None:
            author["bot_id"] = principal.bot_id
            author["app_id"] = self.app_id
        author["team"] = team_id or principal.team_id or self.team_id
        return author

    def _chat_post_message(self, params: JsonDict, principal: Principal) -> JsonDict:
        """chat.postMessage: store and echo the message with a fresh ts."""
        channel = params.get("channel")
        team_id = self._channel_team(channel, principal)
        content = self._message_content(params)
        ts = self._next_ts()
        message: JsonDict = {"type": "message", **self._author(principal, team_id), "ts": ts, **content}
        if params.get("thread_ts"):
            message["thread_ts"] = str(params["thread_ts"])
        self._messages.append(
            {"kind": "message", "channel": str(channel), "team_id": team_id, **copy.deepcopy(message)}
        )
        return {"channel": str(channel), "ts": ts, "message": message}

    def _chat_update(self, params: JsonDict, principal: Principal) -> JsonDict:
        """chat.update: replace the content of a message this fake posted (in the caller's workspace)."""
        channel, ts = params.get("channel"), params.get("ts")
        self._channel_team(channel, principal)
        target = next(
            (
                message
                for message in self._messages
                if message["kind"] == "message" and message["channel"] == channel and message["ts"] == ts
            ),
            None,
        )
        if target is None or not self._accounts.covers(principal, target.get("team_id")):
            raise SlackError("message_not_found")
        content = self._message_content(params)
        for key in ("text", "blocks", "attachments"):
            target.pop(key, None)
        if "metadata" not in content and "metadata" in target:
            content["metadata"] = target.pop("metadata")  # chat.update without metadata keeps it
        target.update(content)
        target["edited"] = {"user": principal.user_id, "ts": self._next_ts()}
        hidden = {"kind", "channel", "team_id"}
        message = {key: copy.deepcopy(value) for key, value in target.items() if key not in hidden}
        return {"channel": str(channel), "ts": str(ts), "text": content["text"], "message": message}

    def _chat_post_ephemeral(self, params: JsonDict, principal: Principal) -> JsonDict:
        """chat.postEphemeral: store an ephemeral message, answer its message_ts."""
        channel, user = params.get("channel"), params.get("user")
        team_id = self._channel_team(channel, principal)
        if not user:
            raise SlackError("user_not_in_channel")
        content = self._message_content(params)
        ts = self._next_ts()
        self._messages.append(
            {"kind": "ephemeral", "channel": str(channel), "team_id": team_id, "user": str(user), "ts": ts, **content}
        )
        return {"message_ts": ts}

    def _auth_test(self, params: JsonDict, principal: Principal) -> JsonDict:
        """auth.test: who the token belongs to."""
        workspace = self._accounts.workspace(principal.team_id)
        answer: JsonDict = {
            "url": f"{self.base_url}/",
            "team": workspace.name if workspace else "Fake Workspace",
            "user": "fake.user" if principal.kind == "user" else "fake-bot",
            "team_id": principal.team_id,
            "user_id": principal.user_id,
        }
        if principal.bot_id is not None:
            answer["bot_id"] = principal.bot_id
        answer["app_id"] = self.app_id
        if principal.enterprise_id:
            answer["enterprise_id"] = principal.enterprise_id
        answer["is_enterprise_install"] = principal.is_enterprise_install
        return answer

    def _auth_revoke(self, params: JsonDict, principal: Principal) -> JsonDict:
        """auth.revoke: the calling token dies (``test=1`` only pretends)."""
        if _truthy(params.get("test", False)):
            return {"revoked": False}
        if principal.kind == "legacy":
            self._legacy_revoked = True
        else:
            self._accounts.revoke(principal.token)
        return {"revoked": True}

    # -- incoming webhooks -----------------------------------------------------------

    def _incoming_webhook(self, path: str, content_type: str, body: bytes) -> _Reply:
        """POST /services/<team>/<bot>/<secret>: an install's incoming webhook posts in its channel."""
        try:
            payload = _parse_body(content_type or "application/json", body)
            if "payload" in payload and isinstance(payload["payload"], str):
                payload = json.loads(payload["payload"])
            if not isinstance(payload, dict):
                raise ValueError("payload must be an object")
        except (ValueError, UnicodeDecodeError):
            self._record("incoming_webhook", {}, "invalid_payload")
            return _text_reply("invalid_payload", 400)
        with self._lock:
            try:
                workspace, channel = self._accounts.webhook(path)
            except SlackError as exc:
                self._record("incoming_webhook", payload, exc.error)
                return _text_reply(exc.error, 403 if exc.error == "invalid_token" else 404)
            if not _has_content(payload):
                self._record("incoming_webhook", payload, "no_text", workspace.team_id)
                return _text_reply("no_text", 400)
            self._messages.append(
                {
                    "kind": "incoming_webhook",
                    "channel": channel,
                    "team_id": workspace.team_id,
                    "ts": self._next_ts(),
                    "text": str(payload.get("text") or ""),
                    "blocks": copy.deepcopy(payload.get("blocks")),
                }
            )
            self._record("incoming_webhook", payload, None, workspace.team_id)
        return _text_reply("ok", 200)

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
                        "team_id": entry.team_id,
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
        team_id = entry.team_id if entry is not None else None
        if error_reply is not None:
            self._record("response_url", recorded, error_reply[0], team_id)
            return _text_reply(*error_reply)
        self._record("response_url", recorded, None, team_id)
        return _text_reply("ok", 200)
