"""The Slack handler request: Bolt's names for the parsed request, its context, and replies.

Every Web API call goes out with the installation's own credentials (``request.client``:
in a region through control's Web API proxy). Replies never leak: an ephemeral
``respond()`` that cannot use its ``response_url`` (stale, used up, failing) falls back
to ``chat.postEphemeral`` to the user, never to a public ``chat.postMessage``. Uses of a
``response_url`` are counted per URL by a ledger (``SLACK["RESPONSE_URL_LEDGER"]``; the
region's database by default), so earlier attempts, replays and other handlers count too.

Each reply is a span (``silo_router.region.reply``) with the ``method`` that carried it,
``ok``, Slack's ``error`` code and the ``outcome``, never the ``response_url``. A reply
to a click on a notification is recorded in the region's notification funnel, and
``request.notify()`` sends a notification (:mod:`silo_router.region.notifications`).
"""

from __future__ import annotations

import dataclasses
import enum
import http.client
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from django.core.exceptions import ImproperlyConfigured
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from silo_router import tracing
from silo_router.conf import RESPONSE_URL_LEDGER_ALIASES, conf
from silo_router.plugins import cached, import_by_alias
from silo_router.providers.handler_request import HandlerRequest

from .client import NoInstallation, SlackCallInTransaction, installation_client
from .parsing import is_notification_id

if TYPE_CHECKING:
    from silo_router.region.notifications import Notification

logger = logging.getLogger("silo_router.slack")


class PendingNotification(Protocol):
    """A notification ready to post (:func:`silo_router.region.notifications.prepare`)."""

    @property
    def notification(self) -> Notification: ...

    def send(self) -> Notification: ...


@dataclasses.dataclass
class RegionServices:
    """What the region app lends Slack handler requests, registered in its ``ready()``.

    The funnel and notifications live in the region silo, above this layer: the region
    hands them down (as it hands the local transport its receiver) instead of this
    module importing upwards.
    """

    on_replied: Callable[..., None] | None = None
    prepare_notification: Callable[..., PendingNotification] | None = None


_services = RegionServices()


def register_region_services(
    *, on_replied: Callable[..., None], prepare_notification: Callable[..., PendingNotification]
) -> None:
    """Called by the region app: record replies to notifications, send notifications."""
    _services.on_replied = on_replied
    _services.prepare_notification = prepare_notification


#: Slack accepts 5 posts to a response_url within 30 minutes.
RESPONSE_URL_USES = 5
RESPONSE_URL_TTL = 30 * 60
#: Seconds a post to a response_url may take.
RESPONSE_URL_TIMEOUT = 10
#: What a failed Slack call can raise: API errors, network errors, broken HTTP, bad JSON.
SLACK_CALL_ERRORS: tuple[type[Exception], ...] = (SlackClientError, OSError, http.client.HTTPException, ValueError)


class ResponseType(enum.StrEnum):
    """Who sees a ``respond()`` reply."""

    EPHEMERAL = "ephemeral"
    IN_CHANNEL = "in_channel"


class ReplyOutcome(enum.StrEnum):
    """How a reply reached Slack, or that it did not."""

    RESPONSE_URL = "response_url"
    EPHEMERAL_MESSAGE = "chat.postEphemeral"
    CHANNEL_MESSAGE = "chat.postMessage"
    MESSAGE_UPDATED = "chat.update"
    MESSAGE_DELETED = "chat.delete"
    VIEW_UPDATED = "views.update"
    FAILED = "failed"


@dataclasses.dataclass(frozen=True)
class ReplyResult:
    """How one reply ended: its outcome, the method that carried it, Slack's error code if it failed."""

    outcome: ReplyOutcome
    method: str
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is not ReplyOutcome.FAILED


class NoViewToUpdate(RuntimeError):
    """``update_view`` was called but no loading modal is open and no fallback was given."""


class ResponseUrlLedger(Protocol):
    """Counts uses of each response_url, across processes and attempts."""

    def take(self, response_url: str, *, limit: int) -> bool:
        """Count one use of ``response_url``; False (nothing counted) once ``limit`` are used."""


@cached
def response_url_ledger() -> ResponseUrlLedger:
    """The configured ledger, built once."""
    path = str(conf.SLACK["RESPONSE_URL_LEDGER"])
    ledger_class = import_by_alias(path, aliases=RESPONSE_URL_LEDGER_ALIASES, setting="SLACK.RESPONSE_URL_LEDGER")
    ledger: ResponseUrlLedger = ledger_class()
    return ledger


#: The arguments of ``chat.postEphemeral`` that a ``respond()`` message can carry.
EPHEMERAL_FIELDS = ("text", "blocks", "attachments", "thread_ts")
#: The arguments of ``chat.postMessage`` / ``chat.update`` that a ``respond()`` message can carry.
MESSAGE_FIELDS = ("text", "blocks", "attachments", "thread_ts", "unfurl_links", "unfurl_media", "metadata")


@dataclasses.dataclass(frozen=True)
class SlackContext(Mapping[str, Any]):
    """Who and where a request is about, as Bolt's ``context`` names it; never a token or a URL.

    Attribute access (``context.team_id``) and item access (``context["team_id"]``,
    ``context.get("bot_user_id")``) both work. ``team_id``, ``enterprise_id``,
    ``user_id``, ``channel_id`` and ``is_enterprise_install`` come from the request, the
    bot's ids and ``installation_id`` from control's installation record.
    """

    team_id: str | None = None
    enterprise_id: str | None = None
    is_enterprise_install: bool = False
    user_id: str | None = None
    channel_id: str | None = None
    app_id: str | None = None
    bot_id: str | None = None
    bot_user_id: str | None = None
    installation_id: str | None = None
    scopes: tuple[str, ...] = ()
    organization_id: str | None = None
    organization_ids: tuple[str, ...] = ()

    def __getitem__(self, key: str) -> Any:
        if key not in _CONTEXT_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_CONTEXT_KEYS)

    def __len__(self) -> int:
        return len(_CONTEXT_KEYS)


_CONTEXT_KEYS = tuple(field.name for field in dataclasses.fields(SlackContext))


def _message(text: str | Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """A message from ``text`` (or a whole message dict, as Bolt accepts) and the options given."""
    message: dict[str, Any] = dict(text) if isinstance(text, Mapping) else {"text": text}
    for name, value in fields.items():
        if value is None:
            continue
        if name in ("blocks", "attachments"):
            if value:
                message[name] = [dict(item) for item in value]
        elif name == "metadata":
            message[name] = dict(value)
        else:
            message[name] = value
    return message


def _only(message: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {name: message[name] for name in names if message.get(name) is not None}


@dataclasses.dataclass
class SlackHandlerRequest(HandlerRequest):
    """Adds Bolt's names (``event``, ``action``, ``view``...), ``context``, ``client`` and replies.

    ``payload`` (and ``body``) is the whole parsed request; Bolt's narrower ``payload``
    is whichever of ``event``, ``action``, ``view``, ``command``, ``options`` or
    ``shortcut`` is not ``None``.
    """

    #: How many replies this handler run has scheduled (a reply's place in the funnel's ids).
    _replies: int = dataclasses.field(default=0, init=False, repr=False, compare=False)

    # -- the installation and its client ---------------------------------------------

    @property
    def installation(self) -> Mapping[str, Any]:
        """What control knows of the installation (ids, bot, scopes; never its token); ``{}`` if nothing."""
        return self.envelope.installation or {}

    @property
    def installation_id(self) -> str | None:
        """The installation the request belongs to (control's integration id)."""
        if self.envelope.installation is not None:
            found = self.envelope.installation.get("installation_id")
            return found if isinstance(found, str) else self.envelope.integration_id
        return self.envelope.integration_id

    @property
    def client(self) -> WebClient:
        """A Web API client with the installation's token; 429s are retried after ``Retry-After``.

        In a region it calls Slack through control, which adds the token. Refused while
        the handler's transaction is open (``SlackCallInTransaction``); raises
        ``NoInstallation`` when the installation is gone or deactivated.
        """
        self._refuse_in_transaction("request.client")
        return installation_client(self.installation_id)

    @property
    def context(self) -> SlackContext:
        """Team, enterprise, user, channel, bot and installation ids, like Bolt's ``context``."""
        facts = self.installation
        routing = self.inbound.routing
        scopes = facts.get("scopes")
        return SlackContext(
            team_id=routing.team_id,
            enterprise_id=routing.enterprise_id,
            is_enterprise_install=routing.is_enterprise_install,
            user_id=routing.user_id,
            channel_id=self.channel_id,
            app_id=routing.app_id or _text_or_none(facts.get("app_id")),
            bot_id=_text_or_none(facts.get("bot_id")),
            bot_user_id=_text_or_none(facts.get("bot_user_id")),
            installation_id=self.installation_id,
            scopes=tuple(str(scope) for scope in scopes) if isinstance(scopes, list) else (),
            organization_id=self.organization_id,
            organization_ids=self.organization_ids,
        )

    # -- Bolt's names for the parts of the request --------------------------------------

    @property
    def event(self) -> Mapping[str, Any] | None:
        """``body["event"]`` of an ``event_callback``."""
        event = self.payload.get("event")
        return event if self.inbound.type == "event_callback" and isinstance(event, Mapping) else None

    @property
    def message(self) -> Mapping[str, Any] | None:
        """The event of a ``message`` event."""
        return self.event if self.inbound.type == "event_callback" and self.inbound.name == "message" else None

    @property
    def action(self) -> Mapping[str, Any] | None:
        """The first action of ``block_actions`` / ``interactive_message``; the body of dialog and
        workflow-step-edit requests."""
        if self.inbound.type in ("block_actions", "interactive_message"):
            actions = self.payload.get("actions")
            first = actions[0] if isinstance(actions, list) and actions else None
            return first if isinstance(first, Mapping) else None
        if self.inbound.type in ("dialog_submission", "dialog_cancellation", "workflow_step_edit"):
            return self.payload
        return None

    @property
    def view(self) -> Mapping[str, Any] | None:
        """``body["view"]`` of ``view_submission`` / ``view_closed``."""
        view = self.payload.get("view")
        return view if self.inbound.type in ("view_submission", "view_closed") and isinstance(view, Mapping) else None

    @property
    def command(self) -> Mapping[str, Any] | None:
        """The whole body of a slash command (``command``, ``text``, ``user_id``...)."""
        return self.payload if self.inbound.type == "command" else None

    @property
    def options(self) -> Mapping[str, Any] | None:
        """The whole body of an options load (``block_suggestion`` / ``dialog_suggestion``)."""
        return self.payload if self.inbound.type in ("block_suggestion", "dialog_suggestion") else None

    @property
    def shortcut(self) -> Mapping[str, Any] | None:
        """The whole body of a global or message shortcut."""
        return self.payload if self.inbound.type in ("shortcut", "message_action") else None

    # -- where the request came from ----------------------------------------------------

    @property
    def control_response(self) -> Mapping[str, Any] | None:
        """What the control silo did before forwarding (``status``, ``view_id``, ``error``...)."""
        return self.envelope.control_response

    @property
    def loading_view_open(self) -> bool:
        """Whether control opened a Loading modal that this handler should replace."""
        return bool(self.control_response and self.control_response.get("status") == "opened")

    @property
    def channel_id(self) -> str | None:
        """The channel the request came from, wherever this kind of payload keeps it."""
        payload = self.payload
        channel = payload.get("channel")
        event = payload.get("event")
        event = event if isinstance(event, Mapping) else {}
        item = event.get("item")
        container = payload.get("container")
        candidates = (
            channel.get("id") if isinstance(channel, Mapping) else channel,
            payload.get("channel_id"),
            event.get("channel"),
            item.get("channel") if isinstance(item, Mapping) else None,  # reaction_added
            container.get("channel_id") if isinstance(container, Mapping) else None,
        )
        return next((c for c in candidates if isinstance(c, str) and c), None)

    @property
    def user_id(self) -> str | None:
        return self.inbound.routing.user_id

    @property
    def notification_id(self) -> str | None:
        """The notification this request answers (a click on it, or a modal opened from it), or ``None``.

        Control's reading travels in the envelope; the region's own reading of the
        payload stands in when the envelope does not carry one.
        """
        carried = self.envelope.notification_id
        return carried if is_notification_id(carried) else self.inbound.notification_id

    def _source_message(self) -> tuple[str, str] | None:
        """``(channel, ts)`` of the public message an action came from, when the payload names one."""
        channel = self.channel_id
        container = self.payload.get("container")
        container = container if isinstance(container, Mapping) else {}
        if container.get("is_ephemeral") is True or not channel:
            return None
        message = self.payload.get("message")
        candidates = (
            container.get("message_ts") if container.get("type") == "message" else None,
            message.get("ts") if isinstance(message, Mapping) else None,
            self.payload.get("message_ts"),
        )
        ts = next((c for c in candidates if isinstance(c, str) and c), None)
        return (channel, ts) if ts else None

    # -- replies --------------------------------------------------------------------------

    def say(
        self,
        text: str | Mapping[str, Any] = "",
        *,
        blocks: Sequence[Mapping[str, Any]] | None = None,
        attachments: Sequence[Mapping[str, Any]] | None = None,
        thread_ts: str | None = None,
        channel: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        unfurl_links: bool | None = None,
        unfurl_media: bool | None = None,
        mrkdwn: bool | None = None,
        reply_broadcast: bool | None = None,
        **extra: Any,
    ) -> None:
        """Post to the conversation (``channel_id`` unless ``channel``) with ``chat.postMessage``, after commit.

        Returns ``None``: the post runs once the handler's transaction commits. A handler
        that needs Slack's answer (the message ``ts``) calls ``request.client.chat_postMessage``
        itself in ``request.after_commit`` or with ``atomic=False``. A post that fails is
        logged at ERROR. Raises ``ValueError`` at once when there is no conversation.
        """
        message = _message(
            text,
            blocks=blocks,
            attachments=attachments,
            thread_ts=thread_ts,
            metadata=metadata,
            unfurl_links=unfurl_links,
            unfurl_media=unfurl_media,
            mrkdwn=mrkdwn,
            reply_broadcast=reply_broadcast,
            **extra,
        )
        target = channel or message.get("channel") or self.channel_id
        if not target:
            raise ValueError(f"say() needs a conversation: {self.kind} has no channel, so pass channel=...")
        message["channel"] = target
        sequence = self._next_reply()
        self.after_commit(lambda: self._say_now(message, sequence))

    def _say_now(self, message: Mapping[str, Any], sequence: int) -> ReplyResult:
        with tracing.stage(
            "region", "reply", "slack chat.postMessage", span_kind="client", method="chat.postMessage"
        ) as span:
            result = self._call("chat.postMessage", ReplyOutcome.CHANNEL_MESSAGE, **message)
            self._finish_reply(span, result, sequence)
        return result

    def respond(
        self,
        text: str | Mapping[str, Any] = "",
        *,
        blocks: Sequence[Mapping[str, Any]] | None = None,
        attachments: Sequence[Mapping[str, Any]] | None = None,
        response_type: str = ResponseType.EPHEMERAL,
        replace_original: bool | None = None,
        delete_original: bool | None = None,
        thread_ts: str | None = None,
        unfurl_links: bool | None = None,
        unfurl_media: bool | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Reply through ``response_url`` after commit, with Bolt's options.

        Past Slack's 5 uses or 30 minutes, when the ``response_url`` fails, or without
        one (global shortcuts, events): ``delete_original`` / ``replace_original`` use
        ``chat.delete`` / ``chat.update`` on the public message the action came from
        (when the payload names one); otherwise, and when that fails, an ephemeral
        reply goes to the user with ``chat.postEphemeral`` (never to the whole channel)
        and an ``in_channel`` reply with ``chat.postMessage``. A reply that cannot be
        sent is logged at ERROR. Returns ``None`` (see ``say``).
        """
        message = _message(
            text,
            blocks=blocks,
            attachments=attachments,
            replace_original=replace_original,
            delete_original=delete_original,
            thread_ts=thread_ts,
            unfurl_links=unfurl_links,
            unfurl_media=unfurl_media,
            metadata=metadata,
        )
        # A whole message given as a dict keeps its own response_type.
        message["response_type"] = str(ResponseType(message.get("response_type") or response_type))
        sequence = self._next_reply()
        self.after_commit(lambda: self._respond_now(message, sequence))

    def respond_now(self, message: Mapping[str, Any]) -> ReplyResult:
        """Send a whole ``respond()`` message at once, not after commit (Bolt's ``respond`` inside a
        listener, say): the same ``response_url`` rules and fallbacks, a reply of this run in order.
        Without a ``response_type`` it is ephemeral, as Slack's default is."""
        whole = {**message, "response_type": str(ResponseType(message.get("response_type") or ResponseType.EPHEMERAL))}
        return self._respond_now(whole, self._next_reply())

    def _respond_now(self, message: Mapping[str, Any], sequence: int) -> ReplyResult:
        response_type = ResponseType(message["response_type"])
        with tracing.stage(
            "region", "reply", f"slack respond {response_type}", span_kind="client", method="response_url"
        ) as span:
            result = self._post_to_response_url(message)
            if result is None or not result.ok:
                result = self._post_instead(message, response_type)
            self._finish_reply(span, result, sequence)
        return result

    def _post_to_response_url(self, message: Mapping[str, Any]) -> ReplyResult | None:
        """Post to the response_url if it is still usable; ``None`` when it was not used, FAILED when it failed."""
        url = self.inbound.response_url
        if not url:
            return None
        if time.time() - self.envelope.created_at >= RESPONSE_URL_TTL:
            logger.info("the response_url of %s is older than %s s; not using it", self.kind, RESPONSE_URL_TTL)
            return None
        if not response_url_ledger().take(url, limit=RESPONSE_URL_USES):
            logger.info("the response_url of %s has been used %s times; not using it", self.kind, RESPONSE_URL_USES)
            return None
        try:
            result = WebhookClient(url, timeout=RESPONSE_URL_TIMEOUT).send_dict(dict(message))
        except SLACK_CALL_ERRORS as exc:
            logger.warning("posting to the response_url of %s failed: %s", self.kind, type(exc).__name__)
            return ReplyResult(ReplyOutcome.FAILED, "response_url", type(exc).__name__)
        if result.status_code == 200:
            return ReplyResult(ReplyOutcome.RESPONSE_URL, "response_url")
        logger.warning("the response_url of %s answered HTTP %s", self.kind, result.status_code)
        return ReplyResult(ReplyOutcome.FAILED, "response_url", f"http_{result.status_code}")

    def _post_instead(self, message: Mapping[str, Any], response_type: ResponseType) -> ReplyResult:
        """The fallback: the source message for delete / replace, else ephemeral to the user or to the channel."""
        source = self._source_message()
        if message.get("delete_original"):
            if source is None:
                logger.error("a delete_original reply to %s was not sent: no usable response_url or message", self.kind)
                return ReplyResult(ReplyOutcome.FAILED, "chat.delete", "no_message")
            return self._call("chat.delete", ReplyOutcome.MESSAGE_DELETED, channel=source[0], ts=source[1])
        if message.get("replace_original") and source is not None:
            replaced = self._call(
                "chat.update",
                ReplyOutcome.MESSAGE_UPDATED,
                channel=source[0],
                ts=source[1],
                **_only(message, [name for name in MESSAGE_FIELDS if name != "thread_ts"]),
            )
            if replaced.ok:
                return replaced
        channel = self.channel_id
        if response_type is ResponseType.EPHEMERAL:
            user = self.user_id
            if not (channel and user):
                logger.error(
                    "an ephemeral reply to %s was not sent: no usable response_url, channel or user", self.kind
                )
                return ReplyResult(ReplyOutcome.FAILED, "chat.postEphemeral", "no_channel")
            return self._call(
                "chat.postEphemeral",
                ReplyOutcome.EPHEMERAL_MESSAGE,
                channel=channel,
                user=user,
                **_only(message, EPHEMERAL_FIELDS),
            )
        if not channel:
            logger.error("a reply to %s was not sent: no usable response_url and no channel", self.kind)
            return ReplyResult(ReplyOutcome.FAILED, "chat.postMessage", "no_channel")
        return self._call(
            "chat.postMessage", ReplyOutcome.CHANNEL_MESSAGE, channel=channel, **_only(message, MESSAGE_FIELDS)
        )

    def _call(self, method: str, success: ReplyOutcome, **arguments: Any) -> ReplyResult:
        """One Web API call with the installation's client; failures are logged at ERROR and returned as FAILED."""
        try:
            self.client.api_call(method, json={k: v for k, v in arguments.items() if v is not None})
        except NoInstallation:
            logger.error(
                "%s for %s was not sent: installation %s is not active", method, self.kind, self.installation_id
            )
            return ReplyResult(ReplyOutcome.FAILED, method, "no_installation")
        except SlackApiError as exc:
            error = str(exc.response.get("error") or "slack_error")
            logger.error("%s for %s failed: %s", method, self.kind, error)
            return ReplyResult(ReplyOutcome.FAILED, method, error)
        except SLACK_CALL_ERRORS as exc:
            logger.error("%s for %s failed: %s", method, self.kind, type(exc).__name__)
            return ReplyResult(ReplyOutcome.FAILED, method, type(exc).__name__)
        return ReplyResult(success, method)

    def _next_reply(self) -> int:
        """The place of the next reply among this handler run's replies (1, 2, ...)."""
        self._replies += 1
        return self._replies

    def _finish_reply(self, span: tracing.Span, result: ReplyResult, sequence: int) -> None:
        """Put the reply's outcome on its span and, for a click on a notification, in the funnel."""
        span.set(method=result.method, ok=result.ok, error=result.error, outcome=str(result.outcome))
        if not result.ok:
            span.fail(str(result.outcome))
        notification_id = self.notification_id
        if notification_id is None or _services.on_replied is None:
            return
        _services.on_replied(
            self.envelope,
            method=result.method,
            ok=result.ok,
            error=result.error,
            notification_id=notification_id,
            sequence=sequence,
            outcome=str(result.outcome),
        )

    def update_view(self, view: Mapping[str, Any], *, fallback_text: str | None = None) -> None:
        """Replace the Loading modal with ``view`` after commit.

        When control could not open the modal (the trigger had expired, say), the user
        is answered with ``fallback_text`` through ``respond`` instead; a trigger is
        never retried.
        """
        if self.loading_view_open:
            view_id = self.control_response["view_id"]  # type: ignore[index]
            sequence = self._next_reply()
            self.after_commit(lambda: self._update_now(view_id, view, sequence))
        elif fallback_text is not None:
            self.respond(fallback_text)
        else:
            raise NoViewToUpdate(f"No loading modal is open for {self.kind} and no fallback_text was given.")

    def _update_now(self, view_id: str, view: Mapping[str, Any], sequence: int) -> ReplyResult:
        with tracing.stage("region", "reply", "slack views.update", span_kind="client", method="views.update") as span:
            result = self._call("views.update", ReplyOutcome.VIEW_UPDATED, view_id=view_id, view=dict(view))
            self._finish_reply(span, result, sequence)
        return result

    # -- notifications ----------------------------------------------------------------------

    def notify(
        self,
        *,
        name: str,
        channel: str | None = None,
        text: str = "",
        blocks: Sequence[Mapping[str, Any]] | None = None,
        metadata_payload: Mapping[str, Any] | None = None,
        **fields: Any,
    ) -> Notification:
        """Send a notification (:func:`silo_router.region.notifications.send`) as this installation.

        To ``channel_id`` unless ``channel``; linked to this handler's trace. Inside the
        handler's transaction it is posted after commit (never for work that rolled
        back) and the returned ``Notification`` is filled in then (``ok`` is ``None``
        until); outside one it is posted now. Its id is known at once. Raises
        ``ValueError`` at once when there is no conversation.
        """
        prepare = _services.prepare_notification
        if prepare is None:
            raise ImproperlyConfigured("notify() needs the region app: add silo_router.region to INSTALLED_APPS.")
        target = channel or self.channel_id
        if not target:
            raise ValueError(f"notify() needs a conversation: {self.kind} has no channel, so pass channel=...")
        pending = prepare(
            installation_id=self.installation_id or "",
            channel=target,
            name=name,
            text=text,
            blocks=blocks,
            region=self.envelope.region,
            metadata_payload=metadata_payload,
            **fields,
        )
        if self.in_transaction:
            self.after_commit(pending.send)
            return pending.notification
        return pending.send()

    def open_view(self, view: Mapping[str, Any]) -> Mapping[str, Any]:
        """``views.open`` with this request's trigger, now, never retried (a trigger lives 3 s, once).

        Refused while the handler's transaction is open (``SlackCallInTransaction``).
        """
        self._refuse_in_transaction("request.open_view()")
        client = installation_client(self.installation_id, rate_limit_retries=0)
        return client.views_open(trigger_id=self.inbound.trigger_id, view=dict(view)).data  # type: ignore[return-value]

    def _refuse_in_transaction(self, what: str) -> None:
        if self.in_transaction:
            raise SlackCallInTransaction(what)


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
