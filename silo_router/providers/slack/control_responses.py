"""The built-in Slack control response: open a Loading modal before anything else."""

from __future__ import annotations

import logging
import time
import urllib.error
from collections.abc import Mapping
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError

from silo_router.conf import conf
from silo_router.control.control_responses import ControlResponse
from silo_router.providers.base import InboundRequest

from .client import slack_client
from .modals import done_view, failed_view, loading_view

logger = logging.getLogger("silo_router.slack")

MESSAGES = {
    "failed": "The action could not be completed. Please try again; if it keeps failing, tell your admin.",
    "timed_out": "This is taking longer than expected. You will be notified when it is done.",
}


class LoadingModal:
    """``views.open`` a Loading modal with the request's trigger, once, with no retry.

    A trigger works once and for 3 seconds, so a failure is reported in the envelope
    rather than retried; the region then answers through ``response_url``. Later
    reports replace the modal only if nobody else has (``hash`` from ``views.open``).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, inbound: InboundRequest, *, external_id: str, timeout: float) -> ControlResponse:
        started = time.monotonic()
        if not inbound.trigger_id:
            return ControlResponse(handler=self.name, status="failed", error="no_trigger_id")
        client = slack_client(timeout=timeout, rate_limit_retries=0)
        try:
            result = client.views_open(trigger_id=inbound.trigger_id, view=loading_view(external_id))
        except SlackApiError as exc:
            error = str(exc.response.get("error") or "slack_api_error")
        except (SlackClientError, urllib.error.URLError, OSError) as exc:
            error = "timeout" if isinstance(exc, TimeoutError) or "timed out" in str(exc) else "connection_error"
        else:
            view = result.get("view") or {}
            return ControlResponse(
                handler=self.name,
                status="opened",
                view_id=view.get("id"),
                external_id=view.get("external_id") or external_id,
                hash=view.get("hash"),
                elapsed_ms=(time.monotonic() - started) * 1000,
            )
        logger.warning("views.open for %s failed: %s", inbound.kind, error)
        return ControlResponse(
            handler=self.name, status="failed", error=error, elapsed_ms=(time.monotonic() - started) * 1000
        )

    def report(self, response: Mapping[str, Any], *, outcome: str) -> str | None:
        """Replace the modal if it is still the one we last showed; return its new hash."""
        view = done_view() if outcome == "done" else failed_view(MESSAGES.get(outcome, MESSAGES["failed"]))
        try:
            result = slack_client(timeout=conf.DELIVERY_TIMEOUT).views_update(
                view_id=response["view_id"], hash=response.get("hash"), view=view
            )
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error != "hash_conflict":  # hash_conflict: the region replaced it since
                logger.warning("could not report %s in the modal: %s", outcome, error)
            return None
        except (SlackClientError, urllib.error.URLError, OSError) as exc:
            logger.warning("could not report %s in the modal: %s", outcome, exc)
            return None
        return (result.get("view") or {}).get("hash")
