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

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from silo_router.conf import conf

from .models import RegionCircuit

State = RegionCircuit.State

#: How much of an error text a row keeps.
LAST_ERROR_MAX = 2000


@dataclasses.dataclass(frozen=True)
class Decision:
    """Whether an attempt may go to the region now; if not, when to look again."""

    allowed: bool
    probe: bool = False
    retry_at: datetime.datetime | None = None
    #: The circuit's state when it was asked (closed, open, half_open), for the attempt's span.
    state: str = State.CLOSED


def allow(region: str) -> Decision:
    """Ask the region's circuit for permission to make one attempt."""
    now = timezone.now()
    row = RegionCircuit.objects.filter(region=region).values("state", "retry_at").first()
    if row is None or row["state"] == State.CLOSED:
        return Decision(allowed=True)
    retry_at = row["retry_at"] or now
    if retry_at > now:
        return Decision(allowed=False, retry_at=retry_at, state=row["state"])
    # Due for a probe (open), or a probe whose worker vanished (half-open past its lease):
    # exactly one caller wins this update and probes.
    probe_until = now + datetime.timedelta(seconds=conf.DELIVERY_TIMEOUT + conf.LEASE_MARGIN)
    won = RegionCircuit.objects.filter(region=region, state=row["state"], retry_at=row["retry_at"]).update(
        state=State.HALF_OPEN, retry_at=probe_until
    )
    if won:
        return Decision(allowed=True, probe=True, state=State.HALF_OPEN)
    return Decision(allowed=False, retry_at=probe_until, state=State.HALF_OPEN)


def record_success(region: str) -> bool:
    """Close the circuit; return True only to the one caller that saw it recover.

    A success on a closed circuit just clears its failure count. Reopening from open or
    half-open is a compare-and-set, so when many workers see the region answer again,
    exactly one of them is told to release and drain the held payloads.
    """
    row = RegionCircuit.objects.filter(region=region).values("state", "failures").first()
    if row is None or (row["state"] == State.CLOSED and not row["failures"]):
        return False  # the usual case, on every delivery: nothing to write
    RegionCircuit.objects.filter(region=region, state=State.CLOSED).exclude(failures=0).update(failures=0)
    return bool(
        RegionCircuit.objects.filter(region=region, state__in=(State.OPEN, State.HALF_OPEN)).update(
            state=State.CLOSED, failures=0, openings=0, retry_at=None, last_error=""
        )
    )


def release_probe(region: str) -> None:
    """The probe was won but not used (its payload was not due): the next caller may probe."""
    RegionCircuit.objects.filter(region=region, state=State.HALF_OPEN).update(state=State.OPEN, retry_at=timezone.now())


def _open_wait(openings: int) -> datetime.timedelta:
    seconds = min(conf.CIRCUIT_OPEN_SECONDS * 2**openings, conf.CIRCUIT_MAX_OPEN_SECONDS)
    return datetime.timedelta(seconds=seconds)


def record_failure(region: str, error: str, *, probe: bool) -> None:
    """Count a retryable failure; open (or reopen) the circuit when it is time.

    The count, the decision and the opening happen in one transaction that starts with
    the write (a row lock on PostgreSQL, the write lock on SQLite), so concurrent
    failures are counted one after another and open the circuit once.
    """
    RegionCircuit.objects.get_or_create(region=region)
    with transaction.atomic():
        RegionCircuit.objects.filter(region=region).update(
            failures=F("failures") + 1, last_error=error[:LAST_ERROR_MAX]
        )
        row = RegionCircuit.objects.select_for_update().filter(region=region).values("state", "failures", "openings")
        current = row.first()
        if current is None:
            return
        threshold = conf.CIRCUIT_FAILURE_THRESHOLD
        state = current["state"]
        if probe or state == State.HALF_OPEN or (state == State.CLOSED and current["failures"] >= threshold):
            RegionCircuit.objects.filter(region=region).update(
                state=State.OPEN,
                openings=F("openings") + 1,
                retry_at=timezone.now() + _open_wait(current["openings"]),
            )


def hold(region: str, error: str) -> datetime.datetime:
    """Open the circuit at once for a fleet-wide fault; return when it lets a probe through.

    An already open circuit keeps its wait (held payloads of one outage do not double it
    again and again); a closed or half-open one opens as after a failed probe.
    """
    RegionCircuit.objects.get_or_create(region=region)
    with transaction.atomic():
        RegionCircuit.objects.filter(region=region).update(last_error=error[:LAST_ERROR_MAX])
        current = (
            RegionCircuit.objects.select_for_update().filter(region=region).values("state", "openings", "retry_at")
        )
        row = current.first()
        now = timezone.now()
        if row is not None and row["state"] == State.OPEN and row["retry_at"] is not None and row["retry_at"] > now:
            retry_at: datetime.datetime = row["retry_at"]
            return retry_at
        retry_at = now + _open_wait(row["openings"] if row else 0)
        RegionCircuit.objects.filter(region=region).update(
            state=State.OPEN, openings=F("openings") + 1, retry_at=retry_at
        )
        return retry_at


def closed(region: str) -> bool:
    """Whether the region's circuit is closed (a region never seen failing has none: closed)."""
    state = RegionCircuit.objects.filter(region=region).values_list("state", flat=True).first()
    return state is None or state == State.CLOSED


def sweep_allowance(region: str, *, batch: int) -> int:
    """How many held payloads the sweeper may publish for ``region`` now."""
    row = RegionCircuit.objects.filter(region=region).values("state", "retry_at").first()
    if row is None or row["state"] == State.CLOSED:
        return batch
    if row["retry_at"] is not None and row["retry_at"] <= timezone.now():
        return 1  # the probe
    return 0
