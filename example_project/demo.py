"""The demo: ``python -m example_project.demo`` (``make demo``).

Starts the whole example on loopback (fake Slack, control silo, us and eu region silos,
a Celery worker; see ``cluster.py``) and plays the story of the control response:

a. Control responses off: a user clicks "Resolve". Slack gets its 200 at once, but the
   region's handler opens its modal only after the hop and a slow upstream call; the
   trigger_id has expired by then (``expired_trigger_id``) and the user sees nothing.
b. An operator turns ``slack.control_responses.enabled`` on in control's Django admin
   (no restart).
c. The same click: control opens a Loading modal within Slack's window, the region does
   the work and replaces the modal with the result; the issue changed in us only.
d. Other kinds still route by workspace: a slash command and an app_mention go to eu,
   an options load is answered synchronously by us.
e. A region outage is absorbed and drained: region eu is stopped while events arrive
   for both workspaces. Slack gets every 200 in time, us handles its events at once,
   control keeps eu's payloads pending behind eu's circuit breaker; eu is started again,
   the backlog drains, and eu's effect ledger has each event exactly once.

Prints a timeline (milliseconds since start) and a summary; exits 0 only if every check
passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import re
import secrets
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Collection
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from example_project.cluster import Cluster, ClusterError, FakeSlackAPI, form_csrf_token
from example_project.fake_slack import Sent, SlackSender

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
EU_CHANNEL = "C0EUCHAN1"
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

    def __init__(self, cluster: Cluster, *, started: float) -> None:
        self.cluster = cluster
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
            ("a", self.step_a_flag_off),
            ("b", self.step_b_operator_enables),
            ("c", self.step_c_flag_on),
            ("d", self.step_d_other_kinds),
            ("e", self.step_e_region_outage),
        ]
        for name, step in steps:
            try:
                step()
            except StepFailedError:
                pass
            except (TimeoutError, requests.RequestException, ClusterError, KeyError, ValueError) as exc:
                self.expect(name, "step ended early", False, None, f"{type(exc).__name__}: {exc}")
        return all(check.ok for check in self.checks)

    def click_resolve(self, issue: int) -> tuple[float, Sent]:
        """Click "Resolve" on acme's issue ``issue`` in workspace T0US00001; returns (wall time of the click, Sent)."""
        clicked = time.time()
        sent = self.sender.click_button(
            team_id=US_TEAM, action_id="resolve_dialog", value=json.dumps({"organization": "acme", "issue": issue})
        )
        return clicked, sent

    def click_and_check_ack(self, step: str, issue: int) -> tuple[float, Sent]:
        """Click "Resolve" on ``issue``; Slack must get its 200 within 3 s (else the demo stops)."""
        clicked, sent = self.click_resolve(issue)
        self.expect(
            step,
            "Slack got its 200 within 3 s",
            sent.status == 200 and sent.elapsed_ms < SLACK_WINDOW_MS,
            sent.elapsed_ms,
            f"HTTP {sent.status}",
            fatal=True,
        )
        return clicked, sent

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
        """Control responses on: Loading modal at once, replaced by the region's result."""
        self.say('c. control responses ON: the same kind of click, "Resolve" on issue #2')
        clicked, sent = self.click_and_check_ack("c1", 2)
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
            "c2",
            "control opened the Loading modal within 3 s",
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
            "c3",
            'views.update replaced it with "Issue #2 resolved"',
            new_title == shown == "Issue #2 resolved",
            (updated["wall"] - clicked) * 1000,
            f"the user now sees '{shown}'",
        )
        us_status = self.cluster.issue_status("us", US_ORG, 2)
        eu_status = self.cluster.issue_status("eu", EU_ORG, 2)
        self.expect(
            "c4",
            "issue #2 resolved in us's database, untouched in eu's",
            us_status == "resolved" and eu_status != "resolved",
            None,
            f"us: {us_status}, eu #2: {eu_status}",
        )

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
            "chat.postMessage from the region names eu",
            "region eu" in text,
            (posted["wall"] - mentioned) * 1000,
            repr(text),
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
    cluster = Cluster(extra_env=DEMO_DELIVERY_ENV)
    demo: Demo | None = None
    try:
        print(
            f"{0:8.0f} ms  starting fake Slack, control, regions us and eu, and a Celery worker in {cluster.var_dir}",
            flush=True,
        )
        cluster.start()
        demo = Demo(cluster, started=started)
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
