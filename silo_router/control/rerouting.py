"""Replaying payloads, including unroutable ones, which are resolved again first.

An unroutable payload was kept because no installation matched when it arrived. Once
an operator adds the mapping, replay parses its stored body again with its provider,
asks the configured resolver (:func:`silo_router.control.pipeline.resolver`) for
targets, and stores one new payload per target region with the same idempotency key,
replacing the unroutable row in one transaction. One that still has no target stays
unroutable with a fresh reason. Every other payload is replayed by
:func:`silo_router.control.delivery.replay`. A replay is a span
(``silo_router.control.replay``); the attempts it causes are traces of their own,
linked to the request that stored each payload.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from silo_router import tracing
from silo_router.envelope import Envelope
from silo_router.providers.registry import get_provider

from . import delivery, retention
from .models import Payload
from .pipeline import resolver

logger = logging.getLogger("silo_router.delivery")

State = Payload.State


@dataclasses.dataclass(frozen=True)
class ReplayResult:
    """How many payloads were sent again, routed to a region, or are still unroutable."""

    replayed: int = 0
    rerouted: int = 0
    still_unroutable: int = 0
    #: Refused: their body was dropped after ``BODY_RETENTION`` (:mod:`.retention`).
    body_dropped: int = 0

    def summary(self) -> str:
        text = f"{self.replayed} payloads queued for delivery again"
        if self.rerouted or self.still_unroutable:
            text += f"; {self.rerouted} unroutable payloads routed to a region"
            text += f", {self.still_unroutable} still unroutable (add the installation's mapping, then replay)"
        if self.body_dropped:
            text += f"; {self.body_dropped} not replayed: {retention.BODY_DROPPED_REASON}"
        return text + "."


def replay(payload_ids: Iterable[str]) -> ReplayResult:
    """Replay failed/delivered payloads and route unroutable ones again."""
    ids = [str(pk) for pk in payload_ids]
    with tracing.stage("control", "replay", f"replay {len(ids)} payloads", requested=len(ids)) as span:
        unroutable = [
            str(pk) for pk in Payload.objects.filter(pk__in=ids, state=State.UNROUTABLE).values_list("pk", flat=True)
        ]
        rerouted = still = 0
        for payload_id in unroutable:
            if reroute(payload_id):
                rerouted += 1
            else:
                still += 1
        dropped = set(retention.body_dropped(ids))
        others = [pk for pk in ids if pk not in set(unroutable) and pk not in dropped]
        result = ReplayResult(
            replayed=delivery.replay(others), rerouted=rerouted, still_unroutable=still, body_dropped=len(dropped)
        )
        span.set(replayed=result.replayed, rerouted=rerouted, still_unroutable=still)
    return result


def reroute(payload_id: str) -> bool:
    """Resolve one unroutable payload again; True when it now has a region (and was sent)."""
    row = Payload.objects.filter(pk=payload_id, state=State.UNROUTABLE).values("envelope").first()
    if row is None:
        return False
    try:
        old = Envelope.from_json(row["envelope"])
        provider = get_provider(old.provider)
        inbound = provider.parse(body=old.body.encode(), headers=old.headers)
        resolution = resolver().resolve(inbound)
    except Exception as exc:  # a corrupt row or a provider that refuses it now: say so on the row
        logger.exception("could not route unroutable payload %s again", payload_id)
        _still_unroutable(payload_id, f"could not be routed again: {type(exc).__name__}: {exc}")
        return False
    if not resolution.targets:
        _still_unroutable(payload_id, f"no installation for {inbound.routing} (checked again)")
        return False
    envelopes = [
        old.replace(
            id=Envelope.make_id(old.idempotency_key, target.region),
            region=target.region,
            organization_ids=target.organization_ids,
            integration_id=resolution.integration_id,
            control_response=None,  # the modal it opened is long gone
        )
        for target in resolution.targets
    ]
    with transaction.atomic():
        if not Payload.objects.filter(pk=payload_id, state=State.UNROUTABLE).delete()[0]:
            return False  # another operator routed it meanwhile
        fresh = delivery.store(envelopes, kind_type=inbound.type)
    logger.info("unroutable payload %s routed to %s", payload_id, ", ".join(e.region for e in envelopes))
    delivery.enqueue([(str(p.pk), p.region) for p in fresh])
    return True


def _still_unroutable(payload_id: str, reason: str) -> None:
    stamped = f"{reason} at {timezone.now().isoformat(timespec='seconds')}"
    Payload.objects.filter(pk=payload_id, state=State.UNROUTABLE).update(
        last_error=stamped[: delivery.LAST_ERROR_MAX], replays=F("replays") + 1
    )
