"""Notifications sent from a region, clicked in Slack, and their funnel.

The fake Slack and two installed workspaces come from ``tests/workspaces``; sentry-sdk
is initialised with a transport that keeps what it would send.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope as SentryEnvelope
from sentry_sdk.transport import Transport

from silo_router import tracing
from silo_router.envelope import Envelope
from silo_router.region import notifications

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


class CapturingTransport(Transport):
    """Keeps what sentry-sdk would send (transactions and metrics), and every raw byte of it."""

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self.transactions: list[dict[str, Any]] = []
        self.metrics: list[dict[str, Any]] = []
        self.raw: list[bytes] = []

    def capture_envelope(self, envelope: SentryEnvelope) -> None:
        for item in envelope.items:
            raw = item.get_bytes()
            self.raw.append(raw)
            if item.type == "transaction":
                self.transactions.append(json.loads(raw))
            elif item.type == "trace_metric":
                self.metrics.extend(json.loads(raw).get("items", ()))

    def spans(self) -> list[dict[str, Any]]:
        """Every span sent: each transaction's root (its trace context, with its tags) and its children."""
        return [{**t["contexts"]["trace"], "tags": t.get("tags") or {}} for t in self.transactions] + [
            span for t in self.transactions for span in t.get("spans", ())
        ]

    def transaction(self, op: str) -> dict[str, Any]:
        return next(t for t in self.transactions if t["contexts"]["trace"]["op"] == op)


@pytest.fixture
def captured() -> Iterator[CapturingTransport]:
    """sentry-sdk initialised as README recommends, sending to a :class:`CapturingTransport`."""
    transport = CapturingTransport()
    sentry_sdk.init(  # as README recommends
        dsn="https://key@sentry.invalid/1",
        transport=transport,
        traces_sampler=tracing.traces_sampler,
        before_send=tracing.before_send,
        before_send_transaction=tracing.before_send_transaction,
    )
    yield transport
    sentry_sdk.get_client().close()
    sentry_sdk.init()


def flush(captured: CapturingTransport) -> CapturingTransport:
    sentry_sdk.flush()
    return captured


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
