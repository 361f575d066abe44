"""Slack handlers of the demo app, registered in region silos (``HANDLER_MODULES``).

The Resolve and Archive buttons show how a real app answers: change the issue, ask a
slow upstream service for what to show, then show it in a modal. With control responses
on, the control silo has already opened a Loading modal, and the handler replaces it
(``update_view``). With them off, the handler takes the naive path real apps have,
``views.open`` with the click's trigger_id, which has expired by now (a trigger lives 3
seconds and the hop to the region plus the upstream call take longer): Slack answers
``expired_trigger_id`` and the user sees nothing.

``/ticket assign <number> @someone`` notifies the assignee with a message that has
"Acknowledge" and "Escalate" buttons (``request.notify``: the notification is its own
trace, and its funnel records each stage). Acknowledge answers; Escalate fails on
purpose (its upstream, the on-call service, is down), so the funnel shows where it
stopped.

Every Slack call here (``update_view``, ``open_view``, ``say``, ``respond``'s fallbacks,
``request.client``) is made with the token of the workspace the request came from. A
region holds no token: the calls go through control's Web API proxy, which adds it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from typing import Any

import sentry_sdk
from django.conf import settings
from slack_sdk.errors import SlackApiError

from silo_router.providers.slack.request import SlackHandlerRequest
from silo_router.region.handlers import slack

from .buttons import ACKNOWLEDGE_ACTION, ASSIGNMENT_NOTIFICATION, ESCALATE_ACTION, LEDGER_CLICK_ACTION
from .models import Antidote, Effect, Issue
from .upstream import fetch_issue_details

logger = logging.getLogger("example_project.issues")

#: Slack's limit on options in one block_suggestion answer.
MAX_OPTIONS = 100
#: ``/ticket assign 4 <@U0USER002>`` (Slack escapes a mention as ``<@U...>`` or ``<@U...|name>``).
ASSIGN_COMMAND = re.compile(r"^assign\s+#?(\d+)\s+<@([UW][A-Z0-9]+)(?:\|[^>]*)?>\s*$")


@dataclasses.dataclass(frozen=True)
class IssueRef:
    """What a button's ``value`` names: ``{"organization": "<slug>", "issue": <number>}``."""

    organization: str
    number: int

    @classmethod
    def from_value(cls, value: Any) -> IssueRef | None:
        """Parse a button value; ``None`` if it is not one of ours."""
        if not isinstance(value, str):
            return None
        try:
            data = json.loads(value)
            return cls(organization=str(data["organization"]), number=int(data["issue"]))
        except (ValueError, TypeError, KeyError):
            return None


def issue_modal(issue: Issue, details: dict[str, Any]) -> dict[str, Any]:
    """The modal that shows the result: "Issue #N resolved" (titles are at most 24 characters)."""
    return {
        "type": "modal",
        "callback_id": "issue_result",
        "title": {"type": "plain_text", "text": f"Issue #{issue.number} {issue.status}"[:24]},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"*#{issue.number} {details['title']}* is now *{issue.status}*."},
            }
        ],
    }


def _first_action_value(request: SlackHandlerRequest) -> Any:
    actions = request.payload.get("actions") or [{}]
    return actions[0].get("value")


def change_status(request: SlackHandlerRequest, status: str) -> None:
    """Set the clicked issue's status, then (after commit) show the result in a modal."""
    ref = IssueRef.from_value(_first_action_value(request))
    if ref is None or request.organization_id is None:
        logger.warning("%s: the button value names no issue", request.kind)
        return
    issue = Issue.objects.filter(organization_id=request.organization_id, number=ref.number).first()
    if issue is None:
        logger.warning("%s: no issue #%s for organization %s", request.kind, ref.number, request.organization_id)
        request.respond(f"Issue #{ref.number} does not exist.")
        return
    issue.status = status
    issue.save(update_fields=["status", "updated_at"])
    logger.info("issue #%s of organization %s is now %s", issue.number, issue.organization_id, status)
    # The slow upstream call runs after commit: no transaction is held across the network.
    request.after_commit(lambda: show_result(request, issue))


def show_result(request: SlackHandlerRequest, issue: Issue) -> None:
    """Ask the upstream tracker, then replace the Loading modal or (naively) open a modal."""
    view = issue_modal(issue, fetch_issue_details(issue))
    if request.loading_view_open:
        request.update_view(view, fallback_text=f"Issue #{issue.number} is now {issue.status}.")
        return
    # The app's own span, in the library's trace: the waterfall shows it past Slack's deadline.
    with sentry_sdk.start_span(op="issues.open_modal", name=f"views.open for issue #{issue.number}") as span:
        try:
            request.open_view(view)
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            span.set_status("internal_error")
            span.set_data("slack.error", error)
            logger.error("views.open for issue #%s failed: %s (the user sees nothing)", issue.number, error)


@slack.action("resolve_dialog")
def resolve(request: SlackHandlerRequest) -> None:
    """The Resolve button."""
    change_status(request, Issue.Status.RESOLVED)


@slack.action("archive_dialog")
def archive(request: SlackHandlerRequest) -> None:
    """The Archive button."""
    change_status(request, Issue.Status.ARCHIVED)


class TicketServiceDown(RuntimeError):
    """``/ticket crash``: the demo's handler that raises (its effects roll back; control retries)."""


class EscalationServiceDown(RuntimeError):
    """The "Escalate" button: the on-call service it would page is down (on purpose, in the demo)."""


@slack.command("/ticket")
def ticket(request: SlackHandlerRequest) -> None:
    """``/ticket``: how many issues of the organization are open, answered via response_url.

    ``/ticket assign <number> @someone`` notifies the assignee instead. ``/ticket crash``
    raises, to show (and test) what a failing handler leaves in logs and error reports:
    no response_url or trigger_id.
    """
    text = str(request.payload.get("text") or "").strip()
    if text == "crash":
        raise TicketServiceDown("the ticket service is down")
    if text.startswith("assign"):
        assign(request, text)
        return
    count = Issue.objects.filter(organization_id=request.organization_id, status=Issue.Status.OPEN).count()
    request.respond(
        f"Organization {request.organization_id} has {count} open issues (region {settings.SILO_ROUTER['REGION']})."
    )


def assign(request: SlackHandlerRequest, text: str) -> None:
    """``/ticket assign <number> @someone``: once the handler commits, notify the assignee with buttons."""
    match = ASSIGN_COMMAND.match(text)
    if match is None:
        request.respond("Usage: /ticket assign <issue number> @someone")
        return
    number, assignee = int(match.group(1)), match.group(2)
    issue = Issue.objects.filter(organization_id=request.organization_id, number=number).first()
    if issue is None:
        request.respond(f"Issue #{number} does not exist.")
        return
    # A notification is a Slack call: it goes out after commit, never inside the handler's transaction.
    request.after_commit(lambda: notify_assignee(request, issue, assignee))


def assignment_blocks(issue: Issue, organization: str, assignee: str) -> list[dict[str, Any]]:
    """The assignment message: what is assigned to whom, and the Acknowledge and Escalate buttons."""
    value = json.dumps({"organization": organization, "issue": issue.number})
    return [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"<@{assignee}>, *#{issue.number} {issue.title}* is assigned to you."},
        },
        {
            "type": "actions",
            "block_id": "assignment",
            "elements": [
                {
                    "type": "button",
                    "action_id": ACKNOWLEDGE_ACTION,
                    "text": {"type": "plain_text", "text": "Acknowledge"},
                    "style": "primary",
                    "value": value,
                },
                {
                    "type": "button",
                    "action_id": ESCALATE_ACTION,
                    "text": {"type": "plain_text", "text": "Escalate"},
                    "style": "danger",
                    "value": value,
                },
            ],
        },
    ]


def notify_assignee(request: SlackHandlerRequest, issue: Issue, assignee: str) -> None:
    """Send the assignment notification (its own trace, linked to this command's) and tell the assigner."""
    notification = request.notify(
        channel=request.channel_id,
        text=f"Issue #{issue.number} {issue.title} is assigned to you.",
        blocks=assignment_blocks(issue, str(request.organization_id), assignee),
        name=ASSIGNMENT_NOTIFICATION,
    )
    if not notification.ok:
        request.respond(f"Could not notify <@{assignee}>: {notification.error}.")
        return
    request.respond(f"Assigned #{issue.number} to <@{assignee}> (notification {notification.id}).")


@slack.action(ACKNOWLEDGE_ACTION)
def acknowledge(request: SlackHandlerRequest) -> None:
    """The assignee acknowledges: the reply closes the notification's funnel (replied)."""
    ref = IssueRef.from_value(_first_action_value(request))
    what = f"issue #{ref.number}" if ref else "the issue"
    request.respond(f"Thanks <@{request.user_id}>, {what} is yours (notification {request.notification_id}).")


@slack.action(ESCALATE_ACTION)
def escalate(request: SlackHandlerRequest) -> None:
    """The assignee escalates: paging on-call fails (its service is down), so the funnel stops at handled."""
    raise EscalationServiceDown("the on-call service is down")


@slack.command("/whoami", atomic=False)
def whoami(request: SlackHandlerRequest) -> None:
    """``/whoami``: who the app is in this workspace, asked of Slack with ``auth.test`` (outside a transaction)."""
    identity = request.client.auth_test()
    request.respond(
        f"Workspace {identity.get('team_id')} knows this app as {identity.get('user_id')} "
        f"(answered by region {settings.SILO_ROUTER['REGION']})."
    )


@slack.event("app_mention")
def mentioned(request: SlackHandlerRequest) -> None:
    """An @-mention of the app: say hello in the channel, naming this region (posted after commit)."""
    if not request.channel_id:
        logger.warning("app_mention without a channel; nothing to answer")
        return
    request.say(f"Hello from region {settings.SILO_ROUTER['REGION']} (organization {request.organization_id}).")


@slack.action(LEDGER_CLICK_ACTION, atomic=False)
def ledger_click(request: SlackHandlerRequest) -> None:
    """A button whose value is ``effect <key>`` or ``slow <seconds> <key>``: one ledger row, then the sleep.

    Used by the flow benchmark (bench/flow_latency.py): the row is written first, in its
    own autocommit statement (``atomic=False``), so its ``created_at`` is when the
    handler started, and a ``slow`` click (a region slow to answer) sleeps afterwards
    without holding the region's database. A redelivered click writes another row.
    """
    words = str(_first_action_value(request) or "").split()
    if len(words) < 2 or words[0] not in ("effect", "slow"):
        return
    Effect.objects.create(key=words[-1][:100], organization_id=request.organization_id or "")
    if words[0] == "slow" and len(words) > 2:
        time.sleep(min(float(words[1]), 30.0))  # stands for a slow region, not real work


@slack.options("pick_issue")
def pick_issue(request: SlackHandlerRequest) -> dict[str, Any]:
    """Options for an external select: this region's open issues matching what the user typed."""
    typed = str(request.payload.get("value") or "").strip()
    issues = Issue.objects.filter(organization_id__in=request.organization_ids, status=Issue.Status.OPEN)
    if typed:
        issues = issues.filter(title__icontains=typed)
    return {
        "options": [
            {
                "text": {"type": "plain_text", "text": f"#{issue.number} {issue.title}"[:75]},
                "value": json.dumps({"organization": issue.organization_id, "issue": issue.number}),
            }
            for issue in issues[:MAX_OPTIONS]
        ]
    }


@slack.event("message")
def ledger(request: SlackHandlerRequest) -> None:
    """Messages that say ``effect``, ``slow <seconds>`` or ``poison`` write one ledger row.

    Used by the fault tests and benchmarks: the row is written in the handler's
    transaction, with the envelope's idempotency record, so a redelivered envelope
    leaves no second row. ``poison`` fails until an ``Antidote`` row exists for its
    event; ``slow`` holds the handler (a region that is slow to answer).
    """
    event = request.payload.get("event") or {}
    words = str(event.get("text") or "").split()
    if not words or words[0] not in ("effect", "slow", "poison"):
        return
    key = str(request.payload.get("event_id"))
    if words[0] == "poison" and not Antidote.objects.filter(key=key).exists():
        raise RuntimeError(f"poison event {key}")
    if words[0] == "slow" and len(words) > 1:
        time.sleep(min(float(words[1]), 30.0))  # stands for a slow region, not real work
    Effect.objects.create(key=key, organization_id=request.organization_id or "")
