"""The Slack handler request: payload accessors and reply helpers."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from silo_router.region.request import HandlerRequest

from .client import slack_client

logger = logging.getLogger("silo_router.slack")

#: Slack accepts 5 posts to a response_url within 30 minutes.
RESPONSE_URL_USES = 5
RESPONSE_URL_TTL = 30 * 60


class NoViewToUpdate(RuntimeError):
    """``update_view`` was called but no loading modal is open and no fallback was given."""


@dataclasses.dataclass
class SlackHandlerRequest(HandlerRequest):
    """Adds Slack replies: ``respond``, ``update_view``, ``open_view`` and ``client``."""

    response_url_uses: int = 0

    @property
    def client(self) -> WebClient:
        """A Web API client for the bot token; 429s are retried after ``Retry-After``."""
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
        response_type: str = "ephemeral",
        replace_original: bool | None = None,
    ) -> None:
        """Reply through ``response_url`` after commit.

        Past Slack's 5 uses or 30 minutes, or with no ``response_url`` (global
        shortcuts, events), it posts to the channel with ``chat.postMessage`` instead.
        """
        self.after_commit(lambda: self._respond_now(text, blocks, response_type, replace_original))

    def _respond_now(
        self, text: str, blocks: Sequence[Mapping[str, Any]] | None, response_type: str, replace_original: bool | None
    ) -> None:
        url = self.inbound.response_url
        fresh = time.time() - self.envelope.created_at < RESPONSE_URL_TTL
        if url and fresh and self.response_url_uses < RESPONSE_URL_USES:
            self.response_url_uses += 1
            kwargs: dict[str, Any] = {"text": text, "response_type": response_type}
            if blocks is not None:
                kwargs["blocks"] = list(blocks)
            if replace_original is not None:
                kwargs["replace_original"] = replace_original
            result = WebhookClient(url, timeout=10).send(**kwargs)
            if result.status_code == 200:
                return
            logger.warning("response_url answered %s; posting to the channel instead", result.status_code)
        channel = self.channel_id
        if not channel:
            logger.error("cannot reply to %s: no response_url and no channel", self.kind)
            return
        try:
            self.client.chat_postMessage(
                channel=channel, text=text, blocks=[dict(b) for b in blocks] if blocks else None
            )
        except SlackApiError as exc:
            logger.error("chat.postMessage failed: %s", exc.response.get("error"))

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

    def _update_now(self, view_id: str, view: Mapping[str, Any]) -> None:
        try:
            self.client.views_update(view_id=view_id, view=dict(view))
        except SlackApiError as exc:
            logger.error("views.update failed: %s", exc.response.get("error"))

    def open_view(self, view: Mapping[str, Any]) -> Mapping[str, Any]:
        """``views.open`` with this request's trigger, now, never retried (a trigger lives 3 s, once)."""
        return slack_client(rate_limit_retries=0).views_open(trigger_id=self.inbound.trigger_id, view=dict(view)).data  # type: ignore[return-value]

    def on_failure(self, exc: BaseException) -> None:
        """Replace the Loading modal with an error so the user is not left waiting."""
        from silo_router.control import control_responses

        control_responses.report(self.control_response, outcome="failed")
