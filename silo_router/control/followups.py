"""The durable follow-up of a Loading modal that a control response opened.

``delivery.store`` records, on the payload row, that its modal is open and when it must
be checked (``LOADING_VIEW_TIMEOUT`` after storing). The sweeper runs due checks, so a
lost broker message cannot leave a user on "Loading...". A modal that showed "taking
longer" is updated again when the payload is finally delivered or failed. Slack's view
hash lives in its own column (``loading_view_hash``), never in the stored envelope.

Every transition of ``Payload.loading_view`` is a compare-and-set, so one process
reports each step even when the sweeper and a worker look at the same payload.

Each timed check is a span (``silo_router.control.loading_check``) whose outcome is
what the user was told; each report a ``silo_router.control.report_outcome`` span.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Mapping
from typing import Any

from django.utils import timezone

from silo_router import tracing
from silo_router.conf import conf
from silo_router.providers.base import ControlResponseStatus, ReportOutcome

from . import control_responses
from .models import Payload

logger = logging.getLogger("silo_router.delivery")

LoadingView = Payload.LoadingView
State = Payload.State


#: What the user is told in the modal (the provider's own enum, under the name used here).
Report = ReportOutcome


def opened_view(control_response: Mapping[str, Any] | None) -> bool:
    """Whether a control response left a modal open that needs a follow-up."""
    return control_response is not None and control_response.get("status") == ControlResponseStatus.OPENED


def fields_for_new_payload(control_response: Mapping[str, Any] | None, *, now: datetime.datetime) -> dict[str, Any]:
    """The ``Payload`` columns that schedule the check of an opened modal."""
    if control_response is None or not opened_view(control_response):
        return {}
    return {
        "loading_view": LoadingView.OPEN,
        "loading_check_at": now + datetime.timedelta(seconds=conf.LOADING_VIEW_TIMEOUT),
        "loading_view_hash": str(control_response.get("hash") or ""),
    }


def run_due_checks(*, now: datetime.datetime | None = None, limit: int | None = None) -> int:
    """Check every modal whose time has come (the sweeper calls this); return how many."""
    moment = now or timezone.now()
    batch = limit if limit is not None else conf.SWEEP_BATCH
    due = list(
        Payload.objects.filter(loading_check_at__lte=moment)
        .order_by("loading_check_at")
        .values_list("pk", flat=True)[:batch]
    )
    return sum(1 for pk in due if check(str(pk)) is not None)


def check(payload_id: str) -> Report | None:
    """The timed check: say "done"/"failed" if the payload ended, else "taking longer".

    Returns what was reported, or ``None`` when there was nothing to check (another
    process took the check, or the modal was already closed).
    """
    with tracing.stage("control", "loading_check", payload_id, envelope_id=payload_id) as span:
        reported = _check(payload_id)
        span.set(outcome=str(reported) if reported is not None else "nothing_to_check")
    return reported


def _check(payload_id: str) -> Report | None:
    won = Payload.objects.filter(pk=payload_id, loading_view=LoadingView.OPEN).update(
        loading_view=LoadingView.TIMED_OUT, loading_check_at=None
    )
    if not won:
        Payload.objects.filter(pk=payload_id).exclude(loading_view=LoadingView.OPEN).update(loading_check_at=None)
        return None
    final = _final_report(payload_id)
    if final is not None and _close(payload_id):
        _report(payload_id, final)
        return final
    _report(payload_id, Report.TIMED_OUT)
    # The payload may have ended while the user was being told it is slow.
    final = _final_report(payload_id)
    if final is not None and _close(payload_id):
        _report(payload_id, final)
    return Report.TIMED_OUT


def payload_ended(payload_id: str, outcome: Report) -> None:
    """The payload is delivered (``DONE``) or failed for good (``FAILED``): update its modal.

    A failure closes the modal at once. A delivery updates only a modal that already
    said "taking longer"; one still on "Loading..." is left to the region's handler
    (which usually replaces it) and to the timed check.
    """
    from_states = (LoadingView.OPEN, LoadingView.TIMED_OUT) if outcome is Report.FAILED else (LoadingView.TIMED_OUT,)
    if Payload.objects.filter(pk=payload_id, loading_view__in=from_states).update(
        loading_view=LoadingView.CLOSED, loading_check_at=None
    ):
        _report(payload_id, outcome)


def _final_report(payload_id: str) -> Report | None:
    state = Payload.objects.filter(pk=payload_id).values_list("state", flat=True).first()
    if state == State.DELIVERED:
        return Report.DONE
    if state == State.FAILED:
        return Report.FAILED
    return None


def _close(payload_id: str) -> bool:
    return bool(
        Payload.objects.filter(pk=payload_id, loading_view=LoadingView.TIMED_OUT).update(
            loading_view=LoadingView.CLOSED
        )
    )


def _report(payload_id: str, outcome: Report) -> None:
    """Show ``outcome`` in the modal and remember the view's new hash in its column."""
    row = Payload.objects.filter(pk=payload_id).values("envelope", "loading_view_hash").first()
    if row is None:
        return
    try:
        envelope = json.loads(row["envelope"])
        response = envelope.get("control_response")
    except (ValueError, AttributeError):
        logger.error("payload %s holds a corrupt envelope; its modal cannot be updated", payload_id)
        return
    if not opened_view(response):
        return
    installation_id = response.get("installation_id")
    current = {
        **response,
        "hash": row["loading_view_hash"] or response.get("hash"),
        # A control response that names no installation: the payload's own.
        "installation_id": envelope.get("integration_id") if installation_id is None else installation_id,
    }
    updated = control_responses.report(current, outcome=str(outcome))
    if updated is not None and updated.get("hash"):
        Payload.objects.filter(pk=payload_id).update(loading_view_hash=str(updated["hash"]))
