"""Control responses: answers the control silo gives itself before forwarding.

Handlers are named in ``SILO_ROUTER['CONTROL_RESPONSE_HANDLERS']`` (name -> dotted
path) and looked up by name; which requests get one is an operator decision held in
options (``slack.control_responses.enabled`` and ``slack.control_responses.actions``).
The handlers themselves live with their provider (Slack's Loading modal:
``providers/slack/control_responses.py``); this module selects, runs and reports,
and never lets a handler's failure fail the request.

Each report is a span, ``silo_router.control.report_outcome``; a report sent off the
request thread continues the request's trace.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import close_old_connections

from silo_router import tracing
from silo_router.conf import conf
from silo_router.plugins import cached, import_by_alias
from silo_router.providers.base import (
    ControlResponse,
    ControlResponseHandler,
    ControlResponseStatus,
    InboundRequest,
    ReportOutcome,
)

from .options import CONTROL_RESPONSE_ACTIONS, CONTROL_RESPONSES_ENABLED, options

__all__ = [
    "ControlResponse",
    "ControlResponseHandler",
    "ControlResponseStatus",
    "ReportOutcome",
    "error_code",
    "handlers",
    "outcome_of",
    "report",
    "report_in_background",
    "run",
    "select",
    "wait_for_background_reports",
]

logger = logging.getLogger("silo_router.control")

DEFAULT_HANDLER = "slack.loading_modal"
#: Request types whose trigger_id a control response may use.
ELIGIBLE_TYPES = frozenset({"block_actions", "shortcut", "message_action", "command"})
#: The error a control response records when its handler raised.
HANDLER_ERROR = "handler_error"
#: Seconds a Slack ``trigger_id`` lives after Slack sent the request that carries it.
TRIGGER_LIFETIME = 3.0
#: What an error code may look like in a span (Slack's are ``expired_trigger_id`` and the like).
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

#: Threads that send reports for requests still being answered, and how many such
#: reports may wait for one; past that a report is dropped with an error log.
BACKGROUND_REPORT_THREADS = 2
BACKGROUND_REPORT_BACKLOG = 64

_background = ThreadPoolExecutor(max_workers=BACKGROUND_REPORT_THREADS, thread_name_prefix="silo-router-report")
_pending = 0
_pending_changed = threading.Condition()


@cached
def handlers() -> Mapping[str, ControlResponseHandler]:
    """Every configured handler, imported and instantiated once."""
    return {
        name: import_by_alias(path, aliases={}, setting="CONTROL_RESPONSE_HANDLERS")(name)
        for name, path in conf.CONTROL_RESPONSE_HANDLERS.items()
    }


def select(inbound: InboundRequest) -> str | None:
    """The handler name to run for ``inbound``, or ``None``; reads options (no query)."""
    if inbound.provider != "slack" or inbound.type not in ELIGIBLE_TYPES or not inbound.trigger_id:
        return None
    if not options.get(CONTROL_RESPONSES_ENABLED):
        return None
    for entry in options.get(CONTROL_RESPONSE_ACTIONS):
        name, _, handler = entry.partition("=")
        if name.strip() == inbound.name:
            return handler.strip() or DEFAULT_HANDLER
    return None


def external_id_for(inbound: InboundRequest) -> str:
    """A Slack ``external_id`` for the loading view, unique per request."""
    return "sr-" + hashlib.sha256(inbound.idempotency_key.encode()).hexdigest()[:32]


def run(name: str, inbound: InboundRequest, *, timeout: float) -> ControlResponse:
    """Run handler ``name``; an unknown name or a handler that raises is a failed control response.

    The request is stored and forwarded either way: a control response is a courtesy
    to the user, never a reason to lose the work.
    """
    handler = handlers().get(name)
    if handler is None:
        return ControlResponse(handler=name, status=ControlResponseStatus.FAILED, error="unknown_handler")
    try:
        result = handler.run(inbound, external_id=external_id_for(inbound), timeout=timeout)
    except Exception:
        logger.exception("control response %s raised for %s; forwarding without it", name, inbound.kind)
        return ControlResponse(handler=name, status=ControlResponseStatus.FAILED, error=HANDLER_ERROR)
    if not isinstance(result, ControlResponse):
        logger.error("control response %s returned %s, not a ControlResponse", name, type(result).__name__)
        return ControlResponse(handler=name, status=ControlResponseStatus.FAILED, error=HANDLER_ERROR)
    return result


def outcome_of(response: ControlResponse) -> str:
    """``opened``, ``timeout`` or ``failed``: the control response's span outcome."""
    if response.opened:
        return "opened"
    return "timeout" if response.error == "timeout" else "failed"


def error_code(response: ControlResponse | Mapping[str, Any] | None) -> str | None:
    """The control response's error code, when it looks like one (never free text)."""
    error = response.get("error") if isinstance(response, Mapping) else getattr(response, "error", None)
    if not error:
        return None
    return str(error) if _ERROR_CODE.match(str(error)) else "other"


def report(
    response: Mapping[str, Any] | None,
    *,
    outcome: ReportOutcome | str,
    timeout: float | None = None,
    trace: Mapping[str, str] | None = None,
) -> Mapping[str, Any] | None:
    """Pass how the work ended to the handler that answered, if it opened something.

    Returns the control response with the view's new ``hash`` when the handler replaced
    the view, so a later report is not mistaken for a stale one; ``None`` otherwise
    (also when the handler raised: the error is logged). ``timeout``: see
    ``ControlResponseHandler.report``. ``trace``: the propagation headers of the flow
    the report belongs to, for a report sent from another thread.
    """
    if not response or response.get("status") != ControlResponseStatus.OPENED:
        return None
    name = str(response.get("handler"))
    handler = handlers().get(name)
    if handler is None:
        return None
    with tracing.flow(
        "control",
        "report_outcome",
        f"{name} {outcome}",
        carrier=trace,
        detached=trace is not None,
        handler=name,
        report=str(outcome),
    ) as span:
        try:
            if timeout is None:  # handlers written before the timeout argument keep working
                new_hash = handler.report(response, outcome=outcome)
            else:
                new_hash = handler.report(response, outcome=outcome, timeout=timeout)
        except Exception:
            logger.exception("control response %s raised while reporting %s", name, outcome)
            span.fail(HANDLER_ERROR)
            return None
        span.set(outcome="updated" if new_hash else "not_updated")
    return {**response, "hash": new_hash} if new_hash else None


def report_in_background(response: ControlResponse | None, *, outcome: ReportOutcome) -> bool:
    """Report ``outcome`` off the request thread, with a short timeout and no rate-limit wait.

    For a request that will not be stored or forwarded (storage down, no region): the
    provider is still waiting for its answer, so the report must not delay it. Returns
    whether a report was handed over (``False``: nothing was open, or the backlog is full).
    """
    global _pending
    if response is None or not response.opened:
        return False
    with _pending_changed:
        if _pending >= BACKGROUND_REPORT_BACKLOG:
            logger.error("dropped the %s report of a %s control response: too many pending", outcome, response.handler)
            return False
        _pending += 1
    data = response.as_dict()
    trace = tracing.propagation_headers()

    def send() -> None:
        # The report reads the installation's token: a thread of this pool keeps its own
        # database connection, dropped here when broken or past CONN_MAX_AGE.
        close_old_connections()
        try:
            report(data, outcome=outcome, timeout=conf.CONTROL_RESPONSE_TIMEOUT, trace=trace)
        finally:
            close_old_connections()
            _finished()

    try:
        _background.submit(send)
    except RuntimeError:  # the interpreter is shutting down
        _finished()
        return False
    return True


def _finished() -> None:
    global _pending
    with _pending_changed:
        _pending -= 1
        _pending_changed.notify_all()


def wait_for_background_reports(timeout: float) -> bool:
    """Wait until every background report has been sent (or given up); ``False`` on timeout."""
    with _pending_changed:
        return _pending_changed.wait_for(lambda: _pending == 0, timeout=timeout)
