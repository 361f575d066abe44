"""slack_sdk ``Installation`` objects as Slack's oauth.v2.access answers describe them."""

from __future__ import annotations

import time
from typing import Any

from slack_sdk.oauth.installation_store import Installation

APP_ID = "A0APP0001"


def workspace_install(team_id: str = "T0US00001", **overrides: Any) -> Installation:
    """A workspace install (``enterprise_id`` set: a workspace inside a Grid org)."""
    fields: dict[str, Any] = {
        "app_id": APP_ID,
        "team_id": team_id,
        "team_name": f"Team {team_id}",
        "bot_token": f"xoxb-{team_id}-secret-bot-token",
        "bot_id": f"B{team_id[1:]}",
        "bot_user_id": f"U{team_id[1:]}",
        "bot_scopes": "chat:write,commands",
        "user_id": "U0INSTALL1",
        "user_token": f"xoxp-{team_id}-secret-user-token",
        "user_scopes": "search:read",
        "incoming_webhook_url": f"https://hooks.slack.com/services/{team_id}/B0/secret-webhook",
        "incoming_webhook_channel": "#general",
        "incoming_webhook_channel_id": "C0CHAN001",
        "token_type": "bot",
        "installed_at": time.time(),
    }
    fields.update(overrides)
    return Installation(**fields)


def org_wide_install(enterprise_id: str = "E0ENT0001", **overrides: Any) -> Installation:
    """An org-wide install of an Enterprise Grid org (no team)."""
    fields: dict[str, Any] = {
        "team_name": None,
        "enterprise_id": enterprise_id,
        "enterprise_name": f"Enterprise {enterprise_id}",
        "enterprise_url": f"https://{enterprise_id.lower()}.enterprise.slack.com/",
        "is_enterprise_install": True,
        "bot_token": f"xoxb-{enterprise_id}-secret-bot-token",
        "bot_id": f"B{enterprise_id[1:]}",
        "bot_user_id": f"U{enterprise_id[1:]}",
    }
    fields.update(overrides)
    installation = workspace_install(**fields)
    installation.team_id = None
    return installation


def rotating_install(team_id: str = "T0ROT0001", *, expires_in: int = 43200, **overrides: Any) -> Installation:
    """A workspace install with token rotation on (a refresh token and an expiry)."""
    fields: dict[str, Any] = {
        "bot_token": f"xoxe.xoxb-{team_id}-first",
        "bot_refresh_token": f"xoxe-1-{team_id}-refresh-first",
        "bot_token_expires_in": expires_in,
    }
    fields.update(overrides)
    return workspace_install(team_id=team_id, **fields)
