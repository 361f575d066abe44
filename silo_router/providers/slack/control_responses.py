"""The Slack Loading modal, its whole provider-side life in one place.

1. ``LoadingModal.run``: ``views.open`` a Loading modal with the request's trigger and
   the installation's token (``inbound.authorization``), before any resolver or storage
   work; the ``ControlResponse`` it returns (view id, external id, hash, installation
   id) travels to the region inside the envelope.
2. The region's handler replaces it with ``views.update`` (``request.update_view``).
3. ``LoadingModal.report``: control replaces it when the handler did not, with the
   done, failed or "taking longer" view, with the same installation's token, and only
   if nobody replaced it since (the view's ``hash``).

Each Slack call is a span (``silo_router.control.views_open``, ``...views_update``)
with the method, whether Slack said ``ok`` and its error code; never the trigger or
the token.
"""

from __future__ import annotations

import copy
import logging
import time
import urllib.error
from collections.abc import Mapping
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from silo_router import tracing
from silo_router.conf import conf
from silo_router.providers.base import ControlResponse, ControlResponseStatus, InboundRequest, ReportOutcome

from .client import NoInstallation, installation_client, slack_client

logger = logging.getLogger("silo_router.slack")

#: Slack refuses modal titles longer than this.
MAX_TITLE_LENGTH = 24

LOADING_TEXT = "Working on it..."
FAILED_TEXT = "The action could not be completed. Please try again; if it keeps failing, tell your admin."
TIMED_OUT_TEXT = "This is taking longer than expected. This window will update when the work is done."

#: Slack API errors that mean the modal was replaced since we last showed it.
REPLACED_ERRORS = frozenset({"hash_conflict"})


def _modal(title: str, text: str, *, external_id: str | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": "modal",
        "title": {"type": "plain_text", "text": title[:MAX_TITLE_LENGTH]},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }
    if external_id:
        view["external_id"] = external_id
    return view


def loading_view(external_id: str) -> dict[str, Any]:
    """Shown by the control silo while the region does the work."""
    return _modal("Loading", f":hourglass_flowing_sand: {LOADING_TEXT}", external_id=external_id)


def failed_view(reason: str = FAILED_TEXT) -> dict[str, Any]:
    """Replaces the Loading modal when the work failed for good (or could not be forwarded)."""
    return _modal("Something went wrong", f":warning: {reason}")


def timed_out_view() -> dict[str, Any]:
    """Replaces the Loading modal when the work is still running after ``LOADING_VIEW_TIMEOUT``."""
    return _modal("Still working", f":hourglass: {TIMED_OUT_TEXT}")


def done_view() -> dict[str, Any]:
    """Replaces a Loading modal that the handler left untouched after succeeding."""
    return _modal("Done", ":white_check_mark: Done.")


def view_for(outcome: ReportOutcome | str) -> dict[str, Any]:
    """The view that tells the user ``outcome`` (an unknown outcome reads as failed)."""
    if outcome == ReportOutcome.DONE:
        return done_view()
    if outcome == ReportOutcome.TIMED_OUT:
        return timed_out_view()
    return failed_view()


def _client_with(token: str, *, timeout: float) -> WebClient:
    """A copy of the shared client that carries ``token``, with no 429 wait (none is kept per token)."""
    client = copy.copy(slack_client(timeout=timeout, rate_limit_retries=0))
    client.token = token
    return client


class LoadingModal:
    """``views.open`` a Loading modal with the request's trigger, once, with no retry.

    A trigger works once and for 3 seconds, so a failure is reported in the envelope
    rather than retried; the region then answers through ``response_url``. Later
    reports replace the modal only if nobody else has (``hash`` from ``views.open``).
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, inbound: InboundRequest, *, external_id: str, timeout: float) -> ControlResponse:
        """Open the Loading modal now; never raises for a Slack failure.

        ``elapsed_ms`` is the time ``views.open`` took (0 when it was not called).
        """
        if not inbound.trigger_id:
            return ControlResponse(handler=self.name, status=ControlResponseStatus.FAILED, error="no_trigger_id")
        authorization = inbound.authorization
        if authorization is None:
            logger.info("no Loading modal for %s: no active installation", inbound.kind)
            return ControlResponse(handler=self.name, status=ControlResponseStatus.FAILED, error="no_installation")
        installation_id = authorization.installation_id
        client = _client_with(authorization.token, timeout=timeout)
        with tracing.stage("control", "views_open", "views.open", provider="slack", method="views.open") as span:
            started = time.monotonic()
            try:
                result = client.views_open(trigger_id=inbound.trigger_id, view=loading_view(external_id))
            except SlackApiError as exc:
                error = str(exc.response.get("error") or "slack_api_error")
            except (SlackClientError, urllib.error.URLError, OSError) as exc:
                error = "timeout" if isinstance(exc, TimeoutError) or "timed out" in str(exc) else "connection_error"
            else:
                span.set(ok=True)
                view = result.get("view") or {}
                return ControlResponse(
                    handler=self.name,
                    status=ControlResponseStatus.OPENED,
                    view_id=view.get("id"),
                    external_id=view.get("external_id") or external_id,
                    hash=view.get("hash"),
                    elapsed_ms=(time.monotonic() - started) * 1000,
                    installation_id=installation_id,
                )
            elapsed_ms = (time.monotonic() - started) * 1000
            span.set(ok=False, error=error)
        logger.warning("views.open for %s failed: %s", inbound.kind, error)
        return ControlResponse(
            handler=self.name,
            status=ControlResponseStatus.FAILED,
            error=error,
            elapsed_ms=elapsed_ms,
            installation_id=installation_id,
        )

    def report(
        self, response: Mapping[str, Any], *, outcome: ReportOutcome | str, timeout: float | None = None
    ) -> str | None:
        """Replace the modal if it is still the one we last showed; return its new hash.

        With ``timeout``, one short call that does not wait out a 429; without, the
        worker's ``DELIVERY_TIMEOUT`` and the configured rate-limit retries. The call
        uses the token of the installation that opened the modal; when that
        installation is gone or deactivated, nothing is sent and the failure is logged.
        """
        installation_id = response.get("installation_id")
        try:
            if timeout is None:
                client = installation_client(installation_id, timeout=conf.DELIVERY_TIMEOUT)
            else:
                client = installation_client(installation_id, timeout=timeout, rate_limit_retries=0)
        except NoInstallation:
            logger.warning("could not report %s in the modal: installation %s is not active", outcome, installation_id)
            return None
        with tracing.stage("control", "views_update", "views.update", provider="slack", method="views.update") as span:
            try:
                result = client.views_update(
                    view_id=response["view_id"], hash=response.get("hash"), view=view_for(outcome)
                )
            except SlackApiError as exc:
                error = exc.response.get("error")
                span.set(ok=False, error=str(error or "slack_api_error"), replaced=error in REPLACED_ERRORS)
                if error not in REPLACED_ERRORS:
                    logger.warning("could not report %s in the modal: %s", outcome, error)
                return None
            except (SlackClientError, urllib.error.URLError, OSError) as exc:
                span.set(ok=False, error="timeout" if isinstance(exc, TimeoutError) else "connection_error")
                logger.warning("could not report %s in the modal: %s", outcome, type(exc).__name__)
                return None
            span.set(ok=True)
        return (result.get("view") or {}).get("hash")
