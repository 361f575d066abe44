"""A stored payload whose control response opened a Loading modal at the fake Slack."""

from __future__ import annotations

from typing import Any

from slack_sdk import WebClient

from example_project.fake_slack import FakeSlack
from silo_router.control import delivery
from silo_router.envelope import Envelope


def stored_with_loading_modal(fake: FakeSlack, *, key: str = "k-loading") -> tuple[str, dict[str, Any]]:
    """Open a Loading modal at ``fake`` and store a payload that says so; ``(payload id, view)``."""
    view = WebClient(token="xoxb-tests", base_url=fake.api_url).views_open(
        trigger_id=fake.issue_trigger(),
        view={"type": "modal", "title": {"type": "plain_text", "text": "Loading"}, "blocks": []},
    )["view"]
    envelope = Envelope(
        id=Envelope.make_id(key, "us"),
        idempotency_key=key,
        provider="slack",
        kind="block_actions:resolve_dialog",
        region="us",
        body="{}",
        headers={},
        strategy="async",
        control_response={
            "handler": "slack.loading_modal",
            "status": "opened",
            "view_id": view["id"],
            "hash": view["hash"],
        },
    )
    (payload,) = delivery.store([envelope])
    return str(payload.pk), view
