"""Which installation's credentials a request uses: the control silo's ``Authorizer``."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from django.db.models import Q, QuerySet

from silo_router.conf import conf
from silo_router.providers.base import Authorization, RoutingKeys

from ..lookup_cache import LookupCache
from ..models import Integration, SlackInstallation
from . import rotation
from .rotation import rotate_expiring_tokens
from .store import PROVIDER

__all__ = ["InstallationAuthorizer", "authorization_of", "rotate_expiring_tokens"]

CacheKey = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Entry:
    authorization: Authorization | None
    #: Unix time the token expires (``None``: it does not).
    expires_at: float | None


def authorization_of(record: SlackInstallation) -> Authorization:
    """The ``Authorization`` of an installation row (its bot token decrypted)."""
    integration = record.integration
    org_wide = integration.is_enterprise_install
    return Authorization(
        installation_id=str(integration.pk),
        token=record.bot_token or "",
        team_id=None if org_wide else integration.external_id,
        enterprise_id=integration.enterprise_id or None,
        is_enterprise_install=org_wide,
        app_id=integration.app_id or None,
        bot_id=record.bot_id or None,
        bot_user_id=record.bot_user_id or None,
        scopes=tuple(scope for scope in record.bot_scopes.split(",") if scope),
    )


def usable() -> QuerySet[SlackInstallation]:
    """Active installations that hold a bot token."""
    return (
        SlackInstallation.objects.select_related("integration")
        .filter(integration__provider=PROVIDER, integration__active=True)
        .exclude(encrypted_bot_token="")
    )


class InstallationAuthorizer:
    """Finds an installation's bot token in the control database.

    ``authorize`` ranks installations as ``ModelResolver`` does: the org-wide install
    when the request says it is for one, else the team's; an app-specific row over one
    that matches every app. The first one must be active and hold a bot token, else the
    answer is ``None`` (no fallback to another installation).

    Answers are kept per process for ``RESOLVER_CACHE_SECONDS``, at most
    ``RESOLVER_CACHE_SIZE`` of them (least recently used go first); a change to an
    installation saved in this process clears the cache at once. A token that expires
    within ``SLACK["TOKEN_ROTATION_MARGIN"]`` is refreshed first (:mod:`.rotation`).
    """

    def __init__(self) -> None:
        self._cache: LookupCache[CacheKey, _Entry] = LookupCache()
        connect_invalidation(self._cache.clear)

    def clear(self) -> None:
        """Forget every cached answer."""
        self._cache.clear()

    def cache_size(self) -> int:
        """How many answers are cached now."""
        return len(self._cache)

    def authorize(self, routing: RoutingKeys) -> Authorization | None:
        key = (
            "routing",
            routing.team_id or "",
            routing.enterprise_id or "",
            routing.app_id or "",
            str(routing.is_enterprise_install),
        )
        return self._cached(key, lambda: self._lookup(routing))

    def for_installation(self, installation_id: str) -> Authorization | None:
        if not str(installation_id).isdigit():
            return None
        return self._cached(("id", str(installation_id)), lambda: self._by_id(int(installation_id)))

    def _cached(self, key: CacheKey, load: Callable[[], SlackInstallation | None]) -> Authorization | None:
        hit = self._cache.get(key)
        if hit is not None and not self._due(hit):
            return hit.authorization
        record = load()
        if record is not None:
            record = self._fresh(record)
        entry = _Entry(
            authorization=authorization_of(record) if record is not None and record.has_bot_token else None,
            expires_at=record.bot_token_expires_at.timestamp() if record and record.bot_token_expires_at else None,
        )
        self._cache.put(key, entry)
        return entry.authorization

    @staticmethod
    def _due(entry: _Entry) -> bool:
        """Whether the cached token expires within the rotation margin (then it is looked at again)."""
        margin = float(conf.SLACK["TOKEN_ROTATION_MARGIN"])
        return entry.expires_at is not None and entry.expires_at <= time.time() + margin

    @staticmethod
    def _fresh(record: SlackInstallation) -> SlackInstallation | None:
        """The installation with a token that is not about to expire (refreshed if needed)."""
        return rotation.ensure_fresh(record)

    @staticmethod
    def _lookup(routing: RoutingKeys) -> SlackInstallation | None:
        match = Q()
        if routing.team_id:
            match |= Q(integration__external_id=routing.team_id)
        if routing.enterprise_id:
            match |= Q(integration__external_id=routing.enterprise_id)
        if not match:
            return None
        candidates = SlackInstallation.objects.select_related("integration").filter(
            match, integration__provider=PROVIDER
        )
        if routing.app_id:
            candidates = candidates.filter(Q(integration__app_id="") | Q(integration__app_id=routing.app_id))
        preferred = routing.enterprise_id if routing.is_enterprise_install else routing.team_id
        ranked = sorted(
            candidates,
            key=lambda r: (r.integration.external_id != preferred, r.integration.app_id == "", r.integration.pk),
        )
        # The installation the resolver routes to; deactivated (or without a bot token), it
        # authorizes nothing rather than falling back to another installation.
        if not ranked or not ranked[0].integration.active or not ranked[0].has_bot_token:
            return None
        return ranked[0]

    @staticmethod
    def _by_id(pk: int) -> SlackInstallation | None:
        return usable().filter(integration__pk=pk).first()


def connect_invalidation(handler: Callable[..., None]) -> None:
    """Clear ``handler``'s cache whenever an installation changes in this process."""
    from django.db.models.signals import post_delete, post_save

    for model in (Integration, SlackInstallation):
        post_save.connect(handler, sender=model)
        post_delete.connect(handler, sender=model)
