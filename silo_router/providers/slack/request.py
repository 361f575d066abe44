"""The Slack handler request: payload accessors and reply helpers.

Replies never leak: an ephemeral ``respond()`` that cannot use its ``response_url``
(stale, used up, failing) falls back to ``chat.postEphemeral`` to the user, never to a
public ``chat.postMessage``. Uses of a ``response_url`` are counted per URL by a ledger
(``SLACK["RESPONSE_URL_LEDGER"]``; the region's database by default), so earlier
attempts, replays and other handlers count too.
"""

from __future__ import annotations

import dataclasses
import enum
import http.client
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.webhook import WebhookClient

from silo_router import tracing
from silo_router.conf import RESPONSE_URL_LEDGER_ALIASES, conf
from silo_router.plugins import cached, import_by_alias
from silo_router.providers.handler_request import HandlerRequest

from .client import SlackCallInTransaction, slack_client

logger = logging.getLogger("silo_router.slack")

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
    VIEW_UPDATED = "views.update"
    FAILED = "failed"


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


@dataclasses.dataclass
class SlackHandlerRequest(HandlerRequest):
    """Adds Slack replies: ``respond``, ``update_view``, ``open_view`` and ``client``."""

    @property
    def client(self) -> WebClient:
        """A Web API client for the bot token; 429s are retried after ``Retry-After``.

        Refused while the handler's transaction is open (``SlackCallInTransaction``).
        """
        self._refuse_in_transaction("request.client")
        return slack_client()

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
        container = payload.get("container")
        candidates = (
            channel.get("id") if isinstance(channel, Mapping) else channel,
            event.get("channel") if isinstance(event, Mapping) else None,
            container.get("channel_id") if isinstance(container, Mapping) else None,
            payload.get("channel_id"),
        )
        return next((c for c in candidates if isinstance(c, str) and c), None)

    @property
    def user_id(self) -> str | None:
        return self.inbound.routing.user_id

    def respond(
        self,
        text: str,
        *,
        blocks: Sequence[Mapping[str, Any]] | None = None,
        response_type: str = ResponseType.EPHEMERAL,
        replace_original: bool | None = None,
    ) -> None:
        """Reply through ``response_url`` after commit.

        Past Slack's 5 uses or 30 minutes, when the ``response_url`` fails, or without
        one (global shortcuts, events), an ephemeral reply goes to the user with
        ``chat.postEphemeral`` (never to the whole channel) and an ``in_channel`` reply
        with ``chat.postMessage``. A reply that cannot be sent is logged at ERROR.
        """
        kind = ResponseType(response_type)
        self.after_commit(lambda: self._respond_now(text, blocks, kind, replace_original))

    def _respond_now(
        self,
        text: str,
        blocks: Sequence[Mapping[str, Any]] | None,
        response_type: ResponseType,
        replace_original: bool | None,
    ) -> ReplyOutcome:
        with tracing.span("reply", f"slack respond {response_type}") as span:
            outcome = self._post_to_response_url(text, blocks, response_type, replace_original)
            if outcome is None:
                outcome = self._post_instead(text, blocks, response_type)
            tracing.set_data(span, outcome=str(outcome))
        return outcome

    def _post_to_response_url(
        self,
        text: str,
        blocks: Sequence[Mapping[str, Any]] | None,
        response_type: ResponseType,
        replace_original: bool | None,
    ) -> ReplyOutcome | None:
        """Post to the response_url if it is still usable; ``None`` when it was not used or failed."""
        url = self.inbound.response_url
        if not url:
            return None
        if time.time() - self.envelope.created_at >= RESPONSE_URL_TTL:
            logger.info("the response_url of %s is older than %s s; not using it", self.kind, RESPONSE_URL_TTL)
            return None
        if not response_url_ledger().take(url, limit=RESPONSE_URL_USES):
            logger.info("the response_url of %s has been used %s times; not using it", self.kind, RESPONSE_URL_USES)
            return None
        message: dict[str, Any] = {"text": text, "response_type": str(response_type)}
        if blocks is not None:
            message["blocks"] = list(blocks)
        if replace_original is not None:
            message["replace_original"] = replace_original
        try:
            result = WebhookClient(url, timeout=RESPONSE_URL_TIMEOUT).send_dict(message)
        except SLACK_CALL_ERRORS as exc:
            logger.warning("posting to the response_url of %s failed: %s", self.kind, type(exc).__name__)
            return None
        if result.status_code == 200:
            return ReplyOutcome.RESPONSE_URL
        logger.warning("the response_url of %s answered HTTP %s", self.kind, result.status_code)
        return None

    def _post_instead(
        self, text: str, blocks: Sequence[Mapping[str, Any]] | None, response_type: ResponseType
    ) -> ReplyOutcome:
        """The fallback: ephemeral to the user, or to the channel for ``in_channel`` replies."""
        channel = self.channel_id
        block_list = [dict(b) for b in blocks] if blocks else None
        if response_type is ResponseType.EPHEMERAL:
            user = self.user_id
            if not (channel and user):
                logger.error(
                    "an ephemeral reply to %s was not sent: no usable response_url, channel or user", self.kind
                )
                return ReplyOutcome.FAILED
            return self._call(
                "chat.postEphemeral",
                ReplyOutcome.EPHEMERAL_MESSAGE,
                channel=channel,
                user=user,
                text=text,
                blocks=block_list,
            )
        if not channel:
            logger.error("a reply to %s was not sent: no usable response_url and no channel", self.kind)
            return ReplyOutcome.FAILED
        return self._call(
            "chat.postMessage", ReplyOutcome.CHANNEL_MESSAGE, channel=channel, text=text, blocks=block_list
        )

    def _call(self, method: str, success: ReplyOutcome, **arguments: Any) -> ReplyOutcome:
        """One Web API call; failures are logged at ERROR (error name only) and returned as FAILED."""
        try:
            slack_client().api_call(method, json={k: v for k, v in arguments.items() if v is not None})
        except SlackApiError as exc:
            logger.error("%s for %s failed: %s", method, self.kind, exc.response.get("error"))
            return ReplyOutcome.FAILED
        except SLACK_CALL_ERRORS as exc:
            logger.error("%s for %s failed: %s", method, self.kind, type(exc).__name__)
            return ReplyOutcome.FAILED
        return success

    def update_view(self, view: Mapping[str, Any], *, fallback_text: str | None = None) -> None:
        """Replace the Loading modal with ``view`` after commit.

        When control could not open the modal (the trigger had expired, say), the user
        is answered with ``fallback_text`` through ``respond`` instead; a trigger is
        never retried.
        """
        if self.loading_view_open:
            view_id = self.control_response["view_id"]  # type: ignore[index]
            self.after_commit(lambda: self._update_now(view_id, view))
        elif fallback_text is not None:
            self.respond(fallback_text)
        else:
            raise NoViewToUpdate(f"No loading modal is open for {self.kind} and no fallback_text was given.")

    def _update_now(self, view_id: str, view: Mapping[str, Any]) -> ReplyOutcome:
        with tracing.span("reply", "slack views.update") as span:
            outcome = self._call("views.update", ReplyOutcome.VIEW_UPDATED, view_id=view_id, view=dict(view))
            tracing.set_data(span, outcome=str(outcome))
        return outcome

    def open_view(self, view: Mapping[str, Any]) -> Mapping[str, Any]:
        """``views.open`` with this request's trigger, now, never retried (a trigger lives 3 s, once).

        Refused while the handler's transaction is open (``SlackCallInTransaction``).
        """
        self._refuse_in_transaction("request.open_view()")
        client = slack_client(rate_limit_retries=0)
        return client.views_open(trigger_id=self.inbound.trigger_id, view=dict(view)).data  # type: ignore[return-value]

    def _refuse_in_transaction(self, what: str) -> None:
        if self.in_transaction:
            raise SlackCallInTransaction(what)
