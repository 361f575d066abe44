"""Where a request goes: installation -> organizations -> regions."""

from __future__ import annotations

import abc
import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from silo_router.conf import conf
from silo_router.providers.base import InboundRequest

from .lookup_cache import LookupCache
from .routing import Fanout, fanout_for

if TYPE_CHECKING:
    from django.db.models import Q

    from .models import Integration

logger = logging.getLogger("silo_router.control")


@dataclasses.dataclass(frozen=True)
class Target:
    """One region and the organizations in it that a request concerns."""

    region: str
    organization_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Resolution:
    """The resolver's answer. No targets means the request is unroutable; ``reason`` says why."""

    integration_id: str | None
    targets: tuple[Target, ...]
    reason: str = ""


class Resolver(abc.ABC):
    """Maps a classified request to the regions that must handle it."""

    @abc.abstractmethod
    def resolve(self, inbound: InboundRequest) -> Resolution:
        """Return the targets for ``inbound`` (empty when nothing matches)."""


def group_by_region(
    organizations: Sequence[tuple[str, str, str]], *, inbound: InboundRequest, integration_id: str | None
) -> Resolution:
    """Build a resolution from ``(organization_id, slug, region)`` rows.

    An organization hint in the payload that names one of the rows (by id or slug)
    narrows the targets to it; a hint naming anything else is ignored, so a payload
    cannot route itself into an organization the installation does not belong to.
    Rows naming a region that is not in ``REGIONS`` are dropped (with a warning): such
    a target can never be delivered. The fan-out policy for the kind then keeps every
    region or the first one.
    """
    rows = list(organizations)
    hint = inbound.organization_hint
    if hint:
        hinted = [row for row in rows if hint in (row[0], row[1])]
        rows = hinted or rows
    known = conf.REGIONS
    unknown = sorted({region for _, _, region in rows if region not in known})
    if unknown:
        logger.warning("organizations map to regions not in REGIONS (%s); dropping them", ", ".join(unknown))
    by_region: dict[str, list[str]] = {}
    for organization_id, _slug, region in rows:
        if region in known:
            by_region.setdefault(region, []).append(organization_id)
    targets = tuple(Target(region=r, organization_ids=tuple(ids)) for r, ids in by_region.items())
    if fanout_for(inbound) is Fanout.ONE:
        targets = targets[:1]
    reason = ""
    if not targets:
        reason = (
            f"integration {integration_id} maps only to regions not in REGIONS: {', '.join(unknown)}"
            if unknown
            else f"integration {integration_id} has no organizations"
        )
    return Resolution(integration_id=integration_id, targets=targets, reason=reason)


CacheKey = tuple[str, str, str, str, bool]


@dataclasses.dataclass(frozen=True)
class _Lookup:
    integration_id: str | None
    rows: tuple[tuple[str, str, str], ...]
    reason: str
    #: Set when the installation was deactivated: why requests from it are unroutable.
    deactivated: str = ""


class ModelResolver(Resolver):
    """The default: ``Integration`` rows by team (or enterprise) id, then their organizations.

    Answers are kept per process for ``RESOLVER_CACHE_SECONDS`` (5 s), at most
    ``RESOLVER_CACHE_SIZE`` installations (least recently used are evicted first, so
    requests from any number of unknown team ids cannot grow it), so the control path
    does no routing query for a busy workspace; a change saved in this process clears
    the cache at once (signals), other processes see it within that time.

    A deactivated installation (uninstalled, tokens revoked) routes nothing: its
    requests resolve to no targets with the reason, except Slack's lifecycle events
    themselves (the ``app_uninstalled`` that deactivated it and its retries still reach
    the regions).
    """

    def __init__(self) -> None:
        self._cache: LookupCache[CacheKey, _Lookup] = LookupCache()
        connect_invalidation(self._cache.clear)

    def clear(self) -> None:
        """Forget every cached answer."""
        self._cache.clear()

    def cache_size(self) -> int:
        """How many installations are cached now."""
        return len(self._cache)

    def resolve(self, inbound: InboundRequest) -> Resolution:
        keys = inbound.routing
        cache_key = (
            inbound.provider,
            keys.team_id or "",
            keys.enterprise_id or "",
            keys.app_id or "",
            keys.is_enterprise_install,
        )
        hit = self._cache.get(cache_key)
        if hit is None:
            hit = self._lookup(inbound)
            self._cache.put(cache_key, hit)
        if hit.integration_id is None:
            return Resolution(integration_id=None, targets=(), reason=hit.reason)
        if hit.deactivated:
            from .slack.lifecycle import is_lifecycle_event

            if not is_lifecycle_event(inbound):
                return Resolution(integration_id=hit.integration_id, targets=(), reason=hit.deactivated)
        return group_by_region(hit.rows, inbound=inbound, integration_id=hit.integration_id)

    @staticmethod
    def _lookup(inbound: InboundRequest) -> _Lookup:
        from django.db.models import Q

        from .models import Integration

        keys = inbound.routing
        match = Q()
        if keys.team_id:
            match |= Q(external_id=keys.team_id)
        if keys.enterprise_id:
            match |= Q(external_id=keys.enterprise_id)
        if not match:
            return _Lookup(None, (), "the request names no team or enterprise")
        candidates = Integration.objects.filter(match, provider=inbound.provider)
        if keys.app_id:
            candidates = candidates.filter(Q(app_id="") | Q(app_id=keys.app_id))
        # The installation Slack names first: the org-wide one when the request says it is
        # for an enterprise install (authorizations[0]), else the workspace one; then an
        # app-specific row over one that matches every app.
        preferred = keys.enterprise_id if keys.is_enterprise_install else keys.team_id
        ranked = sorted(candidates, key=lambda i: (i.external_id != preferred, i.app_id == "", i.pk))
        if not ranked:
            return _Lookup(None, (), _no_installation_reason(inbound, match))
        integration = ranked[0]
        rows = integration.organizations.order_by("id").values_list("organization_id", "slug", "region")
        deactivated = "" if integration.active else _deactivation_reason(integration)
        return _Lookup(str(integration.pk), tuple(rows), "", deactivated)


def _deactivation_reason(integration: Integration) -> str:
    """Why a deactivated installation routes nothing, e.g. ``installation 4 (team T...) was deactivated: ...``."""
    what = "enterprise" if integration.is_enterprise_install else "team"
    when = f" at {integration.deactivated_at.isoformat()}" if integration.deactivated_at else ""
    why = integration.deactivation_reason or "deactivated by an operator"
    return f"installation {integration.pk} ({what} {integration.external_id}) was deactivated: {why}{when}"


def _no_installation_reason(inbound: InboundRequest, match: Q) -> str:
    """Why no installation matched, naming a provider typo when that is the cause."""
    from .models import Integration

    keys = inbound.routing
    ids = " / ".join(
        f"{what} {value}" for what, value in (("team", keys.team_id), ("enterprise", keys.enterprise_id)) if value
    )
    others = Integration.objects.filter(match).exclude(provider=inbound.provider)
    unregistered = sorted({name for name in others.values_list("provider", flat=True) if name not in conf.PROVIDERS})
    missing = f"no {inbound.provider} installation for {ids}"
    if unregistered:
        return f"{missing}; integrations name providers not in PROVIDERS: {', '.join(unregistered)}"
    return missing


def connect_invalidation(handler: Callable[..., None]) -> None:
    """Clear ``handler``'s cache whenever installations or organizations change in this process."""
    from django.db.models.signals import m2m_changed, post_delete, post_save

    from .models import Integration, OrganizationMapping

    for model in (Integration, OrganizationMapping):
        post_save.connect(handler, sender=model)
        post_delete.connect(handler, sender=model)
    m2m_changed.connect(handler, sender=Integration.organizations.through)
