"""Where a request goes: installation -> organizations -> regions."""

from __future__ import annotations

import abc
import dataclasses
import time
from collections.abc import Callable, Sequence

from silo_router.conf import conf
from silo_router.providers.base import InboundRequest

from .routing import Fanout, fanout_for


@dataclasses.dataclass(frozen=True)
class Target:
    """One region and the organizations in it that a request concerns."""

    region: str
    organization_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Resolution:
    """The resolver's answer. No targets means the request is unroutable."""

    integration_id: str | None
    targets: tuple[Target, ...]


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
    The fan-out policy for the kind then keeps every region or the first one.
    """
    rows = list(organizations)
    hint = inbound.organization_hint
    if hint:
        hinted = [row for row in rows if hint in (row[0], row[1])]
        rows = hinted or rows
    by_region: dict[str, list[str]] = {}
    for organization_id, _slug, region in rows:
        by_region.setdefault(region, []).append(organization_id)
    targets = tuple(Target(region=r, organization_ids=tuple(ids)) for r, ids in by_region.items())
    if fanout_for(inbound) is Fanout.ONE:
        targets = targets[:1]
    return Resolution(integration_id=integration_id, targets=targets)


class ModelResolver(Resolver):
    """The default: ``Integration`` rows by team (or enterprise) id, then their organizations.

    Answers are kept per process for ``RESOLVER_CACHE_SECONDS`` (5 s), so the control
    path does no routing query for a busy workspace; a change saved in this process
    clears the cache at once (signals), other processes see it within that time.
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str, str, str], tuple[float, str | None, list[tuple[str, str, str]]]] = {}
        connect_invalidation(self.clear)

    def clear(self, **kwargs: object) -> None:
        self._cache.clear()

    def resolve(self, inbound: InboundRequest) -> Resolution:
        keys = inbound.routing
        cache_key = (inbound.provider, keys.team_id or "", keys.enterprise_id or "", keys.app_id or "")
        now = time.monotonic()
        hit = self._cache.get(cache_key)
        if hit is None or now - hit[0] > conf.seconds("RESOLVER_CACHE_SECONDS"):
            integration_id, rows = self._lookup(inbound)
            self._cache[cache_key] = hit = (now, integration_id, rows)
        _, integration_id, rows = hit
        if integration_id is None:
            return Resolution(integration_id=None, targets=())
        return group_by_region(rows, inbound=inbound, integration_id=integration_id)

    @staticmethod
    def _lookup(inbound: InboundRequest) -> tuple[str | None, list[tuple[str, str, str]]]:
        from django.db.models import Q

        from .models import Integration

        keys = inbound.routing
        match = Q()
        if keys.team_id:
            match |= Q(external_id=keys.team_id)
        if keys.enterprise_id:
            match |= Q(external_id=keys.enterprise_id)
        if not match:
            return None, []
        candidates = Integration.objects.filter(match, provider=inbound.provider)
        if keys.app_id:
            candidates = candidates.filter(Q(app_id="") | Q(app_id=keys.app_id))
        # Prefer the workspace install over an org-wide one, and an app-specific row.
        ranked = sorted(candidates, key=lambda i: (i.external_id != keys.team_id, i.app_id == "", i.pk))
        if not ranked:
            return None, []
        integration = ranked[0]
        rows = integration.organizations.order_by("id").values_list("organization_id", "slug", "region")
        return str(integration.pk), list(rows)


def connect_invalidation(handler: Callable[..., None]) -> None:
    """Clear ``handler``'s cache whenever installations or organizations change in this process."""
    from django.db.models.signals import m2m_changed, post_delete, post_save

    from .models import Integration, OrganizationMapping

    for model in (Integration, OrganizationMapping):
        post_save.connect(handler, sender=model)
        post_delete.connect(handler, sender=model)
    m2m_changed.connect(handler, sender=Integration.organizations.through)
