"""The demo: ``python -m example_project.demo`` (``make demo``).

Starts the whole example on loopback (fake Slack, control silo, us and eu region silos,
a Celery worker; see ``cluster.py``) and plays the story of the control response:

0. The app is installed in three workspaces through Slack's OAuth flow: an install link
   made by the organization's region, Slack's consent screen (the fake Slack plays the
   user), the redirect back to control, which stores the workspace's tokens encrypted.
   T0US00001 -> acme (us), T0EU00001 -> globex (eu), T0BOTH001 -> both.
a. Control responses off: a user clicks "Resolve". Slack gets its 200 at once, but the
   region's handler opens its modal only after the hop and a slow upstream call; the
   trigger_id has expired by then (``expired_trigger_id``) and the user sees nothing.
b. An operator turns ``slack.control_responses.enabled`` on in control's Django admin
   (no restart).
c. The same click, in each workspace: control opens a Loading modal within Slack's
   window with that workspace's token, the region does the work and replaces the modal
   (through control's Web API proxy, again with that workspace's token); the issue
   changed in its own region only.
d. Other kinds still route by workspace: a slash command and an app_mention go to eu,
   an options load is answered synchronously by us.
e. A region outage is absorbed and drained: region eu is stopped while events arrive
   for both workspaces. Slack gets every 200 in time, us handles its events at once,
   control keeps eu's payloads pending behind eu's circuit breaker; eu is started again,
   the backlog drains, and eu's effect ledger has each event exactly once.
f. T0EU00001 uninstalls the app: Slack revokes its tokens and sends ``app_uninstalled``;
   control deactivates the installation, the next click from it is kept unroutable and
   opens no modal, and T0US00001 still works.
g. Notifications: ``/ticket assign`` notifies an assignee twice, each time with
   "Acknowledge" and "Escalate" buttons; one is acknowledged, the other escalated, whose
   handler fails (the on-call service is down). Each notification's funnel is printed:
   all five stages for the first, the stage where the second stopped.

Every process runs sentry-sdk as the README recommends, writing what it would send to
``<var>/sentry/`` (``SILO_DEMO_SENTRY_CAPTURE_DIR``). Steps a and c print the Resolve
flow's waterfall built from those envelopes, with Slack's deadline line: the region's
``views.open`` past it in (a), control's Loading modal well inside it in (c).
``manage.py silo_router_trace <var>/sentry`` prints any captured trace afterwards.

Prints a timeline (milliseconds since start) and a summary; exits 0 only if every check
passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import importlib.util
import json
import os
import re
import secrets
import signal
import sqlite3
import sys
import time
import urllib.parse
from collections.abc import Callable, Collection
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from example_project.cluster import REPO_DIR, Cluster, ClusterError, FakeSlackAPI, JsonDict, form_csrf_token
from example_project.fake_slack import Sent, SlackSender
from example_project.install_browser import InstallBrowser, InstallFlowError, query_param
from example_project.issues.buttons import ACKNOWLEDGE_ACTION, ESCALATE_ACTION
from example_project.seed import ORGANIZATIONS
from example_project.sentry_setup import CAPTURE_DIR_ENV
from silo_router.tracing import capture, waterfall

#: Slack's answer window and a trigger_id's lifetime.
SLACK_WINDOW_MS = 3000.0
#: How long to wait for asynchronous effects (the hop plus the upstream call take ~3 s).
ASYNC_WAIT_S = 10.0
#: Options are re-read from the database at most once a second in every process.
OPTION_PROPAGATION_S = 1.2
OPTION_KEY = "slack.control_responses.enabled"
OPTION_ADMIN = "/admin/silo_router_control/option/"
US_TEAM, EU_TEAM = "T0US00001", "T0EU00001"
US_ORG, EU_ORG = "101", "201"
#: A channel of workspace T0EU00001 (the fake Slack refuses other workspaces' tokens in it).
EU_CHANNEL = "C0EU00001"
#: Step f: how long control may take to act on ``app_uninstalled``.
UNINSTALL_WAIT_S = 10.0
#: Step e: events sent to each workspace while region eu is down.
OUTAGE_EU_EVENTS, OUTAGE_US_EVENTS = 20, 3
#: Step e: how long eu may take to drain once it is back (bounded, not a sleep).
DRAIN_WAIT_S = 20.0
#: Step e: a pending payload not due for this long waits for neither a retry (2 s, then
#: 4 s, +-25 %) nor the circuit (at most 2 s here), but for a probe's lease (11 s here).
PROBE_HELD_AFTER_S = 6.0
#: Step e's timings, quicker than the defaults so that the outage drains within seconds:
#: circuits open for 1 s, at most 2 s (default 15 s doubling up to 600 s); a lease is
#: DELIVERY_TIMEOUT + 1 s (default + 30 s), which is also how long a payload that reaches
#: the worker while eu's circuit has a probe in flight waits; the sweeper runs every
#: second (default 5 s). Nothing else in the demo depends on them.
DEMO_DELIVERY_ENV = {
    "SILO_ROUTER_CIRCUIT_OPEN_SECONDS": "1",
    "SILO_ROUTER_CIRCUIT_MAX_OPEN_SECONDS": "2",
    "SILO_ROUTER_LEASE_MARGIN": "1",
    "SILO_ROUTER_SWEEP_EVERY": "1",
}


#: Steps a and c: how long a flow's envelopes may take to reach the capture directory once it is done.
CAPTURE_WAIT_S = 10.0
#: The kind of a Resolve click, as the control request span records it.
RESOLVE_KIND = "block_actions:resolve_dialog"
#: The app's span around the naive views.open, and the region's reply span.
OPEN_MODAL_OP = "issues.open_modal"
REPLY_OP = "silo_router.region.reply"
CONTROL_RESPONSE_OP = "silo_router.control.control_response"
#: The waterfall's bar width in the demo's output.
WATERFALL_WIDTH = 40
#: Step g: who is assigned what (issue number, assignee), and which button they click.
ASSIGNMENTS = ((4, "U0USER002", ACKNOWLEDGE_ACTION), (3, "U0USER003", ESCALATE_ACTION))
#: The funnel's stages, in order.
FUNNEL_STAGES = ("triggered", "sent", "acted", "handled", "replied")
#: Step g: how long a notification's funnel may take to reach its last stage.
FUNNEL_WAIT_S = 15.0
FUNNEL_MARKER = "funnel-events: "
NOTIFICATION_ID = re.compile(r"\b([0-9a-f]{32})\b")


def funnel_script(notification_ids: Collection[str]) -> str:
    """Code for a region's ``manage.py shell -c``: each notification's funnel events as JSON, and its table.

    The events come from the funnel API (``silo_router.region.funnel.events_for``), the
    table from the region's ``silo_router_funnel --notification ID`` command.
    """
    return (
        "import io, json\n"
        "from django.core.management import call_command\n"
        "from silo_router.region import funnel\n"
        "def fact(event, name):\n"
        "    value = event.get(name) if isinstance(event, dict) else getattr(event, name, None)\n"
        "    return value if value is None or isinstance(value, bool) else str(value)\n"
        "found = {}\n"
        f"for notification in {list(notification_ids)!r}:\n"
        "    table = io.StringIO()\n"
        "    call_command('silo_router_funnel', '--notification', notification, stdout=table)\n"
        "    events = funnel.events_for(notification)\n"
        "    events = [{name: fact(e, name) for name in ('stage', 'ok', 'error')} for e in events]\n"
        "    found[notification] = {'events': events, 'table': table.getvalue()}\n"
        f"print({FUNNEL_MARKER!r} + json.dumps(found))\n"
    )


def _rows(db: Path, sql: str, params: Collection[str] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on a silo's SQLite database (WAL: readable beside the silo)."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as connection:
        return connection.execute(sql, tuple(params)).fetchall()


def _in(values: Collection[str]) -> str:
    """``?, ?, ?``: the placeholders of an SQL ``IN`` list."""
    return ", ".join("?" for _ in values)


def payload_states(cluster: Cluster, event_ids: Collection[str]) -> dict[str, str]:
    """``{event id: payload state}`` of the events' payloads in control's database."""
    keys = [f"slack:event:{event_id}" for event_id in event_ids]
    rows = _rows(
        cluster.control_db,
        f"SELECT idempotency_key, state FROM silo_router_control_payload WHERE idempotency_key IN ({_in(keys)})",
        keys,
    )
    return {str(key).rsplit(":", 1)[-1]: str(state) for key, state in rows}


def not_due_for(cluster: Cluster, event_ids: Collection[str], seconds: float) -> int:
    """How many of the events' payloads are pending and not due for ``seconds`` or more."""
    keys = [f"slack:event:{event_id}" for event_id in event_ids]
    horizon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=seconds)
    rows = _rows(
        cluster.control_db,
        "SELECT COUNT(*) FROM silo_router_control_payload WHERE state = 'pending' "
        f"AND next_attempt_at > ? AND idempotency_key IN ({_in(keys)})",
        [horizon.strftime("%Y-%m-%d %H:%M:%S.%f"), *keys],
    )
    return int(rows[0][0])


def circuit_state(cluster: Cluster, region: str) -> str:
    """Region ``region``'s circuit in control's database (``closed`` when it never failed)."""
    rows = _rows(cluster.control_db, "SELECT state FROM silo_router_control_regioncircuit WHERE region = ?", [region])
    return str(rows[0][0]) if rows else "closed"


def ledger(cluster: Cluster, region: str, event_ids: Collection[str]) -> dict[str, int]:
    """``{event id: effect rows}`` in region ``region``'s ledger, for the events that have any."""
    rows = _rows(
        cluster.region_db(region),
        f"SELECT key, COUNT(*) FROM issues_effect WHERE key IN ({_in(event_ids)}) GROUP BY key",
        list(event_ids),
    )
    return {str(key): int(count) for key, count in rows}


class StepFailedError(Exception):
    """A check failed in a way that makes the rest of its step meaningless."""


@dataclasses.dataclass(frozen=True)
class Check:
    """One expectation of the scenario and how it went."""

    step: str
    what: str
    ms: float | None
    ok: bool
    detail: str = ""


class Demo:
    """The scenario, run against a started ``Cluster``."""

    def __init__(self, cluster: Cluster, *, started: float, capture_dir: Path) -> None:
        self.cluster = cluster
        self.capture_dir = capture_dir
        self.fake: FakeSlackAPI = cluster.fake
        self.sender: SlackSender = cluster.sender()
        self.started = started
        self.checks: list[Check] = []

    # -- output ------------------------------------------------------------------------------

    def say(self, message: str) -> None:
        """One timeline line: milliseconds since the demo started, then ``message``."""
        print(f"{(time.monotonic() - self.started) * 1000:8.0f} ms  {message}", flush=True)

    def expect(
        self, step: str, what: str, ok: bool, ms: float | None, detail: str = "", *, fatal: bool = False
    ) -> bool:
        """Record a check and print it; with ``fatal``, a failure ends the step."""
        self.checks.append(Check(step=step, what=what, ms=ms, ok=ok, detail=detail))
        timing = f" ({ms:.0f} ms)" if ms is not None else ""
        self.say(f"   {'ok  ' if ok else 'FAIL'} {step} {what}{timing}{': ' + detail if detail else ''}")
        if fatal and not ok:
            raise StepFailedError(f"{step} {what}: {detail}")
        return ok

    # -- the scenario ---------------------------------------------------------------------------

    def run(self) -> bool:
        """Every step in order; a step that fails is recorded and the next one still runs."""
        steps: list[tuple[str, Callable[[], None]]] = [
            ("0", self.step_0_install),
            ("a", self.step_a_flag_off),
            ("b", self.step_b_operator_enables),
            ("c", self.step_c_flag_on),
            ("d", self.step_d_other_kinds),
            ("e", self.step_e_region_outage),
            ("f", self.step_f_uninstall),
            ("g", self.step_g_notifications),
        ]
        for name, step in steps:
            try:
                step()
            except StepFailedError:
                pass
            except (
                TimeoutError,
                requests.RequestException,
                ClusterError,
                InstallFlowError,
                KeyError,
                ValueError,
            ) as exc:
                self.expect(name, "step ended early", False, None, f"{type(exc).__name__}: {exc}")
        return all(check.ok for check in self.checks)

    def click_resolve(self, issue: int, *, team_id: str = US_TEAM, organization: str = "acme") -> tuple[float, Sent]:
        """Click "Resolve" on an organization's issue in workspace ``team_id``; (wall time of the click, Sent)."""
        clicked = time.time()
        sent = self.sender.click_button(
            team_id=team_id,
            action_id="resolve_dialog",
            value=json.dumps({"organization": organization, "issue": issue}),
            channel_id=self.cluster.workspaces[team_id].channels[0],
        )
        return clicked, sent

    def click_and_check_ack(
        self, step: str, issue: int, *, team_id: str = US_TEAM, organization: str = "acme"
    ) -> tuple[float, Sent]:
        """Click "Resolve" on ``issue``; Slack must get its 200 within 3 s (else the step stops)."""
        clicked, sent = self.click_resolve(issue, team_id=team_id, organization=organization)
        self.expect(
            step,
            f"{team_id}: Slack got its 200 within 3 s",
            sent.status == 200 and sent.elapsed_ms < SLACK_WINDOW_MS,
            sent.elapsed_ms,
            f"HTTP {sent.status}",
            fatal=True,
        )
        return clicked, sent

    # -- step 0 ----------------------------------------------------------------------------------

    def step_0_install(self) -> None:
        """Every workspace installed through the OAuth flow, for each of its organizations."""
        self.say("0. installing the app through Slack's OAuth flow (the fake Slack plays the user's consent)")
        installs = [(team_id, slug) for team_id, ws in self.cluster.workspaces.items() for slug in ws.organizations]
        started = time.monotonic()
        links = self.cluster.install_links({slug for _, slug in installs})
        self.say(
            f"   each region made install links for its organizations ({(time.monotonic() - started) * 1000:.0f} ms)"
        )
        for team_id, slug in installs:
            self.install(team_id, slug, links[slug])

    def install(self, team_id: str, slug: str, link: str) -> None:
        """One install, step by step as the browser sees it."""
        _, region = ORGANIZATIONS[slug]
        started = time.monotonic()
        self.say(f"   {slug}'s admin opens {region}'s link {link.split('?', 1)[0]} (grant signed with {region}'s key)")
        with InstallBrowser() as browser:
            authorize = browser.start(link)
            self.say(f"     control -> Slack's consent screen {authorize.split('?', 1)[0]}")
            redirect = browser.consent(authorize, team_id=team_id)
            got_code = query_param(redirect, "code") is not None
            self.say(
                f"     the user picks {team_id} and allows -> {redirect.split('?', 1)[0]} (with a code: {got_code})"
            )
            page = browser.finish(redirect)
        installed = self.cluster.installation(team_id)
        tokens = self.fake_tokens(team_id)
        stored = installed.encrypted_bot_token if installed else ""
        self.expect(
            "0",
            f"workspace {team_id} -> {slug} ({region})",
            page.ok
            and installed is not None
            and installed.active
            and slug in installed.organizations
            and bool(stored)
            and not any(token in stored for token in tokens),
            (time.monotonic() - started) * 1000,
            f"HTTP {page.status}; control stored its bot token encrypted ({len(stored)} characters of ciphertext)"
            + (f"; linked to {', '.join(installed.organizations)}" if installed else ""),
        )

    def fake_tokens(self, team_id: str) -> list[str]:
        """Every token the fake Slack issued to ``team_id``'s installs (to look for them elsewhere)."""
        return self.fake.tokens(team_id)

    # -- steps a-f -------------------------------------------------------------------------------

    def step_a_flag_off(self) -> None:
        """Control responses off: the region's views.open comes too late."""
        self.say('a. control responses OFF: user clicks "Resolve" on issue #1 (workspace T0US00001 -> acme -> us)')
        clicked, sent = self.click_and_check_ack("a1", 1)
        self.say("   waiting for the region's handler (hop + slow upstream call) to try views.open ...")
        failed = self.fake.wait_for_call(
            lambda call: call["params"].get("trigger_id") == sent.trigger_id and call["error"] == "expired_trigger_id",
            method="views.open",
            timeout=ASYNC_WAIT_S,
        )
        opened = [
            c for c in self.fake.calls("views.open") if c["ok"] and c["params"].get("trigger_id") == sent.trigger_id
        ]
        status = self.cluster.issue_status("us", US_ORG, 1)
        self.expect(
            "a2",
            "region's views.open -> expired_trigger_id, no modal shown",
            not opened,
            (failed["wall"] - clicked) * 1000,
            f"issue #1 is '{status}' in us, but the user saw nothing",
        )
        trace = self.resolve_trace(clicked, lambda trace: bool(trace.find(OPEN_MODAL_OP)))
        drawn = self.show_waterfall("a3", trace)
        if drawn is None:
            return
        opens, acks = drawn.spans(OPEN_MODAL_OP), drawn.spans(waterfall.REQUEST_OP)
        line = drawn.deadline_at_ms or 0.0
        self.expect(
            "a3",
            "the waterfall shows the region's views.open past the deadline line",
            bool(opens and acks) and all(row.past_deadline for row in opens) and not acks[0].past_deadline,
            None,
            f"control acked at {acks[0].end_ms:.0f} ms, inside the line at {line:.0f} ms; views.open at "
            f"{opens[0].offset_ms:.0f} ms, {opens[0].offset_ms - line:.0f} ms past it [{opens[0].note}]"
            if opens and acks
            else "no views.open or control request span in the trace",
        )

    def step_b_operator_enables(self) -> None:
        """The operator ticks the option in control's admin."""
        self.say(f"b. operator logs in to control's admin and turns {OPTION_KEY} on")
        started = time.monotonic()
        control = self.cluster.control_url
        with requests.Session() as session:
            self.cluster.admin_login(session)
            changelist = session.get(control + OPTION_ADMIN, timeout=10)
            match = re.search(
                rf'href="({re.escape(OPTION_ADMIN)}\d+/change/)[^"]*">{re.escape(OPTION_KEY)}<', changelist.text
            )
            if match is None:
                self.expect(
                    "b", "the option is listed in the admin", False, None, f"HTTP {changelist.status_code}", fatal=True
                )
                return
            change_url = control + match.group(1)
            form = session.get(change_url, timeout=10)
            answer = session.post(
                change_url,
                data={"csrfmiddlewaretoken": form_csrf_token(form.text), "value": "on", "_save": "Save"},
                headers={"Referer": change_url},
                allow_redirects=False,
                timeout=10,
            )
            location = answer.headers.get("Location", "")
            saved = answer.status_code == 302 and location.rstrip("/").endswith(OPTION_ADMIN.rstrip("/"))
            checked = re.search(
                r'<input type="checkbox" name="value"[^>]*\bchecked\b', session.get(change_url, timeout=10).text
            )
        self.expect(
            "b",
            "admin saved the option (302 to the list) and shows it checked",
            saved and checked is not None,
            (time.monotonic() - started) * 1000,
            f"HTTP {answer.status_code} -> {location or '-'}",
            fatal=True,
        )
        self.say(f"   waiting {OPTION_PROPAGATION_S} s: every process re-reads options each second (no restart)")
        time.sleep(OPTION_PROPAGATION_S)

    def step_c_flag_on(self) -> None:
        """Control responses on: Loading modal at once, replaced by the region's result, in each workspace."""
        self.say('c. control responses ON: the same kind of click, "Resolve" on issue #2, in each workspace')
        self.say("   T0US00001 (-> acme -> us)")
        before = time.time()
        if self.resolve_with_loading_modal("c", 2, team_id=US_TEAM, organization="acme"):
            self.check_loading_modal_waterfall(before)
            us_status, eu_status = (
                self.cluster.issue_status("us", US_ORG, 2),
                self.cluster.issue_status("eu", EU_ORG, 2),
            )
            self.expect(
                "c5",
                "issue #2 resolved in us's database, untouched in eu's",
                us_status == "resolved" and eu_status == "open",
                None,
                f"us: {us_status}, eu #2: {eu_status}",
            )
        self.say("   T0EU00001 (-> globex -> eu)")
        if self.resolve_with_loading_modal("c", 2, team_id=EU_TEAM, organization="globex"):
            self.expect(
                "c5",
                "issue #2 resolved in eu's database too",
                self.cluster.issue_status("eu", EU_ORG, 2) == "resolved",
                None,
                f"eu: {self.cluster.issue_status('eu', EU_ORG, 2)}",
            )

    def resolve_with_loading_modal(self, step: str, issue: int, *, team_id: str, organization: str) -> bool:
        """Click Resolve; control's Loading modal, then the region's views.update, each with ``team_id``'s token."""
        clicked, sent = self.click_and_check_ack(f"{step}1", issue, team_id=team_id, organization=organization)
        opened = self.fake.wait_for_call(
            lambda call: call["ok"] and call["params"].get("trigger_id") == sent.trigger_id,
            method="views.open",
            timeout=1.0,
        )
        open_ms = (opened["wall"] - clicked) * 1000
        loading = FakeSlackAPI.view_of(opened)
        title = loading.get("title", {}).get("text")
        view = self.fake.view_by_external_id(str(loading.get("external_id"))) if loading.get("external_id") else None
        self.expect(
            f"{step}2",
            f"{team_id}: control opened the Loading modal within 3 s",
            open_ms < SLACK_WINDOW_MS and title == "Loading" and view is not None,
            open_ms,
            f"views.open ok, title '{title}', view {view['id'] if view else '?'}",
            fatal=True,
        )
        view_id = str((view or {})["id"])
        self.say("   waiting for the region to replace the Loading modal ...")
        updated = self.fake.wait_for_call(
            lambda call: call["ok"] and call["params"].get("view_id") == view_id,
            method="views.update",
            timeout=ASYNC_WAIT_S,
        )
        new_title = FakeSlackAPI.view_of(updated).get("title", {}).get("text")
        shown = (self.fake.view(view_id) or {}).get("title", {}).get("text")
        self.expect(
            f"{step}3",
            f'{team_id}: views.update replaced it with "Issue #{issue} resolved"',
            new_title == shown == f"Issue #{issue} resolved",
            (updated["wall"] - clicked) * 1000,
            f"the user now sees '{shown}'",
        )
        return self.expect(
            f"{step}4",
            f"{team_id}: both calls used {team_id}'s own token",
            opened.get("team_id") == updated.get("team_id") == team_id,
            None,
            f"views.open by control: {opened.get('team_id')}, views.update through control's proxy: "
            f"{updated.get('team_id')}",
        )

    def check_loading_modal_waterfall(self, since: float) -> None:
        """Step c's waterfall: control's Loading modal inside the deadline line, the region's update after it."""

        def updated(trace: capture.Trace) -> bool:
            return any(span.attribute("method") == "views.update" for span in trace.find(REPLY_OP))

        drawn = self.show_waterfall("c6", self.resolve_trace(since, updated))
        if drawn is None:
            return
        opened = drawn.spans(CONTROL_RESPONSE_OP)
        updates = [row for row in drawn.spans(REPLY_OP) if row.span and row.span.attribute("method") == "views.update"]
        line = drawn.deadline_at_ms or 0.0
        self.expect(
            "c6",
            "the waterfall shows control's Loading modal well inside the deadline line",
            bool(opened and updates) and not any(row.past_deadline for row in opened),
            None,
            f"Loading modal opened by {opened[0].end_ms:.0f} ms, {line - opened[0].end_ms:.0f} ms before the line; "
            f"the region's views.update at {updates[0].offset_ms:.0f} ms replaced it"
            if opened and updates
            else "no control response or views.update span in the trace",
        )
        self.say(
            "   (what ends past the line is the region's work: Slack no longer waits, the user sees the Loading modal)"
        )

    def resolve_trace(self, since: float, done: Callable[[capture.Trace], bool]) -> capture.Trace | None:
        """The captured trace of the first Resolve click after ``since`` (wall time), once ``done`` holds for it."""
        found: capture.Trace | None = None

        def ready() -> bool:
            nonlocal found
            found = next(
                (
                    trace
                    for trace in capture.traces(self.capture_dir).values()
                    if any(
                        span.start >= since and span.attribute("kind") == RESOLVE_KIND
                        for span in trace.find(waterfall.REQUEST_OP)
                    )
                ),
                None,
            )
            return found is not None and done(found)

        self.wait_until(ready, CAPTURE_WAIT_S)
        return found

    def show_waterfall(self, step: str, trace: capture.Trace | None) -> waterfall.Waterfall | None:
        """Print ``trace``'s waterfall; ``None`` (and a failed check) when nothing was captured."""
        if trace is None:
            self.expect(step, "sentry-sdk captured the flow's trace", False, None, f"nothing in {self.capture_dir}")
            return None
        drawn = waterfall.build(trace)
        self.say(f"   the flow as sentry-sdk emitted it, from every process (capture transport, {self.capture_dir}):")
        print("\n".join("      " + line for line in drawn.render(width=WATERFALL_WIDTH).splitlines()), flush=True)
        return drawn

    def step_d_other_kinds(self) -> None:
        """A command and an event from eu's workspace, an options load from us's."""
        self.say("d. /ticket from T0EU00001 (-> globex -> eu), answered via response_url")
        eu_open = len(self.cluster.open_issues("eu", EU_ORG))
        commanded = time.time()
        sent = self.sender.slash_command(team_id=EU_TEAM, command="/ticket")
        self.expect(
            "d1",
            "Slack got its 200 for /ticket",
            sent.status == 200 and sent.elapsed_ms < SLACK_WINDOW_MS,
            sent.elapsed_ms,
            f"HTTP {sent.status}",
            fatal=True,
        )
        reply = self.fake.wait_for_call(
            lambda call: call["ok"] and call["params"].get("response_url") == sent.response_url,
            method="response_url",
            timeout=ASYNC_WAIT_S,
        )
        text = str(reply["params"].get("text"))
        self.expect(
            "d2",
            "eu's count came back through response_url",
            f"has {eu_open} open issues (region eu)" in text,
            (reply["wall"] - commanded) * 1000,
            repr(text),
        )

        self.say("   app_mention event from T0EU00001")
        mentioned = time.time()
        sent = self.sender.event(
            team_id=EU_TEAM,
            event_type="app_mention",
            event={
                "type": "app_mention",
                "user": "U0USER001",
                "channel": EU_CHANNEL,
                "text": "<@U0FAKEBOT1> hello",
                "ts": f"{mentioned:.6f}",
            },
        )
        self.expect(
            "d3",
            "Slack got its 200 for the event",
            sent.status == 200 and sent.elapsed_ms < SLACK_WINDOW_MS,
            sent.elapsed_ms,
            f"HTTP {sent.status}",
            fatal=True,
        )
        posted = self.fake.wait_for_call(
            lambda call: call["ok"] and call["params"].get("channel") == EU_CHANNEL,
            method="chat.postMessage",
            timeout=ASYNC_WAIT_S,
        )
        text = str(posted["params"].get("text"))
        self.expect(
            "d4",
            "chat.postMessage from the region names eu, with T0EU00001's token",
            "region eu" in text and posted.get("team_id") == EU_TEAM,
            (posted["wall"] - mentioned) * 1000,
            f"{text!r} ({posted.get('team_id')})",
        )

        self.say("   options load (block_suggestion pick_issue) from T0US00001, answered in the HTTP body")
        us_open = self.cluster.open_issues("us", US_ORG)
        sent = self.sender.options_load(team_id=US_TEAM, action_id="pick_issue")
        options = sent.json().get("options", []) if sent.status == 200 and sent.body else []
        numbers = [json.loads(option["value"])["issue"] for option in options]
        titles = [option["text"]["text"] for option in options]
        expected = [number for number, _ in us_open]
        self.expect(
            "d5",
            "us's open issues, synchronously within 3 s",
            sent.status == 200 and sent.elapsed_ms < SLACK_WINDOW_MS and numbers == expected and bool(expected),
            sent.elapsed_ms,
            ", ".join(titles) or f"HTTP {sent.status}, no options",
        )

    def send_effects(self, team_id: str, event_ids: list[str]) -> list[Sent]:
        """One ``message`` event saying ``effect`` per event id (the region's ledger handler counts them)."""
        sent = []
        for event_id in event_ids:
            event = {"type": "message", "user": "U0USER001", "channel": "C0OUTAGE1", "text": "effect"}
            event["ts"] = f"{time.time():.6f}"
            sent.append(self.sender.event(team_id=team_id, event_type="message", event=event, event_id=event_id))
        return sent

    @staticmethod
    def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
        """Poll ``predicate`` until it holds (``True``) or ``timeout`` seconds pass (``False``)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
        return True

    def step_e_region_outage(self) -> None:
        """eu down: every event acknowledged, us unaffected, eu's kept; eu back: drained, each handled once."""
        self.say("e. region outage: eu goes down while events arrive for T0EU00001 (-> eu) and T0US00001 (-> us)")
        self.say("   (demo timings: circuits open 1-2 s, leases 11 s, a sweep every second; see DEMO_DELIVERY_ENV)")
        tag = secrets.token_hex(3).upper()
        eu_events = [f"EvOUTEU{tag}{i:02d}" for i in range(OUTAGE_EU_EVENTS)]
        us_events = [f"EvOUTUS{tag}{i:02d}" for i in range(OUTAGE_US_EVENTS)]
        stopping = time.monotonic()
        self.cluster.stop_service("eu")
        try:
            down = time.monotonic()
            self.say(f"   region eu stopped ({(down - stopping) * 1000:.0f} ms)")
            sent = self.send_effects(EU_TEAM, eu_events) + self.send_effects(US_TEAM, us_events)
            slowest = max(answer.elapsed_ms for answer in sent)
            statuses = sorted({answer.status for answer in sent})
            self.expect(
                "e1",
                f"Slack got its 200 within 3 s for all {len(sent)} events",
                statuses == [200] and slowest < SLACK_WINDOW_MS,
                slowest,
                f"{OUTAGE_EU_EVENTS} for T0EU00001, {OUTAGE_US_EVENTS} for T0US00001, HTTP {statuses}; slowest shown",
                fatal=True,
            )

            def us_done() -> bool:
                return ledger(self.cluster, "us", us_events) == {event_id: 1 for event_id in us_events}

            handled = self.wait_until(us_done, ASYNC_WAIT_S)
            self.expect(
                "e2",
                "us handled its events while eu is down",
                handled and not self.cluster.services["eu"].running,
                (time.monotonic() - down) * 1000,
                f"us ledger: {len(ledger(self.cluster, 'us', us_events))} of {len(us_events)} events, once each",
            )
            states = payload_states(self.cluster, eu_events)
            held = sum(state in ("pending", "in_flight") for state in states.values())
            self.expect(
                "e3",
                "control keeps eu's payloads pending (its database)",
                len(states) == len(eu_events) and held == len(eu_events) and not ledger(self.cluster, "eu", eu_events),
                None,
                f"{held} of {len(eu_events)} pending, eu's circuit {circuit_state(self.cluster, 'eu')}",
            )
        finally:
            starting = time.monotonic()
            self.cluster.start_service("eu")
        back = time.monotonic()
        self.say(f"   region eu started again ({(back - starting) * 1000:.0f} ms); waiting for its backlog to drain")

        held_for_probe = 0

        def drained() -> bool:
            nonlocal held_for_probe
            held_for_probe = max(held_for_probe, not_due_for(self.cluster, eu_events, PROBE_HELD_AFTER_S))
            states = payload_states(self.cluster, eu_events)
            return len(states) == len(eu_events) and set(states.values()) == {"delivered"}

        done = self.wait_until(drained, DRAIN_WAIT_S)
        drain_ms = (time.monotonic() - back) * 1000
        counts = ledger(self.cluster, "eu", eu_events)
        once = sum(count == 1 for count in counts.values())
        self.expect(
            "e4",
            "eu drained: every payload delivered, each event in eu's ledger once",
            done
            and counts == {event_id: 1 for event_id in eu_events}
            and ledger(self.cluster, "us", us_events) == {event_id: 1 for event_id in us_events},
            drain_ms,
            f"{once} of {len(eu_events)} events once, {sum(counts.values())} rows; "
            f"drained {drain_ms / 1000:.1f} s after eu came back"
            + (f" ({held_for_probe} had waited for a probe's lease)" if held_for_probe else ""),
        )

    def step_f_uninstall(self) -> None:
        """T0EU00001 uninstalls: deactivated at control, its clicks kept unroutable; T0US00001 unaffected."""
        self.say("f. T0EU00001 uninstalls the app: Slack revokes its tokens and sends app_uninstalled")
        started = time.monotonic()
        sent = self.cluster.uninstall(EU_TEAM)
        self.expect(
            "f1", "Slack got its 200 for app_uninstalled", sent.status == 200, sent.elapsed_ms, f"HTTP {sent.status}"
        )

        def deactivated() -> bool:
            installed = self.cluster.installation(EU_TEAM)
            return installed is not None and not installed.active

        gone = self.wait_until(deactivated, UNINSTALL_WAIT_S)
        installed = self.cluster.installation(EU_TEAM)
        self.expect(
            "f2",
            "control deactivated T0EU00001's installation and wiped its tokens",
            gone
            and installed is not None
            and installed.deactivation_reason == "app_uninstalled"
            and not installed.encrypted_bot_token,
            (time.monotonic() - started) * 1000,
            f"reason '{installed.deactivation_reason if installed else '?'}'",
        )
        before = self.payload_ids()
        _, sent = self.click_and_check_ack("f3", 3, team_id=EU_TEAM, organization="globex")
        stored = self.payload_rows(self.payload_ids() - before)
        time.sleep(0.5)  # a Loading modal, if control wrongly opened one, would be recorded by now
        opened = [c for c in self.fake.calls("views.open") if c["params"].get("trigger_id") == sent.trigger_id]
        self.expect(
            "f4",
            "the next click from T0EU00001 is kept unroutable (app_uninstalled), no modal",
            [(row["state"], "app_uninstalled" in row["last_error"]) for row in stored] == [("unroutable", True)]
            and not opened
            and self.cluster.issue_status("eu", EU_ORG, 3) == "open",
            None,
            ", ".join(f"{row['state']}: {row['last_error']}" for row in stored) or "nothing stored",
        )
        self.say("   T0US00001 still works")
        self.resolve_with_loading_modal("f5.", 3, team_id=US_TEAM, organization="acme")

    def step_g_notifications(self) -> None:
        """Two assignment notifications: one acknowledged (five stages), one escalated (its handler fails)."""
        self.say("g. notifications: /ticket assign in T0US00001 (-> acme -> us) notifies the assignee with buttons")
        if importlib.util.find_spec("silo_router.region.notifications") is None:
            self.say("   skipped: this build of the library has no notification API (silo_router.region.notifications)")
            return
        channel = self.cluster.workspaces[US_TEAM].channels[0]
        notified: list[tuple[str, str]] = []
        for number, assignee, action in ASSIGNMENTS:
            notification_id = self.assign(number, assignee, channel)
            if notification_id is None:
                continue
            self.click_notification(notification_id, assignee, action, channel, number)
            notified.append((notification_id, action))
        if notified:
            self.check_funnels(notified)
            trace = capture.traces(self.capture_dir).get(notified[0][0])
            if trace is not None:
                self.say("   the first notification's own trace (trace id = notification id), linked to its cause:")
                text = waterfall.build(trace).render(width=WATERFALL_WIDTH)
                print("\n".join("      " + line for line in text.splitlines()), flush=True)

    def assign(self, number: int, assignee: str, channel: str) -> str | None:
        """``/ticket assign <number> <@assignee>``; the notification's id once it was posted with its buttons."""
        self.say(f"   /ticket assign {number} <@{assignee}>")
        commanded = time.time()
        sent = self.sender.slash_command(
            team_id=US_TEAM, command="/ticket", text=f"assign {number} <@{assignee}>", channel_id=channel
        )
        self.expect(
            "g1",
            "Slack got its 200 for /ticket assign",
            sent.status == 200 and sent.elapsed_ms < SLACK_WINDOW_MS,
            sent.elapsed_ms,
            f"HTTP {sent.status}",
            fatal=True,
        )
        reply = self.fake.wait_for_call(
            lambda call: call["params"].get("response_url") == sent.response_url,
            method="response_url",
            timeout=ASYNC_WAIT_S,
        )
        text = str(reply["params"].get("text"))
        match = NOTIFICATION_ID.search(text)
        posted = self.notification_message(channel, number)
        self.expect(
            "g2",
            f"#{number}: the assignee's notification has Acknowledge and Escalate buttons; the assigner is told",
            match is not None and posted is not None,
            (reply["wall"] - commanded) * 1000,
            repr(text),
        )
        return match.group(1) if match else None

    def notification_message(self, channel: str, number: int) -> JsonDict | None:
        """The latest message in ``channel`` with buttons for issue ``number`` (as the fake Slack stored it)."""
        for message in reversed(self.fake.messages()):
            if message.get("channel") == channel and self.button(message, ACKNOWLEDGE_ACTION, number) is not None:
                return message
        return None

    @staticmethod
    def button(message: JsonDict, action_id: str, number: int | None = None) -> JsonDict | None:
        """The button ``action_id`` of a message (for issue ``number``, when given), or ``None``."""
        for block in message.get("blocks") or ():
            for element in block.get("elements") or ():
                if element.get("action_id") != action_id:
                    continue
                if number is None or f'"issue": {number}' in str(element.get("value")):
                    return dict(element)
        return None

    def click_notification(self, notification_id: str, assignee: str, action: str, channel: str, number: int) -> None:
        """The assignee clicks ``action`` on the notification's message, as Slack sends it."""
        label = "Acknowledge" if action == ACKNOWLEDGE_ACTION else "Escalate"
        message = self.notification_message(channel, number)
        if message is None:
            self.expect("g3", f"{assignee} clicks {label}", False, None, "the notification's message is not in Slack")
            return
        sent, response_url = self.click_message(message, action, user_id=assignee)
        self.expect(
            "g3",
            f"{assignee} clicks {label}: Slack got its 200 within 3 s",
            sent.status == 200 and sent.elapsed_ms < SLACK_WINDOW_MS,
            sent.elapsed_ms,
            f"notification {notification_id}, HTTP {sent.status}",
        )
        if action == ACKNOWLEDGE_ACTION:  # its reply closes the funnel: wait for it to reach Slack
            with contextlib.suppress(TimeoutError):
                self.fake.wait_for_call(
                    lambda call: call["params"].get("response_url") == response_url,
                    method="response_url",
                    timeout=ASYNC_WAIT_S,
                )

    def click_message(self, message: JsonDict, action_id: str, *, user_id: str) -> tuple[Sent, str]:
        """Click the element ``action_id`` of a message Slack holds, as Slack sends it; (Sent, its response_url).

        The payload carries the element's ``block_id`` and the message as posted (its
        blocks and ``metadata``), where a notification's id travels, with a fresh
        trigger_id and response_url from the fake Slack.
        """
        block, element = next(
            (
                (block, element)
                for block in message.get("blocks") or ()
                for element in block.get("elements") or ()
                if element.get("action_id") == action_id
            ),
            ({}, {}),
        )
        channel, team_id = str(message.get("channel")), str(message.get("team_id") or US_TEAM)
        issued = requests.post(
            f"{self.cluster.slack_url}/_fake/response_url",
            json={"team_id": team_id, "channel_id": channel, "user_id": user_id},
            timeout=10,
        )
        issued.raise_for_status()
        response_url = str(issued.json()["response_url"])
        action: JsonDict = {"type": element.get("type", "button"), "action_id": action_id}
        action.update({key: element[key] for key in ("text", "value") if key in element})
        action.update({"block_id": block.get("block_id", ""), "action_ts": f"{time.time():.6f}"})
        payload: JsonDict = {
            "type": "block_actions",
            "user": {"id": user_id, "username": "fake.user", "name": "fake.user", "team_id": team_id},
            "api_app_id": self.sender.app_id,
            "team": {"id": team_id, "domain": "fake-team"},
            "enterprise": None,
            "is_enterprise_install": False,
            "trigger_id": self.fake.issue_trigger(team_id=team_id, user_id=user_id),
            "container": {"type": "message", "message_ts": message.get("ts"), "channel_id": channel},
            "channel": {"id": channel, "name": "fake-channel"},
            "message": {key: value for key, value in message.items() if key not in ("kind", "channel", "team_id")},
            "state": {"values": {}},
            "response_url": response_url,
            "actions": [action],
        }
        body = urllib.parse.urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
        return self.sender.send_raw(body, content_type="application/x-www-form-urlencoded"), response_url

    def check_funnels(self, notified: list[tuple[str, str]]) -> None:
        """Each notification's funnel from the region (its API and its ``silo_router_funnel`` command)."""
        wanted = {ACKNOWLEDGE_ACTION: set(FUNNEL_STAGES), ESCALATE_ACTION: set(FUNNEL_STAGES[:4])}
        found: dict[str, Any] = {}

        def complete() -> bool:
            nonlocal found
            found = self.funnels([notification_id for notification_id, _ in notified])
            return all(
                {event["stage"] for event in found.get(notification_id, {}).get("events", ())} >= wanted[action]
                for notification_id, action in notified
            )

        started = time.monotonic()
        self.wait_until(complete, FUNNEL_WAIT_S)
        for notification_id, action in notified:
            events = found.get(notification_id, {}).get("events", [])
            self.say(f"   silo_router_funnel --notification {notification_id} (region us):")
            table = str(found.get(notification_id, {}).get("table") or "(no output)")
            print("\n".join("      " + line for line in table.rstrip().splitlines()), flush=True)
            stages = [str(event["stage"]) for event in events]
            failed = [event for event in events if event.get("ok") is False]
            if action == ACKNOWLEDGE_ACTION:
                self.expect(
                    "g4",
                    "the acknowledged notification's funnel lists every stage",
                    set(stages) == set(FUNNEL_STAGES) and not failed,
                    (time.monotonic() - started) * 1000,
                    " -> ".join(stages) or "no events",
                )
            else:
                handled = [event for event in events if event["stage"] == "handled"]
                self.expect(
                    "g5",
                    "the escalated notification's funnel stops at handled: its handler failed",
                    bool(handled) and all(e.get("ok") is False for e in handled) and "replied" not in stages,
                    (time.monotonic() - started) * 1000,
                    " -> ".join(stages) + "".join(f"; {e['stage']} failed: {e.get('error')}" for e in failed),
                )

    def funnels(self, notification_ids: list[str]) -> dict[str, Any]:
        """``{notification id: {"events": [...], "table": text}}`` from region us; ``{}`` if the shell failed."""
        done = self.cluster.manage("us", "shell", "-c", funnel_script(notification_ids))
        line = next((line for line in done.stdout.splitlines() if line.startswith(FUNNEL_MARKER)), None)
        if done.returncode != 0 or line is None:
            self.say(f"   the region's funnel could not be read ({done.returncode}): {done.stderr.strip()[-300:]}")
            return {}
        found: dict[str, Any] = json.loads(line.removeprefix(FUNNEL_MARKER))
        return found

    def payload_ids(self) -> set[str]:
        """Ids of every payload control has stored."""
        return {str(row[0]) for row in _rows(self.cluster.control_db, "SELECT id FROM silo_router_control_payload")}

    def payload_rows(self, ids: Collection[str]) -> list[JsonDict]:
        """``state`` and ``last_error`` of the payloads ``ids``."""
        if not ids:
            return []
        rows = _rows(
            self.cluster.control_db,
            f"SELECT id, state, last_error FROM silo_router_control_payload WHERE id IN ({_in(ids)})",
            list(ids),
        )
        return [{"id": str(i), "state": str(state), "last_error": str(error)} for i, state, error in rows]

    # -- summary ---------------------------------------------------------------------------------

    def summary(self) -> str:
        """The table of checks: step, ms, ok."""
        width = max(len(check.what) for check in self.checks) if self.checks else 10
        lines = [f"{'step':<5} {'check':<{width}} {'ms':>7}  ok", f"{'-' * 5} {'-' * width} {'-' * 7}  ----"]
        for check in self.checks:
            ms = f"{check.ms:7.0f}" if check.ms is not None else f"{'-':>7}"
            lines.append(f"{check.step:<5} {check.what:<{width}} {ms}  {'ok' if check.ok else 'FAIL'}")
        return "\n".join(lines)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM behaves like Ctrl-C, so the cluster is stopped either way."""
    raise KeyboardInterrupt


def main() -> int:
    """Start the cluster, run the scenario, stop the cluster; 0 only if every check passed."""
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.monotonic()
    var_dir = Path(os.environ.get("SILO_DEMO_VAR") or REPO_DIR / "var" / "demo").resolve()
    capture_dir = Path(os.environ.get(CAPTURE_DIR_ENV) or var_dir / "sentry").resolve()
    cluster = Cluster(
        var_dir, extra_env={**DEMO_DELIVERY_ENV, CAPTURE_DIR_ENV: str(capture_dir)}, install_workspaces=False
    )
    demo: Demo | None = None
    try:
        print(
            f"{0:8.0f} ms  starting fake Slack, control, regions us and eu, and a Celery worker in {cluster.var_dir}",
            flush=True,
        )
        cluster.start()
        demo = Demo(cluster, started=started, capture_dir=capture_dir)
        ports = ", ".join(f"{name} :{port}" for name, port in cluster.ports.items())
        broker = cluster.broker_url.split("://", 1)[0]
        demo.say(f"cluster up ({ports}; Celery worker on the {broker} broker); logs in {cluster.var_dir}")
        passed = demo.run()
    except KeyboardInterrupt:
        print("\ninterrupted; stopping every process", flush=True)
        return 130
    except ClusterError as exc:
        print(f"\nthe cluster did not start: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        cluster.stop()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    total = (time.monotonic() - started) * 1000
    assert demo is not None
    print(f"\n{demo.summary()}\n", flush=True)
    if passed:
        print(f"demo passed in {total / 1000:.1f} s: every check ok.", flush=True)
        return 0
    print(f"demo FAILED in {total / 1000:.1f} s:", flush=True)
    for check in demo.checks:
        if not check.ok:
            print(f"  {check.step} {check.what}: {check.detail}", flush=True)
    print(f"service logs are in {cluster.var_dir}", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
