"""``manage.py silo_router_prune``: delete expired payloads and drop old bodies now (what the beat task does)."""

from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from silo_router.checks import PRUNE_BATCH_MAX
from silo_router.conf import conf
from silo_router.control import retention


def _age(seconds: float) -> str:
    """``7 days``, ``36 hours``, ``90 s``: a retention period as a person reads it."""
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{int(seconds // 86400)} days"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} hours"
    return f"{seconds:g} s"


def _rule(category: str) -> str:
    if category == retention.DELIVERED:
        return f"delivered more than {_age(conf.DELIVERED_RETENTION)} ago"
    if category == retention.FAILED:
        return f"created and last attempted more than {_age(conf.FAILED_RETENTION)} ago, not replayed"
    if category == retention.UNROUTABLE:
        return f"created more than {_age(conf.FAILED_RETENTION)} ago, not routed"
    body = conf.BODY_RETENTION
    return f"delivered more than {_age(body)} ago" if body is not None else "kept (BODY_RETENTION is None)"


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise CommandError(f"{value!r} is not a whole number") from exc
    if not 0 < number <= PRUNE_BATCH_MAX:
        raise CommandError(f"the batch size must be from 1 to {PRUNE_BATCH_MAX}")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError as exc:
        raise CommandError(f"{value!r} is not a number of seconds") from exc
    if number <= 0:
        raise CommandError("--max-seconds must be positive")
    return number


class Command(BaseCommand):
    help = (
        "Delete delivered payloads older than DELIVERED_RETENTION, failed and unroutable ones older than "
        "FAILED_RETENTION (with their attempts), and drop bodies of payloads delivered longer ago than "
        "BODY_RETENTION; in batches of PRUNE_BATCH rows, each its own short transaction."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="only count what would go")
        parser.add_argument("--batch-size", type=_positive_int, help="rows per transaction (default PRUNE_BATCH)")
        parser.add_argument("--max-seconds", type=_positive_float, help="stop after this long; run again for the rest")

    def handle(self, *args: Any, **options: Any) -> None:
        started = datetime.datetime.now()
        result = retention.prune(
            batch_size=options["batch_size"], max_seconds=options["max_seconds"], dry_run=options["dry_run"]
        )
        for category in retention.CATEGORIES:
            self.stdout.write(self._line(category, result))
        if not result.finished:
            elapsed = (datetime.datetime.now() - started).total_seconds()
            self.stdout.write(f"stopped after {elapsed:.0f} s (--max-seconds) with rows left: run again")

    @staticmethod
    def _line(category: str, result: retention.Pruned) -> str:
        rows = result.rows[category]
        if category == retention.BODIES:
            if conf.BODY_RETENTION is None:
                return f"bodies: {_rule(category)}"
            verb = "would be dropped" if result.dry_run else "dropped"
            return f"bodies: {rows} {verb} ({_rule(category)})"
        verb = "would be deleted" if result.dry_run else "deleted"
        attempts = "" if result.dry_run else f", with {result.attempts[category]} attempts"
        return f"{category}: {rows} payloads {verb} ({_rule(category)}{attempts})"
