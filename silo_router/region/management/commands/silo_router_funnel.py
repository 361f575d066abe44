"""``manage.py silo_router_funnel``: where one notification stopped, or how many reached each stage."""

from __future__ import annotations

import datetime
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from silo_router.providers.slack.parsing import is_notification_id
from silo_router.region import funnel
from silo_router.region.models import Notification, NotificationEvent

_DURATION = re.compile(r"^(\d+)([mhd])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_since(value: str, *, now: datetime.datetime | None = None) -> datetime.datetime:
    """``--since``: an ISO date or datetime, or an age (``30m``, ``24h``, ``7d``) before ``now``."""
    duration = _DURATION.match(value.strip())
    if duration:
        amount, unit = int(duration.group(1)), _UNITS[duration.group(2)]
        return (now or timezone.now()) - datetime.timedelta(**{unit: amount})
    moment = parse_datetime(value)
    if moment is None:
        day = parse_date(value)
        if day is None:
            raise CommandError(f"--since {value!r} is neither an ISO date or datetime nor an age like 24h or 7d.")
        moment = datetime.datetime.combine(day, datetime.time())
    return moment if timezone.is_aware(moment) else timezone.make_aware(moment, datetime.UTC)


class Command(BaseCommand):
    help = (
        "Show the notification funnel: with --notification, every stage one notification reached and "
        "where it stopped; otherwise how many notifications reached each stage, and the failures by stage."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--notification", metavar="ID", help="One notification's id (32 hex digits).")
        parser.add_argument("--name", help="Only notifications of this name (what kind of notification).")
        parser.add_argument("--since", help="Only notifications first seen since then: 2026-12-01, 24h, 7d.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["notification"]:
            self._one(str(options["notification"]).strip().lower())
            return
        since = parse_since(options["since"]) if options["since"] else None
        self._many(name=options["name"], since=since)

    def _one(self, notification_id: str) -> None:
        if not is_notification_id(notification_id):
            raise CommandError("A notification id is 32 hex digits.")
        events = funnel.events_for(notification_id)
        record = Notification.objects.filter(pk=notification_id).first()
        if record is None and not events:
            raise CommandError(f"No notification {notification_id} in this region.")
        if record is not None:
            self.stdout.write(
                f"notification {record.id} {record.name!r} to {record.channel or '?'} ts {record.ts or '-'} "
                f"(installation {record.installation_id or '-'}, region {record.region or '-'})"
            )
            if record.caused_by_trace_id:
                self.stdout.write(f"caused by trace {record.caused_by_trace_id}")
        else:
            self.stdout.write(f"notification {notification_id} (not sent from this region)")
        self.stdout.write(f"{'stage':<10} {'at (UTC)':<23} {'ok':<6} {'error':<24} {'service':<28} details")
        for event in events:
            at = event.at.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]
            self.stdout.write(
                f"{event.stage:<10} {at:<23} {'ok' if event.ok else 'FAILED':<6} {event.error or '-':<24} "
                f"{event.service:<28} {_details(event)}"
            )
        self.stdout.write(_stopped(funnel.furthest_stage(notification_id)))

    def _many(self, *, name: str | None, since: datetime.datetime | None) -> None:
        result = funnel.summary(name=name, since=since)
        scope = [f"name {name!r}" if name else "", f"since {since:%Y-%m-%d %H:%M} UTC" if since else ""]
        described = ", ".join(part for part in scope if part)
        self.stdout.write(f"{result.notifications} notifications" + (f" ({described})" if described else ""))
        self.stdout.write(f"{'stage':<10} {'reached':>8} {'failed':>7}  failures by error")
        for stage in result.stages:
            errors = ", ".join(f"{error} {count}" for error, count in stage.errors.items()) or "-"
            self.stdout.write(f"{stage.stage:<10} {stage.reached:>8} {stage.failed:>7}  {errors}")


def _details(event: NotificationEvent) -> str:
    """The event's small attributes, ``key=value`` (ids and codes only: no capability is ever stored)."""
    attributes = event.attributes if isinstance(event.attributes, dict) else {}
    parts = [f"{key}={value}" for key, value in sorted(attributes.items())]
    if event.envelope_id:
        parts.insert(0, f"envelope={event.envelope_id}")
    return " ".join(parts)


def _stopped(furthest: NotificationEvent | None) -> str:
    if furthest is None:
        return "no stage recorded"
    if not furthest.ok:
        return f"stopped at {furthest.stage}: failed ({furthest.error or 'no error given'})"
    return f"furthest stage: {furthest.stage}"
