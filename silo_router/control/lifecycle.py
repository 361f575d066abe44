"""Installation lifecycle events (an uninstall, revoked tokens), applied in control.

The pipeline stores such an event for the regions like any other request (they may
handle it, ``@slack.event("app_uninstalled")``), then applies it here, and answers the
provider only once both are committed: a failure is a 503 the provider retries, and
storing the retry again is a no-op. What applying means is the provider's business
(Slack: :mod:`silo_router.control.slack.lifecycle`).
"""

from __future__ import annotations

from silo_router.providers.base import InboundRequest

from .slack import lifecycle as slack_lifecycle


def is_lifecycle_event(inbound: InboundRequest) -> bool:
    """Whether ``inbound`` changes its installation (Slack: ``app_uninstalled``, ``tokens_revoked``)."""
    return slack_lifecycle.is_lifecycle_event(inbound)


def apply(inbound: InboundRequest, integration_id: str | None) -> str | None:
    """Apply a lifecycle event to installation ``integration_id``; the reason recorded, or ``None``.

    Raises ``DatabaseError`` when the change cannot be saved (the caller answers 503).
    """
    return slack_lifecycle.apply(inbound, integration_id) if is_lifecycle_event(inbound) else None
