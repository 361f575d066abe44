"""``manage.py silo_router_status``: pending, in flight, failed and oldest pending age per region."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from silo_router.control.status import format_age, region_status


class Command(BaseCommand):
    help = "Show delivery status per region: pending, in flight, failed, delivered, oldest pending age, circuit."

    def handle(self, *args: Any, **options: Any) -> None:
        header = f"{'region':<12} {'pending':>8} {'in_flight':>9} {'failed':>7} {'delivered':>9} {'oldest':>9}  circuit"
        self.stdout.write(header)
        for row in region_status():
            circuit = row.circuit + (f" until {row.circuit_retry_at:%H:%M:%S}" if row.circuit != "closed" else "")
            self.stdout.write(
                f"{row.region or '(none)':<12} {row.pending:>8} {row.in_flight:>9} {row.failed:>7} "
                f"{row.delivered:>9} {format_age(row.oldest_pending_age):>9}  {circuit}"
            )
