"""The notification funnel: triggered, sent, acted on, handled, replied.

The region that sent a notification records each stage it reaches as one event of one
schema (:class:`~silo_router.region.models.NotificationEvent`), with an id derived from
the notification, the stage, the envelope and the reply, so a retried delivery or a
duplicate records nothing twice (the insert meets the primary key and is ignored).
:mod:`silo_router.region.notifications` records ``triggered`` and ``sent``; the
receiver calls :func:`on_acted` and :func:`on_handled`, the Slack reply helpers
:func:`on_replied`. Each stage recorded is also a span (``silo_router.region.funnel``,
tagged with its ``stage``) and a count (``silo_router.region.notification_stage``).

Operators read it with :func:`events_for`, :func:`furthest_stage` and :func:`summary`
(the region admin and ``manage.py silo_router_funnel`` are built on them).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import enum
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Min, QuerySet

from silo_router import redaction, tracing
from silo_router.conf import conf
from silo_router.envelope import Envelope
from silo_router.providers.slack.parsing import is_notification_id

from .models import Notification, NotificationEvent

logger = logging.getLogger("silo_router.region")

_NAMESPACE = uuid.UUID("0b6f3c52-1d4e-4f0a-8a51-6c2e9d7b4f18")
#: Longest text kept in an event's ``error`` or in one of its attribute values.
MAX_TEXT = 200


class Stage(enum.StrEnum):
    """The stages of a notification's life, in order."""

    TRIGGERED = "triggered"
    SENT = "sent"
    ACTED = "acted"
    HANDLED = "handled"
    REPLIED = "replied"

    @property
    def rank(self) -> int:
        """1 for ``triggered`` ... 5 for ``replied``."""
        return list(Stage).index(self) + 1


@dataclasses.dataclass(frozen=True)
class StageSummary:
    """How many notifications reached one stage, and how many stopped there failing (and why)."""

    stage: Stage
    reached: int
    failed: int
    errors: Mapping[str, int]


@dataclasses.dataclass(frozen=True)
class Summary:
    """The funnel of many notifications: how many there are and what became of them, stage by stage."""

    notifications: int
    stages: tuple[StageSummary, ...]

    def __getitem__(self, stage: str) -> StageSummary:
        """The summary of ``stage`` (``summary["handled"]``); ``KeyError`` for anything else."""
        for each in self.stages:
            if each.stage == stage:
                return each
        raise KeyError(stage)


def service_name(region: str | None) -> str:
    """The service that records an event: ``silo_router.region.<region>``."""
    return f"silo_router.region.{region or conf.REGION or 'unknown'}"


def event_id(
    notification_id: str,
    stage: Stage,
    *,
    ok: bool,
    envelope_id: str | None = None,
    method: str | None = None,
    sequence: int | None = None,
) -> uuid.UUID:
    """The event's id: the same for the same stage of the same delivery, so it counts once.

    A failure and a later success of the same stage are two events (a retry that
    worked is seen), two failures of it one.
    """
    parts = (notification_id, str(stage), envelope_id or "", method or "", "" if sequence is None else str(sequence))
    return uuid.uuid5(_NAMESPACE, "|".join((*parts, "ok" if ok else "failed")))


def record(
    notification_id: str,
    stage: Stage,
    *,
    ok: bool = True,
    error: str | None = None,
    at: float | None = None,
    name: str | None = None,
    region: str | None = None,
    envelope_id: str | None = None,
    method: str | None = None,
    sequence: int | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> bool:
    """Record that ``notification_id`` reached ``stage`` (or failed at it); False if already recorded.

    ``at`` is epoch seconds (now by default); ``name`` is the notification's (looked up
    when not given); ``attributes`` are small facts (scalars; capabilities are dropped).
    """
    stage = Stage(stage)
    if not is_notification_id(notification_id):
        logger.warning("not recording the %s stage of a malformed notification id", stage)
        return False
    if name is None:
        name = Notification.objects.filter(pk=notification_id).values_list("name", flat=True).first() or ""
    error_text = _short(error) if not ok else ""
    event = NotificationEvent(
        id=event_id(notification_id, stage, ok=ok, envelope_id=envelope_id, method=method, sequence=sequence),
        notification_id=notification_id,
        stage=str(stage),
        rank=stage.rank,
        at=datetime.datetime.fromtimestamp(time.time() if at is None else at, tz=datetime.UTC),
        service=service_name(region),
        name=name,
        region=region or conf.REGION or "",
        ok=ok,
        error=error_text or "",
        envelope_id=envelope_id or "",
        attributes=_small(attributes or {}),
    )
    try:
        with transaction.atomic():
            event.save(force_insert=True)
    except IntegrityError:
        return False  # the same stage of the same delivery: already counted
    with tracing.stage(
        "region",
        "funnel",
        f"notification {stage}",
        notification_id=notification_id,
        notification_name=name or None,
        region=event.region or None,
        envelope_id=envelope_id,
        method=method,
        ok=ok,
        error=error_text or None,
    ) as span:
        span.set(stage=str(stage))
        if not ok:
            span.fail("failed")
    # ``name`` is the metric's own parameter: the notification's name goes as ``notification_name``.
    tracing.metrics.count(tracing.metrics.NOTIFICATION_STAGES, stage=str(stage), notification_name=name, ok=ok)
    return True


# -- the hooks the receiver and the reply helpers call ------------------------------------------


def on_acted(envelope: Envelope) -> None:
    """Control received a click on a notification: record ``acted`` at control's arrival time."""
    notification_id = envelope.notification_id
    if notification_id is None:
        return
    record(
        notification_id,
        Stage.ACTED,
        at=envelope.received_at if envelope.received_at is not None else envelope.created_at,
        region=envelope.region,
        envelope_id=envelope.id,
        attributes=facts_of(envelope),
    )


def on_handled(envelope: Envelope, *, ok: bool, error: str | None = None) -> None:
    """The region ran (or failed to run) the handler for a click on a notification."""
    notification_id = envelope.notification_id
    if notification_id is None:
        return
    record(
        notification_id,
        Stage.HANDLED,
        ok=ok,
        error=error,
        region=envelope.region,
        envelope_id=envelope.id,
        attributes=facts_of(envelope),
    )


def on_replied(envelope: Envelope, *, method: str, ok: bool, error: str | None = None, **facts: Any) -> None:
    """A reply to a click on a notification reached Slack, or did not (``error``: Slack's code).

    ``facts`` may name the ``notification_id`` (when the region read it from the click
    and the envelope does not carry it) and the reply's ``sequence`` within its handler
    run (a handler's second reply is another event, a re-run's first reply the same one).
    """
    notification_id = facts.pop("notification_id", None) or envelope.notification_id
    if notification_id is None:
        return
    sequence = facts.pop("sequence", None)
    record(
        str(notification_id),
        Stage.REPLIED,
        ok=ok,
        error=error,
        region=envelope.region,
        envelope_id=envelope.id,
        method=method,
        sequence=sequence if isinstance(sequence, int) else None,
        attributes={**facts_of(envelope), **facts, "method": method},
    )


def facts_of(envelope: Envelope) -> Mapping[str, Any]:
    """What the funnel records of an envelope besides its notification id (kind, region)."""
    return {"kind": envelope.kind, "region": envelope.region}


# -- reading the funnel ------------------------------------------------------------------------


def events_for(notification_id: str) -> list[NotificationEvent]:
    """Every event of one notification, stage by stage (then by time)."""
    return list(NotificationEvent.objects.filter(notification_id=notification_id).order_by("rank", "at"))


def furthest_stage(notification_id: str) -> NotificationEvent | None:
    """The event of the furthest stage the notification reached (its ``stage``, ``ok``, ``error``).

    At that stage a success wins over a failure (a retry that worked); ``None`` when
    nothing is recorded.
    """
    return NotificationEvent.objects.filter(notification_id=notification_id).order_by("-rank", "-ok", "-at").first()


def summary(*, name: str | None = None, since: datetime.datetime | None = None) -> Summary:
    """How many notifications reached each stage, and how many stopped at it failing, by error.

    ``name`` keeps one kind of notification; ``since`` the notifications first seen at
    or after it. A notification counts once per stage however many events it has there.
    """
    events = _events(name=name, since=since)
    reached: dict[str, set[str]] = collections.defaultdict(set)
    failures: dict[str, dict[str, set[str]]] = collections.defaultdict(lambda: collections.defaultdict(set))
    notifications: set[str] = set()
    rows = events.order_by().values_list("notification_id", "stage", "ok", "error").distinct()
    for notification_id, stage, ok, error in rows.iterator():
        notifications.add(notification_id)
        if ok:
            reached[stage].add(notification_id)
        else:
            failures[stage][error or "failed"].add(notification_id)
    stages = []
    for stage in Stage:
        stopped = {error: ids - reached[stage] for error, ids in failures[stage].items()}
        errors = {error: len(ids) for error, ids in sorted(stopped.items()) if ids}
        failed = len(set().union(*stopped.values())) if stopped else 0
        stages.append(StageSummary(stage=stage, reached=len(reached[stage]), failed=failed, errors=errors))
    return Summary(notifications=len(notifications), stages=tuple(stages))


def _events(*, name: str | None, since: datetime.datetime | None) -> QuerySet[NotificationEvent]:
    events = NotificationEvent.objects.all()
    if name is not None:
        events = events.filter(name=name)
    if since is not None:
        first_seen = (
            events.order_by()
            .values("notification_id")
            .annotate(first=Min("at"))
            .filter(first__gte=since)
            .values("notification_id")
        )
        events = events.filter(notification_id__in=first_seen)
    return events


def _short(text: str | None) -> str:
    return redaction.scrub_text(str(text))[:MAX_TEXT] if text else ""


def _small(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Scalar attributes only, never a capability, texts cut to :data:`MAX_TEXT`."""
    kept: dict[str, Any] = {}
    for key, value in attributes.items():
        if value is None or redaction.is_capability_key(key):
            continue
        if isinstance(value, bool | int | float):
            kept[str(key)] = value
        else:
            kept[str(key)] = _short(str(value))
    return kept
