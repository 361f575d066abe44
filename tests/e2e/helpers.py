"""What the end-to-end tests share: bounded waits, reads of the silos' SQLite databases, admin steps,
and what sentry-sdk sent from each process (``SILO_DEMO_SENTRY_CAPTURE_DIR``).

The databases are read with ``sqlite3`` straight from the files the silos write (WAL
mode lets a reader run beside them); nothing here imports the example project's Django
settings, so the test process stays on ``tests.settings``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests
from sentry_sdk.envelope import Envelope

from example_project.cluster import Cluster, form_csrf_token
from example_project.fake_slack import Sent, SlackSender

T = TypeVar("T")

#: Slack's answer window (and a trigger_id's lifetime), in milliseconds.
SLACK_WINDOW_MS = 3000.0
#: Bound for asynchronous effects while every silo is up (the hop takes ~0.1 s idle).
ASYNC_TIMEOUT = 20.0
US_TEAM, EU_TEAM, BOTH_TEAM = "T0US00001", "T0EU00001", "T0BOTH001"
US_ORG, EU_ORG = "101", "201"
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
OPTION_ADMIN = "/admin/silo_router_control/option/"
CONTROL_RESPONSES_ENABLED = "slack.control_responses.enabled"
#: An issue number no organization has: clicks on it change nothing in any region.
NO_SUCH_ISSUE = 9999


def wait_until(predicate: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s (last value {value!r})")
        time.sleep(interval)


def query(db: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` on the SQLite database ``db`` (a fresh connection each time: always the latest commit)."""
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as connection:
        return connection.execute(sql, params).fetchall()


def placeholders(values: Collection[Any]) -> str:
    """``?, ?, ?`` for an SQL ``IN`` list of ``values``."""
    return ", ".join("?" for _ in values)


# -- control's Payload rows ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PayloadRow:
    """One row of control's ``silo_router_control_payload`` table."""

    id: str
    kind: str
    region: str
    state: str
    attempts: int
    last_error: str


def payload_ids(cluster: Cluster) -> set[str]:
    """Ids of every payload control has stored."""
    return {str(row[0]) for row in query(cluster.control_db, "SELECT id FROM silo_router_control_payload")}


def payloads(cluster: Cluster, ids: Collection[str]) -> list[PayloadRow]:
    """The payloads ``ids``, ordered by region and kind."""
    if not ids:
        return []
    rows = query(
        cluster.control_db,
        "SELECT id, kind, region, state, attempts, last_error FROM silo_router_control_payload "
        f"WHERE id IN ({placeholders(ids)}) ORDER BY region, kind",
        tuple(ids),
    )
    return [PayloadRow(str(i), str(k), str(r), str(s), int(a), str(e)) for i, k, r, s, a, e in rows]


def new_payloads(cluster: Cluster, before: set[str]) -> list[PayloadRow]:
    """Payloads stored since ``before`` (a ``payload_ids`` snapshot)."""
    return payloads(cluster, payload_ids(cluster) - before)


def wait_delivered(cluster: Cluster, ids: Collection[str], *, timeout: float = ASYNC_TIMEOUT) -> list[PayloadRow]:
    """Wait until every payload of ``ids`` is ``delivered``; return the rows."""
    assert ids, "no payloads to wait for"

    def delivered() -> list[PayloadRow] | None:
        rows = payloads(cluster, ids)
        return rows if len(rows) == len(ids) and all(row.state == "delivered" for row in rows) else None

    try:
        return wait_until(delivered, timeout=timeout, what="every payload delivered")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; rows now: {payloads(cluster, ids)}") from None


# -- a region's database ----------------------------------------------------------------------


def processed(cluster: Cluster, region: str, ids: Collection[str] | None = None) -> dict[str, str]:
    """``{envelope id: outcome}`` of region ``region``'s idempotency records (only ``ids`` if given)."""
    sql = "SELECT id, outcome FROM silo_router_region_processedenvelope"
    params: tuple[Any, ...] = ()
    if ids is not None:
        if not ids:
            return {}
        sql += f" WHERE id IN ({placeholders(ids)})"
        params = tuple(ids)
    return {str(envelope_id): str(outcome) for envelope_id, outcome in query(cluster.region_db(region), sql, params)}


def processed_for_event(cluster: Cluster, region: str, event_id: str) -> list[tuple[str, str]]:
    """``(envelope id, outcome)`` of region ``region``'s idempotency records for Slack event ``event_id``."""
    rows = query(
        cluster.region_db(region),
        "SELECT id, outcome FROM silo_router_region_processedenvelope WHERE idempotency_key LIKE ?",
        (f"%{event_id}",),
    )
    return [(str(envelope_id), str(outcome)) for envelope_id, outcome in rows]


def issues(cluster: Cluster, region: str) -> list[tuple[str, int, str]]:
    """``(organization, number, status)`` of every issue in region ``region``'s database."""
    rows = query(cluster.region_db(region), "SELECT organization_id, number, status FROM issues_issue ORDER BY 1, 2")
    return [(str(org), int(number), str(status)) for org, number, status in rows]


# -- what Slack received --------------------------------------------------------------------------


def posts_in(cluster: Cluster, channel: str) -> list[dict[str, Any]]:
    """Every chat.postMessage call into ``channel``, oldest first."""
    return [call for call in cluster.fake.calls("chat.postMessage") if call["params"].get("channel") == channel]


def replies_to(cluster: Cluster, response_url: str | None) -> list[dict[str, Any]]:
    """Every post to ``response_url``, oldest first."""
    assert response_url, "the request had no response_url"
    return [call for call in cluster.fake.calls("response_url") if call["params"].get("response_url") == response_url]


def views_opened_with(cluster: Cluster, trigger_id: str | None) -> list[dict[str, Any]]:
    """Every views.open call (ok or not) that used ``trigger_id``."""
    assert trigger_id, "the request had no trigger_id"
    return [call for call in cluster.fake.calls("views.open") if call["params"].get("trigger_id") == trigger_id]


# -- building requests -------------------------------------------------------------------------


def issue_button(organization: str, number: int) -> str:
    """The ``value`` of the demo's Resolve/Archive buttons."""
    return json.dumps({"organization": organization, "issue": number})


def mention(sender: SlackSender, *, team_id: str, channel: str, **kwargs: Any) -> Sent:
    """An ``app_mention`` event in ``channel`` (``kwargs``: event_id, retry_num, retry_reason ...)."""
    event = {"type": "app_mention", "user": "U0USER001", "channel": channel, "text": "<@U0FAKEBOT1> hi"}
    return sender.event(
        team_id=team_id, event_type="app_mention", event={**event, "ts": f"{time.time():.6f}"}, **kwargs
    )


def view_closed_body(*, team_id: str, callback_id: str) -> bytes:
    """A form body with a ``view_closed`` payload (a modal with notify_on_close was dismissed)."""
    view_id = "V" + secrets.token_hex(5).upper()
    payload = {
        "type": "view_closed",
        "team": {"id": team_id, "domain": "fake-team"},
        "user": {"id": "U0USER001", "username": "fake.user", "name": "fake.user", "team_id": team_id},
        "api_app_id": "A0APP0001",
        "view": {
            "id": view_id,
            "team_id": team_id,
            "type": "modal",
            "callback_id": callback_id,
            "private_metadata": "",
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{secrets.token_hex(4)}",
            "notify_on_close": True,
            "root_view_id": view_id,
            "app_id": "A0APP0001",
            "app_installed_team_id": team_id,
        },
        "is_cleared": False,
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()


# -- control's admin ------------------------------------------------------------------------------


def set_option_in_admin(cluster: Cluster, key: str, enabled: bool) -> requests.Response:
    """Log in to control's admin as the operator and save boolean option ``key`` like a browser would.

    Returns the answer to the form's POST (a 302 to the option list when saved); asserts
    that the change page then shows the new value.
    """
    control = cluster.control_url
    with requests.Session() as session:
        cluster.admin_login(session)
        changelist = session.get(control + OPTION_ADMIN, timeout=10)
        assert changelist.status_code == 200, changelist.status_code
        match = re.search(rf'href="({re.escape(OPTION_ADMIN)}\d+/change/)[^"]*">{re.escape(key)}<', changelist.text)
        assert match is not None, f"{key} is not listed in the admin"
        change_url = control + match.group(1)
        form = session.get(change_url, timeout=10)
        data = {"csrfmiddlewaretoken": form_csrf_token(form.text), "_save": "Save"}
        if enabled:
            data["value"] = "on"  # an unticked checkbox is simply not sent
        saved = session.post(change_url, data=data, headers={"Referer": change_url}, allow_redirects=False, timeout=10)
        shown = session.get(change_url, timeout=10).text
    checked = re.search(r'<input type="checkbox" name="value"[^>]*\bchecked\b', shown) is not None
    assert checked is enabled, f"the admin shows {key} as {'on' if checked else 'off'} after saving"
    return saved


def option_changes(cluster: Cluster, key: str) -> list[tuple[str, str, str]]:
    """``(old value, new value, changed by)`` of ``key``'s audit records, oldest first."""
    rows = query(
        cluster.control_db,
        "SELECT old_value, new_value, changed_by_repr FROM silo_router_control_optionchange WHERE key = ? ORDER BY id",
        (key,),
    )
    return [(str(old), str(new), str(by)) for old, new, by in rows]


def wait_for_control_responses(cluster: Cluster, *, enabled: bool, timeout: float = 5.0) -> None:
    """Wait until control does (or does not) answer clicks with a Loading modal.

    Each probe clicks Archive on an issue that does not exist (no region changes
    anything). Control opens its Loading modal before it answers the click, so whether
    a views.open with the probe's trigger_id is recorded when the 200 arrives tells, at
    once, which way control decided. Options are re-read by every process within about
    a second (``OPTIONS_REFRESH_INTERVAL``), without a restart.
    """
    sender = cluster.sender()

    def probe() -> bool:
        before = payload_ids(cluster)
        sent = sender.click_button(
            team_id=US_TEAM, action_id="archive_dialog", value=issue_button("acme", NO_SUCH_ISSUE)
        )
        assert sent.status == 200, sent.status
        decided = bool(views_opened_with(cluster, sent.trigger_id)) is enabled
        wait_delivered(cluster, payload_ids(cluster) - before)  # leave no delivery running behind the caller
        return decided

    wait_until(probe, timeout=timeout, what=f"control responses {'on' if enabled else 'off'}", interval=0.2)


# -- what sentry-sdk sent (one file per envelope, ``<pid>-<n>.envelope``) ---------------------


@dataclasses.dataclass(frozen=True)
class CapturedSpan:
    """One span of a transaction a silo's sentry-sdk sent: its root span or one of its child spans."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    op: str
    description: str
    data: Mapping[str, Any]
    #: The ``event_id`` of the transaction that holds it, and whether it is that transaction's root.
    transaction_id: str
    root: bool
    #: The process that sent it (from the file name).
    pid: int


def captured_transactions(capture_dir: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(pid, transaction event)`` for every transaction in ``capture_dir``.

    A file still being written (its process writes it while this reads) cannot be
    parsed yet and is left for the next read: callers poll until what they expect is there.
    """
    for path in sorted(capture_dir.glob("*.envelope")):
        pid = int(path.name.split("-", 1)[0])
        try:
            envelope = Envelope.deserialize(path.read_bytes())
            items = [item.payload.json for item in envelope.items if item.type == "transaction"]
        except (ValueError, KeyError, IndexError):
            continue
        for event in items:
            if isinstance(event, dict):
                yield pid, event


def captured_spans(capture_dir: Path) -> list[CapturedSpan]:
    """Every span of every captured transaction, roots included."""
    spans: list[CapturedSpan] = []
    for pid, event in captured_transactions(capture_dir):
        trace = event["contexts"]["trace"]
        event_id = str(event["event_id"])
        spans.append(_captured_span(trace, trace_id=trace["trace_id"], transaction_id=event_id, root=True, pid=pid))
        for child in event.get("spans") or ():
            spans.append(
                _captured_span(child, trace_id=trace["trace_id"], transaction_id=event_id, root=False, pid=pid)
            )
    return spans


def _captured_span(
    span: Mapping[str, Any], *, trace_id: str, transaction_id: str, root: bool, pid: int
) -> CapturedSpan:
    return CapturedSpan(
        trace_id=str(span.get("trace_id") or trace_id),
        span_id=str(span["span_id"]),
        parent_span_id=span.get("parent_span_id") or None,
        op=str(span.get("op") or ""),
        description=str(span.get("description") or ""),
        data=dict(span.get("data") or {}),
        transaction_id=transaction_id,
        root=root,
        pid=pid,
    )


def ancestors(span: CapturedSpan, spans: Collection[CapturedSpan]) -> list[CapturedSpan]:
    """``span``'s parent, its parent's parent... as far as ``spans`` hold them (across transactions)."""
    by_id = {each.span_id: each for each in spans}
    found: list[CapturedSpan] = []
    parent = by_id.get(span.parent_span_id or "")
    while parent is not None and parent not in found:
        found.append(parent)
        parent = by_id.get(parent.parent_span_id or "")
    return found
