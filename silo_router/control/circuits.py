"""Per-region circuit breakers: hold a failing region's payloads instead of hammering it.

Closed: deliver. After ``CIRCUIT_FAILURE_THRESHOLD`` consecutive retryable failures the
circuit opens for ``CIRCUIT_OPEN_SECONDS`` (doubling on each reopening, up to
``CIRCUIT_MAX_OPEN_SECONDS``); payloads for the region are held without spending an
attempt. Then one attempt is let through as a probe (half-open): success closes the
circuit and the sweeper drains the backlog at a bounded rate; failure reopens it.
State lives in the database so every worker process agrees; each step is one short
statement, and compare-and-set updates make sure only one process probes.
"""

from __future__ import annotations

import dataclasses
import datetime

from django.db.models import F
from django.utils import timezone

from silo_router.conf import conf

from .models import RegionCircuit

State = RegionCircuit.State


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether an attempt may go to the region now; if not, when to look again."""

    allowed: bool
    probe: bool = False
    retry_at: datetime.datetime | None = None


def allow(region: str) -> Decision:
    """Ask the region's circuit for permission to make one attempt."""
    now = timezone.now()
    row = RegionCircuit.objects.filter(region=region).values("state", "retry_at").first()
    if row is None or row["state"] == State.CLOSED:
        return Decision(allowed=True)
    retry_at = row["retry_at"] or now
    if retry_at > now:
        return Decision(allowed=False, retry_at=retry_at)
    # Due for a probe (open), or a probe whose worker vanished (half-open past its lease):
    # exactly one caller wins this update and probes.
    probe_until = now + datetime.timedelta(seconds=conf.DELIVERY_TIMEOUT + conf.seconds("LEASE_MARGIN"))
    won = RegionCircuit.objects.filter(region=region, state=row["state"], retry_at=row["retry_at"]).update(
        state=State.HALF_OPEN, retry_at=probe_until
    )
    if won:
        return Decision(allowed=True, probe=True)
    return Decision(allowed=False, retry_at=probe_until)


def record_success(region: str) -> bool:
    """Close the circuit; return True when it was not closed (a recovery: drain now)."""
    return bool(
        RegionCircuit.objects.filter(region=region)
        .exclude(state=State.CLOSED, failures=0)
        .update(state=State.CLOSED, failures=0, openings=0, retry_at=None, last_error="")
    )


def release_probe(region: str) -> None:
    """The probe was won but not used (its payload was not due): the next caller may probe."""
    RegionCircuit.objects.filter(region=region, state=State.HALF_OPEN).update(state=State.OPEN, retry_at=timezone.now())


def record_failure(region: str, error: str, *, probe: bool) -> None:
    """Count a retryable failure; open (or reopen) the circuit when it is time."""
    RegionCircuit.objects.get_or_create(region=region)
    RegionCircuit.objects.filter(region=region).update(failures=F("failures") + 1, last_error=error[:2000])
    threshold = conf.count("CIRCUIT_FAILURE_THRESHOLD")
    row = RegionCircuit.objects.filter(region=region).values("state", "failures", "openings").first()
    if row is None:
        return
    if probe or row["state"] == State.HALF_OPEN or (row["state"] == State.CLOSED and row["failures"] >= threshold):
        wait = min(
            conf.seconds("CIRCUIT_OPEN_SECONDS") * 2 ** row["openings"], conf.seconds("CIRCUIT_MAX_OPEN_SECONDS")
        )
        RegionCircuit.objects.filter(region=region).update(
            state=State.OPEN,
            openings=F("openings") + 1,
            retry_at=timezone.now() + datetime.timedelta(seconds=wait),
        )


def sweep_allowance(region: str, *, batch: int) -> int:
    """How many held payloads the sweeper may publish for ``region`` now."""
    row = RegionCircuit.objects.filter(region=region).values("state", "retry_at").first()
    if row is None or row["state"] == State.CLOSED:
        return batch
    if row["retry_at"] is not None and row["retry_at"] <= timezone.now():
        return 1  # the probe
    return 0
