"""Notifications sent from a region, clicked in Slack, and their funnel.

The fake Slack and two installed workspaces come from ``tests/workspaces``; sentry-sdk
is initialised with the capture transport of ``tests/sentry_capture.py``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from silo_router.envelope import Envelope
from silo_router.region import notifications

from ..sentry_capture import Captured, CaptureSentry
from ..slack_signing import interactive_body
from ..workspaces.conftest import APP_ID, Installed, fake, workspaces  # noqa: F401  (fixtures shared with tests/workspaces)

#: An action block with two buttons, as an app builds it.
BLOCKS = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "Disk almost full on *db-1*"}},
    {
        "type": "actions",
        "block_id": "incident",
        "elements": [
            {"type": "button", "action_id": "acknowledge", "text": {"type": "plain_text", "text": "Ack"}, "value": "7"},
            {"type": "button", "action_id": "escalate", "text": {"type": "plain_text", "text": "Escalate"}},
        ],
    },
]


@pytest.fixture
def captured(capture_sentry: CaptureSentry) -> Captured:
    """sentry-sdk initialised as README recommends (its scrubbing hooks on), sending to a capture transport."""
    return capture_sentry(scrubbed=True)


def send(workspace: Installed, **options: Any) -> notifications.Notification:
    """An incident notification with two buttons to ``workspace``'s channel, from outside any handler."""
    fields: dict[str, Any] = {
        "installation_id": workspace.installation_id,
        "channel": workspace.channel,
        "name": "incident_opened",
        "text": "Disk almost full on db-1",
        "blocks": BLOCKS,
    }
    fields.update(options)
    return notifications.send(**fields)


def click_envelope(
    workspace: Installed, payload: dict[str, Any], *, notification_id: str | None, received_at: float | None = None
) -> Envelope:
    """What control sends the region for a click: the notification id it read and its arrival time."""
    key = f"slack:body:{time.monotonic_ns()}"
    return Envelope(
        id=Envelope.make_id(key, workspace.region),
        idempotency_key=key,
        provider="slack",
        kind=f"block_actions:{payload['actions'][0]['action_id']}",
        region=workspace.region,
        body=interactive_body(payload).decode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
        strategy="async",
        organization_ids=(workspace.organization_id,),
        integration_id=workspace.installation_id,
        installation={
            "installation_id": workspace.installation_id,
            "team_id": workspace.team_id,
            "app_id": APP_ID,
            "bot_id": workspace.bot_id,
            "bot_user_id": workspace.bot_user_id,
            "scopes": ["chat:write"],
        },
        notification_id=notification_id,
        received_at=time.time() if received_at is None else received_at,
    )
