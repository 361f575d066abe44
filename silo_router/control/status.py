"""What operators want to know about delivery, per region: one place for the admin and the command."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from django.db.models import Count, Min, Q
from django.utils import timezone

from .models import Payload, RegionCircuit

State = Payload.State


@dataclasses.dataclass(frozen=True)
class RegionStatus:
    """Counts and ages for one region."""

    region: str
    pending: int
    in_flight: int
    failed: int
    unroutable: int
    delivered: int
    oldest_pending_age: datetime.timedelta | None
    circuit: str
    circuit_retry_at: datetime.datetime | None


def region_status() -> list[RegionStatus]:
    """One row per region that has payloads or a circuit, sorted by name ("" = unroutable)."""
    now = timezone.now()
    counts = {
        row["region"]: row
        for row in Payload.objects.values("region").annotate(
            pending=Count("pk", filter=Q(state=State.PENDING)),
            in_flight=Count("pk", filter=Q(state=State.IN_FLIGHT)),
            failed=Count("pk", filter=Q(state=State.FAILED)),
            unroutable=Count("pk", filter=Q(state=State.UNROUTABLE)),
            delivered=Count("pk", filter=Q(state=State.DELIVERED)),
            oldest=Min("created_at", filter=Q(state__in=(State.PENDING, State.IN_FLIGHT))),
        )
    }
    circuits = {c.region: c for c in RegionCircuit.objects.all()}
    rows = []
    for region in sorted(set(counts) | set(circuits)):
        c: Mapping[str, Any] = counts.get(region) or {}
        circuit = circuits.get(region)
        rows.append(
            RegionStatus(
                region=region,
                pending=c.get("pending", 0),
                in_flight=c.get("in_flight", 0),
                failed=c.get("failed", 0),
                unroutable=c.get("unroutable", 0),
                delivered=c.get("delivered", 0),
                oldest_pending_age=(now - c["oldest"]) if c.get("oldest") else None,
                circuit=circuit.state if circuit else RegionCircuit.State.CLOSED,
                circuit_retry_at=circuit.retry_at if circuit else None,
            )
        )
    return rows


UNROUTABLE_ADVICE = (
    "Unroutable payloads matched no installation. Add the missing Integration / OrganizationMapping, "
    "then replay them: manage.py silo_router_replay --state unroutable (or the admin's replay action)."
)


def format_age(age: datetime.timedelta | None) -> str:
    """``"-"`` or a compact age such as ``"3m 20s"``."""
    if age is None:
        return "-"
    seconds = int(age.total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"
