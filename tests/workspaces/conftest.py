"""Two workspaces installed for real: tokens from the fake Slack's OAuth, stored by the installation store.

The monolith test settings without ``BOT_TOKEN``: every Slack call must use the token
of the installation the request belongs to, and the fake Slack refuses a token of the
wrong workspace (the trigger's, the view's, the channel's), so a wrong token fails.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from slack_sdk import WebClient
from slack_sdk.oauth.installation_store import Installation

from example_project.fake_slack import FakeSlack
from silo_router.control.models import Integration, Option, OrganizationMapping
from silo_router.control.options import CONTROL_RESPONSE_ACTIONS, CONTROL_RESPONSES_ENABLED, options
from silo_router.control.slack.store import DjangoInstallationStore
from silo_router.envelope import Envelope

from ..slack_signing import block_actions, interactive_body, post_slack

CLIENT_ID, CLIENT_SECRET = "111.222", "tests-client-secret"
APP_ID = "A0APP0001"
T1, T2 = "T0WSONE01", "T0WSTWO02"
C1, C2 = "C0ONE0001", "C0TWO0002"
USER = "U0USER001"
SCOPES = ("chat:write", "commands", "channels:history")


@dataclasses.dataclass(frozen=True)
class Installed:
    """One workspace with the app installed: what control stored, what Slack knows."""

    team_id: str
    channel: str
    organization_id: str
    region: str
    installation_id: str
    bot_user_id: str
    bot_id: str
    token: str = dataclasses.field(repr=False)

    @property
    def integration(self) -> Integration:
        return Integration.objects.get(pk=self.installation_id)


@pytest.fixture
def fake(settings: Any) -> Iterator[FakeSlack]:
    """A fake Slack with two workspaces, and a multi-workspace app (no BOT_TOKEN) pointed at it."""
    with FakeSlack(
        signing_secret=settings.SLACK_SIGNING_SECRET, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    ) as server:
        server.add_workspace(T1, name="One", channels=(C1,))
        server.add_workspace(T2, name="Two", channels=(C2,))
        slack = {key: value for key, value in settings.SILO_ROUTER["SLACK"].items() if key != "BOT_TOKEN"}
        slack.update({"API_URL": server.api_url, "CLIENT_ID": CLIENT_ID, "CLIENT_SECRET": CLIENT_SECRET})
        settings.SILO_ROUTER = {
            **settings.SILO_ROUTER,
            "SLACK": slack,
            "REDACTED_URL_PREFIXES": [f"{server.base_url}/response/"],
        }
        yield server


def install(fake: FakeSlack, team_id: str, *, channel: str, organization: OrganizationMapping) -> Installed:
    """Install the app into ``team_id`` as control's OAuth flow does: oauth.v2.access, auth.test, save."""
    access = fake.install(team_id, scopes=SCOPES)
    token = access["access_token"]
    who = WebClient(token=token, base_url=fake.api_url).auth_test()
    enterprise = access.get("enterprise") or {}
    installer = access.get("authed_user") or {}
    installation = Installation(
        app_id=access.get("app_id"),
        enterprise_id=enterprise.get("id"),
        team_id=(access.get("team") or {}).get("id"),
        team_name=(access.get("team") or {}).get("name"),
        bot_token=token,
        bot_id=who["bot_id"],
        bot_user_id=access.get("bot_user_id"),
        bot_scopes=access.get("scope"),
        user_id=installer.get("id") or USER,
        token_type=access.get("token_type"),
        is_enterprise_install=bool(access.get("is_enterprise_install")),
        installed_at=time.time(),
    )
    integration = DjangoInstallationStore().save_for(installation, organization=organization)
    return Installed(
        team_id=team_id,
        channel=channel,
        organization_id=organization.organization_id,
        region=organization.region,
        installation_id=str(integration.pk),
        bot_user_id=str(access["bot_user_id"]),
        bot_id=str(who["bot_id"]),
        token=token,
    )


@pytest.fixture
def workspaces(fake: FakeSlack, transactional_db: None) -> dict[str, Installed]:
    """T1 installed for organization 101 (region us), T2 for organization 201 (region eu)."""
    acme = OrganizationMapping.objects.create(organization_id="101", slug="acme", region="us")
    globex = OrganizationMapping.objects.create(organization_id="201", slug="globex", region="eu")
    return {
        T1: install(fake, T1, channel=C1, organization=acme),
        T2: install(fake, T2, channel=C2, organization=globex),
    }


def region_envelope(
    workspace: Installed,
    body: str,
    *,
    kind: str,
    strategy: str = "async",
    content_type: str = "application/x-www-form-urlencoded",
    created_at: float | None = None,
) -> Envelope:
    """What control seals for ``workspace``'s region: the original body and the installation's facts."""
    key = f"k-{time.monotonic_ns()}"
    return Envelope(
        id=Envelope.make_id(key, workspace.region),
        idempotency_key=key,
        provider="slack",
        kind=kind,
        region=workspace.region,
        body=body,
        headers={"content-type": content_type},
        strategy=strategy,
        organization_ids=(workspace.organization_id,),
        integration_id=workspace.installation_id,
        installation={
            "installation_id": workspace.installation_id,
            "team_id": workspace.team_id,
            "enterprise_id": None,
            "is_enterprise_install": False,
            "app_id": APP_ID,
            "bot_id": workspace.bot_id,
            "bot_user_id": workspace.bot_user_id,
            "scopes": ["chat:write", "commands"],
        },
        created_at=time.time() if created_at is None else created_at,
    )


def enable_loading_modal(action_id: str = "resolve_dialog") -> None:
    """Operators switch the Loading modal on for ``action_id`` (the admin's options)."""
    Option.objects.update_or_create(key=CONTROL_RESPONSES_ENABLED, defaults={"value": True})
    Option.objects.update_or_create(key=CONTROL_RESPONSE_ACTIONS, defaults={"value": [action_id]})
    options.invalidate()


def click_payload(
    fake: FakeSlack, workspace: Installed, action_id: str = "resolve_dialog", **extra: Any
) -> dict[str, Any]:
    """A button click in ``workspace``'s channel, with a trigger and a response_url of that workspace."""
    payload = block_actions(
        team_id=workspace.team_id,
        action_id=action_id,
        trigger_id=fake.issue_trigger(team_id=workspace.team_id),
        channel={"id": workspace.channel, "name": "general"},
        container={"type": "message", "message_ts": "1700000000.000100", "channel_id": workspace.channel},
    )
    payload["response_url"] = fake.issue_response_url(team_id=workspace.team_id, channel_id=workspace.channel)
    payload.update(extra)
    return payload


def click(client: Client, fake: FakeSlack, workspace: Installed, **extra: Any) -> Any:
    """Post a signed click from ``workspace`` to control; the in-process delivery finishes first."""
    return post_slack(client, interactive_body(click_payload(fake, workspace, **extra)))


def event_body(workspace: Installed, event: dict[str, Any], *, event_id: str) -> bytes:
    """A signed-ready Events API body of ``workspace`` (authorizations[0] names its bot)."""
    return json.dumps(
        {
            "type": "event_callback",
            "token": "unused",
            "team_id": workspace.team_id,
            "api_app_id": APP_ID,
            "event": event,
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": workspace.team_id,
                    "user_id": workspace.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
        }
    ).encode()


def post_event(client: Client, workspace: Installed, event: dict[str, Any], *, event_id: str, **kwargs: Any) -> Any:
    return post_slack(
        client, event_body(workspace, event, event_id=event_id), content_type="application/json", **kwargs
    )


def mention(workspace: Installed, *, user: str = USER, text: str = "hi") -> dict[str, Any]:
    return {"type": "app_mention", "user": user, "text": text, "ts": "1700000000.000200", "channel": workspace.channel}
