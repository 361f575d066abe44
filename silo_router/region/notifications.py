"""Notifications: Slack messages a region sends, each its own trace and the start of a funnel.

:func:`send` (or ``request.notify()`` in a handler) posts a message, usually with
buttons, with ``chat.postMessage`` as one installation (in a region through control's
Web API proxy) and:

- gives it a notification id (a UUID4's 32 hex digits);
- traces it as a trace of its own whose trace id is that id
  (``silo_router.region.notification``, always sampled), linked to the trace that
  triggered it (``silo_router.caused_by``);
- carries the id on the message: in its ``metadata``
  (``event_type`` ``silo_router_notification``) and in the ``block_id`` of every block
  that holds an interactive element, which every click's payload carries
  (``<block id>~notification:<id>``), so control's flow for a click joins the
  notification's trace and the handler knows which notification it answers
  (``request.notification_id``);
- records the funnel's ``triggered`` then ``sent`` (:mod:`silo_router.region.funnel`).

docs/notifications.md explains why the id travels in two places.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from slack_sdk.errors import SlackApiError

from silo_router import tracing
from silo_router.conf import conf
from silo_router.providers.handler_request import handler_transaction_open
from silo_router.providers.slack.client import NoInstallation, SlackCallInTransaction, installation_client
from silo_router.providers.slack.parsing import (
    MAX_ID_LENGTH,
    NOTIFICATION_BLOCK_MARK,
    NOTIFICATION_EVENT_TYPE,
    NOTIFICATION_KEY,
    strip_notification,
)
from silo_router.providers.slack.request import SLACK_CALL_ERRORS
from silo_router.tracing import links, names

from . import funnel
from .models import Notification as NotificationRecord

logger = logging.getLogger("silo_router.region")

#: Longest notification name (what kind of notification it is: a few values, like a tag).
MAX_NAME_LENGTH = 100
#: Block types whose elements are interactive; any block with an ``accessory`` is one too.
INTERACTIVE_BLOCKS = frozenset({"actions", "input", "context_actions"})
#: ``chat.postMessage`` arguments a notification may carry besides its text and blocks.
MESSAGE_FIELDS = frozenset(
    {
        "attachments",
        "thread_ts",
        "reply_broadcast",
        "unfurl_links",
        "unfurl_media",
        "mrkdwn",
        "icon_emoji",
        "icon_url",
        "username",
        "link_names",
        "parse",
    }
)


@dataclasses.dataclass
class Notification:
    """A notification and what Slack answered: ``ok`` is ``None`` until it has been posted.

    ``ts`` is the message's timestamp when Slack accepted it; ``error`` Slack's error
    code (or the failure's class) when it did not.
    """

    id: str
    name: str
    channel: str
    installation_id: str
    region: str
    ts: str | None = None
    ok: bool | None = None
    error: str | None = None

    @property
    def trace_id(self) -> str:
        """The notification's trace id (derived from its id)."""
        return links.notification_ids(self.id)[0]


@dataclasses.dataclass(frozen=True)
class Pending:
    """A notification ready to post: its id is known, nothing has been sent or recorded yet."""

    notification: Notification
    message: Mapping[str, Any] = dataclasses.field(repr=False)
    caused_by: Mapping[str, str] = dataclasses.field(repr=False)

    def send(self) -> Notification:
        """Post it: record ``triggered``, call ``chat.postMessage``, record ``sent``; never raises for Slack."""
        return _post(self)


def new_id() -> str:
    """A fresh notification id: a UUID4's 32 hex digits."""
    return uuid.uuid4().hex


def send(
    *,
    installation_id: str,
    channel: str,
    name: str,
    text: str = "",
    blocks: Sequence[Mapping[str, Any]] | None = None,
    caused_by: Mapping[str, str] | None = None,
    region: str | None = None,
    metadata_payload: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Notification:
    """Send a notification to ``channel`` as the installation ``installation_id``, now.

    ``name`` says what kind of notification it is (``"incident_opened"``: a few values);
    ``caused_by`` is the propagation carrier of what triggered it (a Celery task's
    headers, say), by default the current span's. ``metadata_payload`` adds fields to
    the message's metadata; ``fields`` are other ``chat.postMessage`` arguments
    (``attachments``, ``thread_ts``, ``unfurl_links``...). Slack failures do not raise:
    the returned :class:`Notification` has ``ok=False`` and ``error``. Raises
    ``SlackCallInTransaction`` inside a handler's open transaction (use
    ``request.notify()``, which waits for the commit).
    """
    if handler_transaction_open():
        raise SlackCallInTransaction("notifications.send()")
    return prepare(
        installation_id=installation_id,
        channel=channel,
        name=name,
        text=text,
        blocks=blocks,
        caused_by=caused_by,
        region=region,
        metadata_payload=metadata_payload,
        **fields,
    ).send()


def prepare(
    *,
    installation_id: str,
    channel: str,
    name: str,
    text: str = "",
    blocks: Sequence[Mapping[str, Any]] | None = None,
    caused_by: Mapping[str, str] | None = None,
    region: str | None = None,
    metadata_payload: Mapping[str, Any] | None = None,
    **fields: Any,
) -> Pending:
    """A notification with its id and its message, to :meth:`Pending.send` now or after a commit.

    The cause is read now (the current span's propagation headers unless ``caused_by``).
    Raises ``ValueError`` for a missing channel or content, a bad name or an unknown field.
    """
    if not channel:
        raise ValueError("A notification needs a channel.")
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"A notification needs a name (what kind it is) of 1 to {MAX_NAME_LENGTH} characters.")
    if not text and not blocks:
        raise ValueError("A notification needs text or blocks.")
    unknown = sorted(set(fields) - MESSAGE_FIELDS)
    if unknown:
        raise ValueError(f"chat.postMessage arguments a notification cannot carry: {', '.join(unknown)}.")
    notification = Notification(
        id=new_id(),
        name=name,
        channel=channel,
        installation_id=installation_id,
        region=region or conf.REGION or "",
    )
    message: dict[str, Any] = {key: value for key, value in fields.items() if value is not None}
    message.update(channel=channel, text=text, metadata=metadata(notification.id, metadata_payload))
    if blocks:
        message["blocks"] = carrying(blocks, notification.id)
    cause = dict(caused_by) if caused_by is not None else tracing.propagation_headers()
    return Pending(notification=notification, message=message, caused_by=cause)


def metadata(notification_id: str, payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The message ``metadata`` of a notification (``payload`` adds fields; the id always wins)."""
    return {
        "event_type": NOTIFICATION_EVENT_TYPE,
        "event_payload": {**(payload or {}), NOTIFICATION_KEY: notification_id},
    }


def carrying(blocks: Sequence[Mapping[str, Any]], notification_id: str) -> list[dict[str, Any]]:
    """``blocks`` whose interactive blocks carry the notification id in their ``block_id``.

    A block's own id is kept before the mark (``approve~notification:<id>``); a block
    without one gets its position (``2~notification:<id>``). A block id too long to take
    the mark keeps its own id (the message's metadata still carries the notification).
    """
    carried = []
    for index, block in enumerate(blocks):
        copied = dict(block)
        if copied.get("type") in INTERACTIVE_BLOCKS or "accessory" in copied:
            own = strip_notification(str(copied.get("block_id") or index))
            marked = f"{own}{NOTIFICATION_BLOCK_MARK}{notification_id}"
            if len(marked) <= MAX_ID_LENGTH:
                copied["block_id"] = marked
            else:
                logger.warning("block %s keeps its own block_id: too long to carry the notification id", index)
        carried.append(copied)
    return carried


def _post(pending: Pending) -> Notification:
    notification = pending.notification
    trace_id, span_id = links.notification_ids(notification.id)
    with tracing.flow(
        "region",
        "notification",
        notification.name,
        trace_id=trace_id,
        span_id=span_id,
        span_kind="producer",
        links=[links.from_headers(pending.caused_by)],
        notification_id=notification.id,
        notification_name=notification.name,
        installation=notification.installation_id or None,
        region=notification.region or None,
        channel=notification.channel,
    ) as span:
        span.set_attributes(names.messaging(names.CREATE, destination=notification.channel, message_id=notification.id))
        record = NotificationRecord.objects.create(
            id=notification.id,
            name=notification.name,
            installation_id=notification.installation_id,
            region=notification.region,
            channel=notification.channel,
            caused_by_trace_id=links.trace_id_of(pending.caused_by) or "",
            created_at=datetime.datetime.now(tz=datetime.UTC),
        )
        funnel.record(
            notification.id,
            funnel.Stage.TRIGGERED,
            name=notification.name,
            region=notification.region,
            attributes={"channel": notification.channel},
        )
        _chat_post_message(notification, pending.message)
        if notification.ok:
            record.ts, record.channel = notification.ts or "", notification.channel
            record.save(update_fields=["ts", "channel"])
        funnel.record(
            notification.id,
            funnel.Stage.SENT,
            ok=bool(notification.ok),
            error=notification.error,
            name=notification.name,
            region=notification.region,
            attributes={"channel": notification.channel, "ts": notification.ts},
        )
        if notification.ok:
            span.set(outcome="sent")
        else:
            span.fail("failed")
    return notification


def _chat_post_message(notification: Notification, message: Mapping[str, Any]) -> None:
    """``chat.postMessage`` in a span of its own; fills in ``ok``, ``ts`` and ``error``."""
    with tracing.stage(
        "region", "send", "slack chat.postMessage", span_kind="client", method="chat.postMessage"
    ) as span:
        span.set_attributes(names.messaging(names.SEND, destination=notification.channel, message_id=notification.id))
        try:
            answer = installation_client(notification.installation_id).chat_postMessage(**message)
        except NoInstallation:
            notification.ok, notification.error = False, "no_installation"
        except SlackApiError as exc:
            notification.ok, notification.error = False, str(exc.response.get("error") or "slack_error")
        except SLACK_CALL_ERRORS as exc:
            notification.ok, notification.error = False, type(exc).__name__
        else:
            notification.ok = True
            notification.ts = str(answer.get("ts") or "") or None
            notification.channel = str(answer.get("channel") or notification.channel)
        span.set(ok=notification.ok, error=notification.error)
        if notification.ok:
            span.set(outcome="sent")
        else:
            logger.error(
                "notification %s (%s) was not sent: %s", notification.id, notification.name, notification.error
            )
            span.fail("failed")
