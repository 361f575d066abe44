"""The "Slack sends a request" half of the fake: signed, real-shaped requests to an app.

`SlackSender` builds the payloads Slack posts to an app's Request URLs (shapes from
docs.slack.dev "interaction payloads", "slash commands" and Events API pages), signs
them with slack_sdk's ``SignatureVerifier`` (v0 HMAC-SHA256 over
``v0:<timestamp>:<raw body>``) and POSTs them with ``requests``.

trigger_ids and response_urls are always obtained from the fake over HTTP
(``POST /_fake/trigger``, ``POST /_fake/response_url``, naming the workspace), so the fake
knows when each was issued and for which workspace even when the sender runs in another
process. Like Slack, the fake issues the trigger at the moment of the "click", just
before the request is sent. A workspace the fake knows lends its bot user and bot id to
the payloads (``GET /_fake/workspaces``).

`SlackSender.authorize` plays the browser of someone installing the app: it follows the
app's install URL to the fake's consent screen and the fake's redirect back to the app.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
from requests.structures import CaseInsensitiveDict
from slack_sdk.signature import SignatureVerifier

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json"
# Slack still sends the deprecated verification token in bodies; apps must not rely on it.
LEGACY_VERIFICATION_TOKEN = "fakeLegacyVerificationToken"
DEFAULT_BOT_USER_ID = "U0FAKEBOT1"
DEFAULT_BOT_ID = "B0FAKEBOT1"
_HREF = re.compile(r"""href\s*=\s*["']([^"']+)["']""", re.IGNORECASE)

JsonDict = dict[str, Any]


class FakeSlackEndpoints(Protocol):
    """Anything with the base URL of a running FakeSlack (FakeSlack itself qualifies)."""

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` of the fake."""
        ...


@dataclass(frozen=True)
class Sent:
    """What the app answered to one request, and what was sent."""

    status: int
    body: bytes
    headers: Mapping[str, str]
    elapsed_ms: float
    trigger_id: str | None
    response_url: str | None
    payload: JsonDict

    @property
    def text(self) -> str:
        """The answer body as text."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The answer body parsed as JSON."""
        return json.loads(self.body)


def _now_ts() -> str:
    """A Slack-style ``seconds.micros`` timestamp for now."""
    return f"{time.time():.6f}"


def _replace_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` set in its query string (replacing same-named ones)."""
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key not in params]
    return urlunsplit(parts._replace(query=urlencode([*query, *params.items()])))


@dataclass(frozen=True)
class _BotIdentity:
    bot_user_id: str
    bot_id: str


class SlackSender:
    """Sends signed Slack requests (interactions, commands, events) to ``target_url``."""

    def __init__(
        self,
        *,
        fake: FakeSlackEndpoints | str,
        signing_secret: str,
        target_url: str,
        app_id: str = "A0APP0001",
        timeout: float = 10.0,
        team_domain: str = "fake-team",
    ) -> None:
        """``fake`` is a FakeSlack or its base URL; requests go to ``target_url``."""
        self.fake_url = (fake if isinstance(fake, str) else fake.base_url).rstrip("/")
        self.target_url = target_url
        self.app_id = app_id
        self.timeout = timeout
        self.team_domain = team_domain
        self._verifier = SignatureVerifier(signing_secret)
        self._bots: dict[str, _BotIdentity] = {}

    # -- signing and sending ------------------------------------------------------------

    def sign(self, body: bytes, timestamp: str) -> str:
        """The ``X-Slack-Signature`` value for ``body`` at ``timestamp``."""
        signature = self._verifier.generate_signature(timestamp=timestamp, body=body)
        if signature is None:
            raise ValueError("cannot sign without a timestamp")
        return signature

    def send_raw(
        self,
        body: bytes,
        *,
        content_type: str,
        timestamp: str | None = None,
        signature: str | None = None,
        extra_headers: Mapping[str, str | None] | None = None,
    ) -> Sent:
        """POST ``body`` as is; signed correctly unless ``timestamp``/``signature`` say otherwise.

        A header mapped to None in ``extra_headers`` is left out of the request, e.g.
        ``{"X-Slack-Signature": None}`` sends no signature at all.
        """
        return self._post(
            body,
            content_type=content_type,
            timestamp=timestamp,
            signature=signature,
            extra_headers=extra_headers,
            trigger_id=None,
            response_url=None,
            payload={},
        )

    def _post(
        self,
        body: bytes,
        *,
        content_type: str,
        timestamp: str | None,
        signature: str | None,
        extra_headers: Mapping[str, str | None] | None,
        trigger_id: str | None,
        response_url: str | None,
        payload: JsonDict,
    ) -> Sent:
        """Sign (unless overridden), POST and time one request."""
        ts = timestamp if timestamp is not None else str(int(time.time()))
        headers: dict[str, str | None] = {
            "Content-Type": content_type,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature if signature is not None else self.sign(body, ts),
        }
        headers.update(extra_headers or {})
        started = time.perf_counter()
        response = requests.post(self.target_url, data=body, headers=headers, timeout=self.timeout)
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        with response:
            return Sent(
                status=response.status_code,
                body=response.content,
                headers=CaseInsensitiveDict(response.headers),
                elapsed_ms=elapsed_ms,
                trigger_id=trigger_id,
                response_url=response_url,
                payload=payload,
            )

    def _send_form_payload(self, payload: JsonDict, *, trigger_id: str | None, response_url: str | None) -> Sent:
        """Interaction payloads travel as a form field ``payload`` holding JSON."""
        body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode("utf-8")
        return self._post(
            body,
            content_type=FORM_CONTENT_TYPE,
            timestamp=None,
            signature=None,
            extra_headers=None,
            trigger_id=trigger_id,
            response_url=response_url,
            payload=payload,
        )

    # -- talking to the fake --------------------------------------------------------------

    def _fake_post(self, name: str, data: JsonDict) -> JsonDict:
        """POST to a /_fake/ endpoint and return its JSON."""
        response = requests.post(f"{self.fake_url}/_fake/{name}", json=data, timeout=self.timeout)
        with response:
            response.raise_for_status()
            answer: JsonDict = response.json()
        return answer

    def _issue_trigger(self, *, team_id: str, user_id: str, view_id: str | None = None) -> str:
        """A fresh trigger_id of workspace ``team_id`` (optionally from inside modal ``view_id``)."""
        data = {"team_id": team_id, "user_id": user_id, "view_id": view_id}
        return str(self._fake_post("trigger", data)["trigger_id"])

    def _issue_response_url(self, *, team_id: str, channel_id: str | None, user_id: str) -> str:
        """A fresh response_url of workspace ``team_id``."""
        data = {"team_id": team_id, "channel_id": channel_id, "user_id": user_id}
        return str(self._fake_post("response_url", data)["response_url"])

    def _bot(self, team_id: str) -> _BotIdentity:
        """The app's bot user and bot id in a workspace the fake knows, else the defaults."""
        known = self._bots.get(team_id)
        if known is not None:
            return known
        response = requests.get(f"{self.fake_url}/_fake/workspaces", params={"team_id": team_id}, timeout=self.timeout)
        with response:
            if response.status_code == 404:
                return _BotIdentity(DEFAULT_BOT_USER_ID, DEFAULT_BOT_ID)
            response.raise_for_status()
            workspace: JsonDict = response.json()
        identity = _BotIdentity(str(workspace["bot_user_id"]), str(workspace["bot_id"]))
        self._bots[team_id] = identity
        return identity

    def _find_view(self, *, view_id: str | None = None, external_id: str | None = None) -> JsonDict | None:
        """The fake's current view by id or external_id, or None."""
        if view_id:
            url = f"{self.fake_url}/_fake/views/{view_id}"
        else:
            url = f"{self.fake_url}/_fake/views?{urlencode({'external_id': external_id or ''})}"
        response = requests.get(url, timeout=self.timeout)
        with response:
            if response.status_code == 404:
                return None
            response.raise_for_status()
            view: JsonDict = response.json()
        return view

    # -- payload pieces ---------------------------------------------------------------------

    def _team(self, team_id: str, enterprise_id: str | None) -> JsonDict:
        """The ``team`` object of interaction payloads."""
        team: JsonDict = {"id": team_id, "domain": self.team_domain}
        if enterprise_id:
            team["enterprise_id"] = enterprise_id
            team["enterprise_name"] = "Fake Org"
        return team

    @staticmethod
    def _user(user_id: str, team_id: str) -> JsonDict:
        """The ``user`` object of interaction payloads."""
        return {"id": user_id, "username": "fake.user", "name": "fake.user", "team_id": team_id}

    @staticmethod
    def _enterprise(enterprise_id: str | None) -> JsonDict | None:
        """The ``enterprise`` object (null outside Enterprise Grid)."""
        return {"id": enterprise_id, "name": "Fake Org"} if enterprise_id else None

    def _synthetic_view(self, *, team_id: str, callback_id: str, private_metadata: str | None) -> JsonDict:
        """A modal view object for payloads whose modal the fake never opened."""
        view_id = f"V{secrets.token_hex(5).upper()}"
        return {
            "id": view_id,
            "team_id": team_id,
            "type": "modal",
            "title": {"type": "plain_text", "text": "Fake modal", "emoji": True},
            "submit": {"type": "plain_text", "text": "Submit", "emoji": True},
            "close": {"type": "plain_text", "text": "Cancel", "emoji": True},
            "blocks": [],
            "private_metadata": private_metadata or "",
            "callback_id": callback_id,
            "external_id": "",
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "clear_on_close": False,
            "notify_on_close": False,
            "root_view_id": view_id,
            "previous_view_id": None,
            "app_id": self.app_id,
            "app_installed_team_id": team_id,
            "bot_id": self._bot(team_id).bot_id,
        }

    # -- interactions -----------------------------------------------------------------------

    def click_button(
        self,
        *,
        team_id: str,
        user_id: str = "U0USER001",
        action_id: str,
        value: str | None = None,
        enterprise_id: str | None = None,
        channel_id: str = "C0CHAN001",
        message_ts: str | None = None,
        private_metadata: str | None = None,
        view_id: str | None = None,
    ) -> Sent:
        """A ``block_actions`` payload for a button click.

        By default the button sits in a message: the payload carries a fresh trigger_id
        and response_url. With ``view_id`` or ``private_metadata`` the button sits in a
        modal instead (container type "view", no response_url, as Slack sends it), and the
        trigger_id may be used for views.push onto that modal.
        """
        in_modal = view_id is not None or private_metadata is not None
        action_ts = _now_ts()
        action: JsonDict = {
            "type": "button",
            "action_id": action_id,
            "block_id": f"blk_{action_id}"[:255],
            "text": {"type": "plain_text", "text": action_id, "emoji": True},
            "action_ts": action_ts,
        }
        if value is not None:
            action["value"] = value
        payload: JsonDict = {
            "type": "block_actions",
            "user": self._user(user_id, team_id),
            "api_app_id": self.app_id,
            "token": LEGACY_VERIFICATION_TOKEN,
            "trigger_id": "",
            "team": self._team(team_id, enterprise_id),
            "enterprise": self._enterprise(enterprise_id),
            "is_enterprise_install": False,
            "actions": [action],
            "state": {"values": {}},
        }
        response_url: str | None = None
        if in_modal:
            view = self._find_view(view_id=view_id) if view_id else None
            if view is None:
                view = self._synthetic_view(team_id=team_id, callback_id="", private_metadata=private_metadata)
            elif private_metadata is not None:
                view["private_metadata"] = private_metadata
            payload["container"] = {"type": "view", "view_id": view["id"]}
            payload["view"] = view
            trigger_id = self._issue_trigger(team_id=team_id, user_id=user_id, view_id=view["id"])
        else:
            ts = message_ts or _now_ts()
            payload["container"] = {
                "type": "message",
                "message_ts": ts,
                "channel_id": channel_id,
                "is_ephemeral": False,
            }
            payload["channel"] = {"id": channel_id, "name": "fake-channel"}
            bot = self._bot(team_id)
            payload["message"] = {
                "type": "message",
                "user": bot.bot_user_id,
                "bot_id": bot.bot_id,
                "app_id": self.app_id,
                "team": team_id,
                "ts": ts,
                "text": "A message with a button",
                "blocks": [{"type": "actions", "block_id": action["block_id"], "elements": []}],
            }
            response_url = self._issue_response_url(team_id=team_id, channel_id=channel_id, user_id=user_id)
            payload["response_url"] = response_url
            trigger_id = self._issue_trigger(team_id=team_id, user_id=user_id)
        payload["trigger_id"] = trigger_id
        return self._send_form_payload(payload, trigger_id=trigger_id, response_url=response_url)

    def slash_command(
        self,
        *,
        team_id: str,
        command: str,
        text: str = "",
        user_id: str = "U0USER001",
        channel_id: str = "C0CHAN001",
        enterprise_id: str | None = None,
    ) -> Sent:
        """A slash command: form-encoded fields, with a fresh response_url and trigger_id."""
        response_url = self._issue_response_url(team_id=team_id, channel_id=channel_id, user_id=user_id)
        trigger_id = self._issue_trigger(team_id=team_id, user_id=user_id)
        fields: dict[str, str] = {
            "token": LEGACY_VERIFICATION_TOKEN,
            "team_id": team_id,
            "team_domain": self.team_domain,
        }
        if enterprise_id:
            fields["enterprise_id"] = enterprise_id
            fields["enterprise_name"] = "Fake Org"
        fields.update(
            {
                "channel_id": channel_id,
                "channel_name": "fake-channel",
                "user_id": user_id,
                "user_name": "fake.user",
                "command": command,
                "text": text,
                "api_app_id": self.app_id,
                "is_enterprise_install": "false",
                "response_url": response_url,
                "trigger_id": trigger_id,
            }
        )
        return self._post(
            urlencode(fields).encode("utf-8"),
            content_type=FORM_CONTENT_TYPE,
            timestamp=None,
            signature=None,
            extra_headers=None,
            trigger_id=trigger_id,
            response_url=response_url,
            payload=dict(fields),
        )

    def event(
        self,
        *,
        team_id: str,
        event_type: str,
        event: JsonDict | None = None,
        event_id: str | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        authorizations: list[JsonDict] | None = None,
        enterprise_id: str | None = None,
    ) -> Sent:
        """An Events API ``event_callback`` (JSON), with retry headers when given."""
        event_ts = _now_ts()
        inner: JsonDict = {
            "type": event_type,
            "user": "U0USER001",
            "channel": "C0CHAN001",
            "text": "",
            "ts": event_ts,
            "event_ts": event_ts,
        }
        if event is not None:
            inner = {**event, "type": event.get("type", event_type)}
            inner.setdefault("event_ts", event_ts)
        payload: JsonDict = {
            "token": LEGACY_VERIFICATION_TOKEN,
            "team_id": team_id,
            "api_app_id": self.app_id,
            "event": inner,
            "type": "event_callback",
            "event_id": event_id or f"Ev{secrets.token_hex(5).upper()}",
            "event_time": int(time.time()),
            "authorizations": authorizations
            if authorizations is not None
            else [
                {
                    "enterprise_id": enterprise_id,
                    "team_id": team_id,
                    "user_id": self._bot(team_id).bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{secrets.token_urlsafe(24)}",
        }
        if enterprise_id:
            payload["enterprise_id"] = enterprise_id
        extra: dict[str, str | None] = {}
        if retry_num is not None:
            extra["X-Slack-Retry-Num"] = str(retry_num)
        if retry_reason is not None:
            extra["X-Slack-Retry-Reason"] = retry_reason
        return self._post(
            json.dumps(payload, separators=(",", ":")).encode("utf-8"),
            content_type=JSON_CONTENT_TYPE,
            timestamp=None,
            signature=None,
            extra_headers=extra,
            trigger_id=None,
            response_url=None,
            payload=payload,
        )

    def app_uninstalled(self, team_id: str, *, enterprise_id: str | None = None, event_id: str | None = None) -> Sent:
        """The ``app_uninstalled`` event Slack sends once the app is removed from a workspace."""
        return self.event(
            team_id=team_id,
            event_type="app_uninstalled",
            event={"type": "app_uninstalled"},
            event_id=event_id,
            enterprise_id=enterprise_id,
        )

    def tokens_revoked(
        self,
        team_id: str,
        *,
        bot_user_ids: Iterable[str] = (),
        user_ids: Iterable[str] = (),
        enterprise_id: str | None = None,
        event_id: str | None = None,
    ) -> Sent:
        """The ``tokens_revoked`` event: the user ids whose tokens died (``oauth``: user, ``bot``)."""
        tokens: JsonDict = {}
        if user_ids:
            tokens["oauth"] = list(user_ids)
        if bot_user_ids:
            tokens["bot"] = list(bot_user_ids)
        if not tokens:
            raise ValueError("tokens_revoked needs bot_user_ids or user_ids")
        return self.event(
            team_id=team_id,
            event_type="tokens_revoked",
            event={"type": "tokens_revoked", "tokens": tokens},
            event_id=event_id,
            enterprise_id=enterprise_id,
        )

    # -- installing -----------------------------------------------------------------------------

    def authorize(
        self,
        install_url: str,
        *,
        team_id: str,
        deny: bool = False,
        enterprise: bool = False,
        session: requests.Session | None = None,
    ) -> requests.Response:
        """Install the app the way a browser does; return the app's final answer.

        GETs ``install_url``, follows the app's redirect (or its page's link) to the fake's
        consent screen with ``team=team_id`` (``deny``: the user presses Cancel;
        ``enterprise``: an org-wide install), then follows the fake's redirect back to the
        app and every redirect after it. ``session`` keeps cookies across the steps (a new
        one by default). A consent screen refusing the request is returned as it answered.
        """
        browser = session if session is not None else requests.Session()
        landing = browser.get(install_url, allow_redirects=False, timeout=self.timeout)
        with landing:
            consent_url = self._consent_link(install_url, landing)
        params = {"team": team_id}
        if deny:
            params["fake_consent"] = "deny"
        if enterprise:
            params["fake_enterprise"] = "1"
        consent = browser.get(_replace_query(consent_url, params), allow_redirects=False, timeout=self.timeout)
        if not consent.is_redirect:
            return consent
        with consent:
            back_to_app = urljoin(consent_url, consent.headers["Location"])
        return browser.get(back_to_app, allow_redirects=True, timeout=self.timeout)

    def _consent_link(self, install_url: str, landing: requests.Response) -> str:
        """The fake's consent URL the app's install page redirects or links to."""
        authorize_url = f"{self.fake_url}/oauth/v2/authorize"
        if landing.is_redirect:
            candidates = [urljoin(install_url, landing.headers["Location"])]
        else:
            candidates = [urljoin(install_url, html.unescape(href)) for href in _HREF.findall(landing.text)]
        for candidate in candidates:
            if candidate.split("?", 1)[0] == authorize_url:
                return candidate
        raise ValueError(
            f"{install_url} answered {landing.status_code} without leading to the fake's consent screen {authorize_url}"
        )

    def options_load(
        self,
        *,
        team_id: str,
        action_id: str,
        value: str = "",
        private_metadata: str | None = None,
        user_id: str = "U0USER001",
    ) -> Sent:
        """A ``block_suggestion`` (external select in a modal asking for options)."""
        view = self._synthetic_view(team_id=team_id, callback_id="", private_metadata=private_metadata)
        payload: JsonDict = {
            "type": "block_suggestion",
            "user": self._user(user_id, team_id),
            "container": {"type": "view", "view_id": view["id"]},
            "api_app_id": self.app_id,
            "token": LEGACY_VERIFICATION_TOKEN,
            "action_id": action_id,
            "block_id": f"blk_{action_id}"[:255],
            "value": value,
            "team": self._team(team_id, None),
            "enterprise": None,
            "is_enterprise_install": False,
            "view": view,
        }
        return self._send_form_payload(payload, trigger_id=None, response_url=None)

    def submit_view(
        self,
        *,
        team_id: str,
        callback_id: str,
        values: Mapping[str, Mapping[str, Any]],
        private_metadata: str | None = None,
        external_id: str | None = None,
        user_id: str = "U0USER001",
    ) -> Sent:
        """A ``view_submission``.

        ``values`` is ``{block_id: {action_id: state}}``; a plain string state becomes
        ``{"type": "plain_text_input", "value": s}``. With ``external_id`` of a view the
        fake holds, the payload carries that view (id, hash, root_view_id).
        """
        state: JsonDict = {
            block_id: {
                action_id: ({"type": "plain_text_input", "value": item} if isinstance(item, str) else dict(item))
                for action_id, item in actions.items()
            }
            for block_id, actions in values.items()
        }
        view = self._find_view(external_id=external_id) if external_id else None
        if view is None:
            view = self._synthetic_view(team_id=team_id, callback_id=callback_id, private_metadata=private_metadata)
            view["external_id"] = external_id or ""
        view["callback_id"] = callback_id
        if private_metadata is not None:
            view["private_metadata"] = private_metadata
        view["state"] = {"values": state}
        trigger_id = self._issue_trigger(team_id=team_id, user_id=user_id, view_id=view["id"])
        payload: JsonDict = {
            "type": "view_submission",
            "team": self._team(team_id, None),
            "user": self._user(user_id, team_id),
            "api_app_id": self.app_id,
            "token": LEGACY_VERIFICATION_TOKEN,
            "trigger_id": trigger_id,
            "view": view,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }
        return self._send_form_payload(payload, trigger_id=trigger_id, response_url=None)

    def shortcut(self, *, team_id: str, callback_id: str, user_id: str = "U0USER001") -> Sent:
        """A global ``shortcut`` (no response_url, as Slack sends it)."""
        trigger_id = self._issue_trigger(team_id=team_id, user_id=user_id)
        payload: JsonDict = {
            "type": "shortcut",
            "token": LEGACY_VERIFICATION_TOKEN,
            "action_ts": _now_ts(),
            "team": self._team(team_id, None),
            "user": {"id": user_id, "username": "fake.user", "team_id": team_id},
            "is_enterprise_install": False,
            "enterprise": None,
            "callback_id": callback_id,
            "trigger_id": trigger_id,
        }
        return self._send_form_payload(payload, trigger_id=trigger_id, response_url=None)

    def url_verification(self) -> Sent:
        """The Events API ``url_verification`` handshake; the app must echo ``challenge``."""
        payload: JsonDict = {
            "token": LEGACY_VERIFICATION_TOKEN,
            "challenge": secrets.token_urlsafe(32),
            "type": "url_verification",
        }
        return self._post(
            json.dumps(payload, separators=(",", ":")).encode("utf-8"),
            content_type=JSON_CONTENT_TYPE,
            timestamp=None,
            signature=None,
            extra_headers=None,
            trigger_id=None,
            response_url=None,
            payload=payload,
        )

    def ssl_check(self) -> Sent:
        """Slack's form-encoded ``ssl_check=1`` probe."""
        fields = {"ssl_check": "1", "token": LEGACY_VERIFICATION_TOKEN}
        return self._post(
            urlencode(fields).encode("utf-8"),
            content_type=FORM_CONTENT_TYPE,
            timestamp=None,
            signature=None,
            extra_headers=None,
            trigger_id=None,
            response_url=None,
            payload=dict(fields),
        )
