"""The notification funnel: triggered, sent, acted on, handled, replied.

The region that sent a notification records each stage it reaches as one event of one
schema, with an id that makes a retry record nothing twice. The receiver and the
Slack reply helpers call the hooks below; :mod:`silo_router.region.notifications`
records ``triggered`` and ``sent``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from silo_router.envelope import Envelope


def on_acted(envelope: Envelope) -> None:
    """Control received a click on a notification: record ``acted`` at control's arrival time."""


def on_handled(envelope: Envelope, *, ok: bool, error: str | None = None) -> None:
    """The region ran (or failed to run) the handler for a click on a notification."""


def on_replied(envelope: Envelope, *, method: str, ok: bool, error: str | None = None, **facts: Any) -> None:
    """A reply to a click on a notification reached Slack, or did not (``error``: Slack's code)."""


def facts_of(envelope: Envelope) -> Mapping[str, Any]:
    """What the funnel records of an envelope besides its notification id (kind, region)."""
    return {"kind": envelope.kind, "region": envelope.region}
