"""Workspaces, OAuth codes and tokens of the fake Slack.

`Accounts` is the fake's memory of who may call it: the workspaces the app is installed
in, the authorization codes the consent screen hands out, and the access and refresh
tokens ``oauth.v2.access`` issues. It holds no lock of its own: `FakeSlack` calls it
under its lock.

Shapes and error names follow docs.slack.dev (oauth.v2.access, auth.test, auth.revoke,
"Using token rotation"): a code is exchanged once; with token rotation an access token
expires after ``expires_in`` seconds and a refresh token is single use, the new pair
replacing it; a re-install issues a new bot token while the older ones keep working.
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

JsonDict = dict[str, Any]
TokenKind = Literal["bot", "user"]

CODE_TTL = 600.0
ENTERPRISE_NAME = "Fake Org"
_ALNUM = string.ascii_letters + string.digits


class SlackError(Exception):
    """An ``ok: false`` Web API answer with Slack's error name."""

    def __init__(self, error: str, detail: str | None = None) -> None:
        """Keep the error name and an optional response_metadata message."""
        super().__init__(error)
        self.error = error
        self.detail = detail


def _digits(count: int) -> str:
    """``count`` random decimal digits, the first one non-zero."""
    return str(secrets.randbelow(9) + 1) + "".join(secrets.choice(string.digits) for _ in range(count - 1))


def _alnum(count: int) -> str:
    """``count`` random letters and digits."""
    return "".join(secrets.choice(_ALNUM) for _ in range(count))


@dataclass(frozen=True)
class Workspace:
    """A workspace the app can be installed in, with the app's bot user there."""

    team_id: str
    enterprise_id: str | None
    name: str
    bot_user_id: str
    bot_id: str
    installer_user_id: str
    channels: tuple[str, ...] = ()

    def to_dict(self) -> JsonDict:
        """A JSON-ready copy."""
        return {
            "team_id": self.team_id,
            "enterprise_id": self.enterprise_id,
            "name": self.name,
            "bot_user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "installer_user_id": self.installer_user_id,
            "channels": list(self.channels),
        }


@dataclass(frozen=True)
class Principal:
    """Who a Web API call acts as: the workspace, enterprise and user of its token.

    ``kind`` "legacy" is the single-workspace token: it passes every ownership check.
    """

    kind: Literal["legacy", "bot", "user"]
    team_id: str | None
    enterprise_id: str | None
    is_enterprise_install: bool
    user_id: str
    bot_id: str | None
    token: str = field(default="", repr=False, compare=False)
    scope: str = ""

    @property
    def recorded_team_id(self) -> str | None:
        """The workspace a Call records: None for the single-workspace token."""
        return None if self.kind == "legacy" else self.team_id


@dataclass
class _Grant:
    """One installation's credential of one kind: the chain of its rotated tokens."""

    kind: TokenKind
    workspace: Workspace
    is_enterprise_install: bool
    user_id: str
    scope: str
    refresh_token: str | None = field(default=None, repr=False)
    revoked: bool = False


@dataclass
class _AccessToken:
    grant: _Grant
    expires_at: float | None


@dataclass
class _Code:
    team_id: str
    scopes: str
    user_scopes: str
    redirect_uri: str | None
    is_enterprise_install: bool
    issued_at: float
    used: bool = False


class Accounts:
    """The fake's workspaces, pending codes, tokens and refresh tokens (not thread-safe)."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        app_id: str,
        token_rotation: bool,
        token_ttl: float,
        code_ttl: float = CODE_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Configure the app's credentials and the token lifetimes."""
        self.client_id = client_id
        self.client_secret = client_secret
        self.app_id = app_id
        self.token_rotation = token_rotation
        self.token_ttl = token_ttl
        self.code_ttl = code_ttl
        self._clock = clock
        self._counter = 0
        self._workspaces: dict[str, Workspace] = {}
        self._channel_teams: dict[str, str] = {}
        self._codes: dict[str, _Code] = {}
        self._tokens: dict[str, _AccessToken] = {}
        self._refresh_tokens: dict[str, _Grant] = {}
        self._refresh_counts: dict[str, int] = {}
        self._webhooks: dict[str, tuple[_Grant, str]] = {}
        self.base_url = ""

    # -- workspaces ------------------------------------------------------------------

    def add_workspace(
        self,
        team_id: str,
        *,
        enterprise_id: str | None = None,
        name: str | None = None,
        channels: Iterable[str] = (),
        bot_user_id: str | None = None,
        bot_id: str | None = None,
    ) -> Workspace:
        """Register a workspace (or add channels to a known one) and return it."""
        if not team_id or not team_id.startswith("T"):
            raise ValueError(f"a team id starts with T, not {team_id!r}")
        if enterprise_id is not None and not enterprise_id.startswith("E"):
            raise ValueError(f"an enterprise id starts with E, not {enterprise_id!r}")
        channels = tuple(channels)
        for channel in channels:
            owner = self._channel_teams.get(channel)
            if owner is not None and owner != team_id:
                raise ValueError(f"channel {channel} already belongs to {owner}")
        known = self._workspaces.get(team_id)
        if known is not None:
            if enterprise_id is not None and enterprise_id != known.enterprise_id:
                raise ValueError(f"{team_id} is in enterprise {known.enterprise_id}, not {enterprise_id}")
            merged = known.channels + tuple(channel for channel in channels if channel not in known.channels)
            workspace = Workspace(
                team_id=team_id,
                enterprise_id=known.enterprise_id,
                name=name or known.name,
                bot_user_id=known.bot_user_id,
                bot_id=known.bot_id,
                installer_user_id=known.installer_user_id,
                channels=merged,
            )
        else:
            self._counter += 1
            number = self._counter
            workspace = Workspace(
                team_id=team_id,
                enterprise_id=enterprise_id,
                name=name or f"Fake Workspace {team_id}",
                bot_user_id=bot_user_id or f"U0BOT{number:05d}",
                bot_id=bot_id or f"B0BOT{number:05d}",
                installer_user_id=f"U0INST{number:04d}",
                channels=tuple(dict.fromkeys(channels)),
            )
        self._workspaces[team_id] = workspace
        for channel in workspace.channels:
            self._channel_teams[channel] = team_id
        return workspace

    def workspace(self, team_id: str | None) -> Workspace | None:
        """The registered workspace, or None."""
        return self._workspaces.get(team_id or "")

    def workspaces(self) -> list[Workspace]:
        """Every registered workspace, in registration order."""
        return list(self._workspaces.values())

    def channel_team(self, channel_id: str) -> str | None:
        """The workspace a channel was registered to, or None (any workspace may use it)."""
        return self._channel_teams.get(channel_id)

    def covers(self, principal: Principal, team_id: str | None) -> bool:
        """Whether ``principal`` may touch something belonging to workspace ``team_id``."""
        if principal.kind == "legacy" or team_id is None or principal.team_id == team_id:
            return True
        if principal.is_enterprise_install and principal.enterprise_id:
            workspace = self.workspace(team_id)
            return workspace is not None and workspace.enterprise_id == principal.enterprise_id
        return False

    # -- OAuth ------------------------------------------------------------------------

    def check_client(self, client_id: str | None, client_secret: str | None) -> None:
        """The app's credentials of an oauth.v2.access call; SlackError if wrong."""
        if not client_id or not secrets.compare_digest(client_id.encode(), self.client_id.encode()):
            raise SlackError("invalid_client_id")
        if not client_secret or not secrets.compare_digest(client_secret.encode(), self.client_secret.encode()):
            raise SlackError("bad_client_secret")

    def issue_code(
        self,
        team_id: str,
        *,
        scopes: str,
        user_scopes: str,
        redirect_uri: str | None,
        is_enterprise_install: bool,
    ) -> str:
        """A fresh single-use authorization code for one consent."""
        code = f"{_digits(10)}.{_digits(13)}.{secrets.token_hex(32)}"
        self._codes[code] = _Code(
            team_id, scopes, user_scopes, redirect_uri, is_enterprise_install, issued_at=self._clock()
        )
        return code

    def exchange_code(
        self, code: str | None, *, redirect_uri: str | None, default_redirect_uri: str | None
    ) -> JsonDict:
        """oauth.v2.access with a code: the installation's tokens, in Slack's shape."""
        if not code:
            raise SlackError("invalid_code")
        pending = self._codes.get(code)
        if pending is None or self._clock() - pending.issued_at > self.code_ttl:
            raise SlackError("invalid_code")
        if pending.used:
            raise SlackError("code_already_used")
        expected = pending.redirect_uri
        if expected is not None and redirect_uri != expected:
            raise SlackError("bad_redirect_uri")
        if expected is None and redirect_uri is not None and redirect_uri != default_redirect_uri:
            raise SlackError("bad_redirect_uri")
        pending.used = True
        return self.install(
            pending.team_id,
            scopes=pending.scopes,
            user_scopes=pending.user_scopes,
            is_enterprise_install=pending.is_enterprise_install,
        )

    def install(self, team_id: str, *, scopes: str, user_scopes: str, is_enterprise_install: bool) -> JsonDict:
        """Install the app in a workspace: new tokens, answered as oauth.v2.access does."""
        workspace = self.workspace(team_id) or self.add_workspace(team_id)
        if is_enterprise_install and not workspace.enterprise_id:
            raise SlackError("invalid_team_for_enterprise_install", f"{team_id} is not in an enterprise")
        if not scopes and not user_scopes:
            raise SlackError("invalid_scope", "no scope and no user_scope requested")
        answer: JsonDict = {"ok": True, "app_id": self.app_id}
        bot_grant: _Grant | None = None
        if scopes:
            grant = bot_grant = _Grant("bot", workspace, is_enterprise_install, workspace.bot_user_id, scopes)
            token, refresh, expires_in = self._issue(grant)
            answer.update({"access_token": token, "token_type": "bot", "scope": scopes})
            answer["bot_user_id"] = workspace.bot_user_id
            answer.update(self._rotation_fields(refresh, expires_in))
        answer["team"] = None if is_enterprise_install else {"name": workspace.name, "id": workspace.team_id}
        answer["enterprise"] = self._enterprise(workspace)
        authed_user: JsonDict = {"id": workspace.installer_user_id}
        if user_scopes:
            grant = _Grant("user", workspace, is_enterprise_install, workspace.installer_user_id, user_scopes)
            token, refresh, expires_in = self._issue(grant)
            authed_user.update({"scope": user_scopes, "access_token": token, "token_type": "user"})
            authed_user.update(self._rotation_fields(refresh, expires_in))
        answer["authed_user"] = authed_user
        answer["is_enterprise_install"] = is_enterprise_install
        if bot_grant is not None and "incoming-webhook" in scopes.split(","):
            channel = workspace.channels[0] if workspace.channels else "C0GENERAL1"
            path = f"{workspace.team_id}/{workspace.bot_id}/{_alnum(24)}"
            self._webhooks[path] = (bot_grant, channel)
            answer["incoming_webhook"] = {
                "channel": "#general",
                "channel_id": channel,
                "configuration_url": f"{self.base_url}/services/{workspace.bot_id}",
                "url": f"{self.base_url}/services/{path}",
            }
        return answer

    def webhook(self, path: str) -> tuple[Workspace, str]:
        """The workspace and channel of an incoming webhook; SlackError no_service / invalid_token."""
        found = self._webhooks.get(path)
        if found is None:
            raise SlackError("no_service")
        grant, channel = found
        if grant.revoked:
            raise SlackError("invalid_token")
        return grant.workspace, channel

    def refresh(self, refresh_token: str | None) -> JsonDict:
        """oauth.v2.access with grant_type=refresh_token: a new pair; the old refresh token dies."""
        grant = self._refresh_tokens.pop(refresh_token or "", None)
        if grant is None or grant.revoked or grant.refresh_token != refresh_token:
            raise SlackError("invalid_refresh_token")
        grant.refresh_token = None
        token, refresh, expires_in = self._issue(grant)
        team_id = grant.workspace.team_id
        self._refresh_counts[team_id] = self._refresh_counts.get(team_id, 0) + 1
        answer: JsonDict = {
            "ok": True,
            "app_id": self.app_id,
            "access_token": token,
            "token_type": grant.kind,
            "scope": grant.scope,
            **self._rotation_fields(refresh, expires_in),
        }
        if grant.kind == "bot":
            answer["bot_user_id"] = grant.workspace.bot_user_id
        else:
            answer["user_id"] = grant.user_id
        answer["team"] = (
            None if grant.is_enterprise_install else {"name": grant.workspace.name, "id": grant.workspace.team_id}
        )
        answer["enterprise"] = self._enterprise(grant.workspace)
        answer["is_enterprise_install"] = grant.is_enterprise_install
        return answer

    def refresh_team(self, refresh_token: str | None) -> str | None:
        """The workspace a refresh token was issued for (None if unknown), for the call record."""
        grant = self._refresh_tokens.get(refresh_token or "")
        return grant.workspace.team_id if grant is not None else None

    def code_team(self, code: str | None) -> str | None:
        """The workspace a code was issued for (None if unknown), for the call record."""
        pending = self._codes.get(code or "")
        return pending.team_id if pending is not None else None

    def refreshes(self, team_id: str) -> int:
        """How many refresh_token exchanges a workspace has made."""
        return self._refresh_counts.get(team_id, 0)

    # -- tokens ----------------------------------------------------------------------

    def authenticate(self, token: str) -> Principal:
        """The Principal of a live token; SlackError invalid_auth / token_revoked / token_expired."""
        entry = self._tokens.get(token)
        if entry is None:
            raise SlackError("invalid_auth")
        grant = entry.grant
        if grant.revoked:
            raise SlackError("token_revoked")
        if entry.expires_at is not None and self._clock() >= entry.expires_at:
            raise SlackError("token_expired")
        workspace = grant.workspace
        return Principal(
            kind=grant.kind,
            team_id=workspace.team_id,
            enterprise_id=workspace.enterprise_id,
            is_enterprise_install=grant.is_enterprise_install,
            user_id=grant.user_id,
            bot_id=workspace.bot_id if grant.kind == "bot" else None,
            token=token,
            scope=grant.scope,
        )

    def revoke(self, token: str) -> None:
        """auth.revoke: the token's credential dies, with every token rotated from it."""
        entry = self._tokens.get(token)
        if entry is not None:
            self._kill(entry.grant)

    def revoke_team(self, team_id: str) -> int:
        """Uninstall: every credential issued for the workspace dies; returns how many."""
        grants = {id(entry.grant): entry.grant for entry in self._tokens.values()}
        killed = 0
        for grant in grants.values():
            if grant.workspace.team_id == team_id and not grant.revoked:
                self._kill(grant)
                killed += 1
        return killed

    def expire(self, team_id: str) -> int:
        """Make every expiring access token of the workspace expire now; returns how many."""
        now = self._clock()
        expired = 0
        for entry in self._tokens.values():
            if entry.grant.workspace.team_id == team_id and entry.expires_at is not None and entry.expires_at > now:
                entry.expires_at = now
                expired += 1
        return expired

    def live_tokens(self, team_id: str, kind: TokenKind = "bot") -> list[str]:
        """The workspace's usable access tokens of one kind, oldest first."""
        now = self._clock()
        return [
            token
            for token, entry in self._tokens.items()
            if entry.grant.workspace.team_id == team_id
            and entry.grant.kind == kind
            and not entry.grant.revoked
            and (entry.expires_at is None or entry.expires_at > now)
        ]

    def reset(self) -> None:
        """Drop pending authorization codes and refresh counts (workspaces and tokens stay)."""
        self._codes.clear()
        self._refresh_counts.clear()

    # -- helpers ---------------------------------------------------------------------

    def _issue(self, grant: _Grant) -> tuple[str, str | None, int | None]:
        """A new access token for ``grant`` (and a refresh token with rotation)."""
        if self.token_rotation:
            prefix = "xoxb" if grant.kind == "bot" else "xoxp"
            token = f"xoxe.{prefix}-1-{_alnum(88)}"
            refresh = f"xoxe-1-{_alnum(120)}"
            grant.refresh_token = refresh
            self._refresh_tokens[refresh] = grant
            self._tokens[token] = _AccessToken(grant, self._clock() + self.token_ttl)
            return token, refresh, int(self.token_ttl)
        if grant.kind == "bot":
            token = f"xoxb-{_digits(13)}-{_digits(13)}-{_alnum(24)}"
        else:
            token = f"xoxp-{_digits(13)}-{_digits(13)}-{_digits(13)}-{secrets.token_hex(16)}"
        self._tokens[token] = _AccessToken(grant, None)
        return token, None, None

    @staticmethod
    def _rotation_fields(refresh: str | None, expires_in: int | None) -> JsonDict:
        """``refresh_token`` and ``expires_in`` when token rotation issued them."""
        return {} if refresh is None else {"refresh_token": refresh, "expires_in": expires_in}

    @staticmethod
    def _enterprise(workspace: Workspace) -> JsonDict | None:
        """The ``enterprise`` object of an answer (null outside Enterprise Grid)."""
        return {"name": ENTERPRISE_NAME, "id": workspace.enterprise_id} if workspace.enterprise_id else None

    def _kill(self, grant: _Grant) -> None:
        """Revoke a credential and its pending refresh token."""
        grant.revoked = True
        if grant.refresh_token is not None:
            self._refresh_tokens.pop(grant.refresh_token, None)
            grant.refresh_token = None
