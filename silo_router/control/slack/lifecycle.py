"""Slack's lifecycle events: an uninstalled app or revoked tokens deactivate the installation.

``app_uninstalled`` deactivates the installation (its tokens are wiped); so does
``tokens_revoked`` naming its bot user. ``tokens_revoked`` naming only users (``oauth``)
wipes the installing user's token and leaves the installation active. Only
installations whose credentials control stores (a ``SlackInstallation``) are changed:
a routing-only ``Integration`` of a single-token app is left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from silo_router.providers.base import InboundRequest

from ..models import Integration, SlackInstallation
from .store import PROVIDER, DjangoInstallationStore, wipe_user_token

logger = logging.getLogger("silo_router.control")

APP_UNINSTALLED = "app_uninstalled"
TOKENS_REVOKED = "tokens_revoked"
LIFECYCLE_EVENTS = frozenset({APP_UNINSTALLED, TOKENS_REVOKED})


def is_lifecycle_event(inbound: InboundRequest) -> bool:
    """Whether ``inbound`` is one of Slack's lifecycle events (routed even for a deactivated installation)."""
    return inbound.provider == PROVIDER and inbound.type == "event_callback" and inbound.name in LIFECYCLE_EVENTS


def _revoked(payload: Mapping[str, Any], kind: str) -> set[str]:
    event = payload.get("event")
    tokens = event.get("tokens") if isinstance(event, Mapping) else None
    ids = tokens.get(kind) if isinstance(tokens, Mapping) else None
    return {str(i) for i in ids if isinstance(i, str)} if isinstance(ids, list) else set()


def apply(inbound: InboundRequest, integration_id: str | None) -> str | None:
    """Apply a lifecycle event to the installation it concerns; return the deactivation reason, or ``None``.

    ``integration_id`` is the installation the request resolved to (else the one it
    was authorized with).
    """
    if not is_lifecycle_event(inbound):
        return None
    if integration_id is None and inbound.authorization is not None:
        integration_id = inbound.authorization.installation_id or None
    if not integration_id or not str(integration_id).isdigit():
        return None
    record = SlackInstallation.objects.select_related("integration").filter(integration_id=int(integration_id)).first()
    if record is None:
        return None
    integration: Integration = record.integration
    store = DjangoInstallationStore()
    if inbound.name == APP_UNINSTALLED:
        store.deactivate(integration, reason=APP_UNINSTALLED)
        logger.info("slack installation %s deactivated: %s", integration.pk, APP_UNINSTALLED)
        return APP_UNINSTALLED
    if record.bot_user_id and record.bot_user_id in _revoked(inbound.payload, "bot"):
        store.deactivate(integration, reason=TOKENS_REVOKED)
        logger.info("slack installation %s deactivated: %s", integration.pk, TOKENS_REVOKED)
        return TOKENS_REVOKED
    if record.user_id and record.user_id in _revoked(inbound.payload, "oauth"):
        wipe_user_token(record)
        logger.info("slack installation %s: the installing user's token was revoked", integration.pk)
    return None
