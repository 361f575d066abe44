"""``manage.py silo_router_status``: pending, in flight, failed, unroutable and oldest pending age per region."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from silo_router.control.models import RegionCircuit
from silo_router.control.status import UNROUTABLE_ADVICE, format_age, region_status


class Command(BaseCommand):
    help = (
        "Show delivery status per region: pending, in flight, failed, unroutable, delivered, "
        "oldest pending age, circuit."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        header = (
            f"{'region':<12} {'pending':>8} {'in_flight':>9} {'failed':>7} {'unroutable':>10} "
            f"{'delivered':>9} {'oldest':>9}  circuit"
        )
        self.stdout.write(header)
        rows = region_status()
        for row in rows:
            closed = row.circuit == RegionCircuit.State.CLOSED
            circuit = row.circuit + ("" if closed else f" until {row.circuit_retry_at:%H:%M:%S}")
            self.stdout.write(
                f"{row.region or '(none)':<12} {row.pending:>8} {row.in_flight:>9} {row.failed:>7} "
                f"{row.unroutable:>10} {row.delivered:>9} {format_age(row.oldest_pending_age):>9}  {circuit}"
            )
        if any(row.unroutable for row in rows):
            self.stdout.write("")
            self.stdout.write(UNROUTABLE_ADVICE)
