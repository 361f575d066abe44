"""``manage.py silo_router_replay``: send failed payloads again, or route unroutable ones again, by filter."""

from __future__ import annotations

import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from silo_router.control import rerouting, retention
from silo_router.control.models import Payload


def _when(value: str) -> datetime.datetime:
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"{value!r} is not an ISO 8601 date or time") from exc
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment)


class Command(BaseCommand):
    help = (
        "Replay payloads (failed by default) matching the filters. Handled ones have no second effect; "
        "unroutable ones are resolved again (add the missing mapping first)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--region")
        parser.add_argument("--provider")
        parser.add_argument("--kind", help="exact kind, e.g. block_actions:resolve_dialog")
        parser.add_argument("--since", type=_when, help="created at or after (ISO 8601)")
        parser.add_argument("--until", type=_when, help="created before (ISO 8601)")
        parser.add_argument("--state", default="failed", choices=["failed", "delivered", "unroutable"])
        parser.add_argument("--id", action="append", dest="ids", help="a payload id (repeatable)")
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        chosen = Payload.objects.filter(state=options["state"])
        for field, lookup in (("region", "region"), ("provider", "provider"), ("kind", "kind"), ("ids", "pk__in")):
            if options[field]:
                chosen = chosen.filter(**{lookup: options[field]})
        if options["since"]:
            chosen = chosen.filter(created_at__gte=options["since"])
        if options["until"]:
            chosen = chosen.filter(created_at__lt=options["until"])
        ids = [str(pk) for pk in chosen.values_list("pk", flat=True)]
        if options["dry_run"]:
            self.stdout.write(f"would replay {len(ids)} payloads")
            return
        result = rerouting.replay(ids)
        if options["state"] == "unroutable":
            self.stdout.write(
                f"routed {result.rerouted} payloads; {result.still_unroutable} still unroutable"
                + (" (add the installation's mapping, then replay again)" if result.still_unroutable else "")
            )
            return
        refused = f"; {result.body_dropped} refused: {retention.BODY_DROPPED_REASON}" if result.body_dropped else ""
        self.stdout.write(f"replayed {result.replayed} payloads{refused}")
