"""Helpers of the hop's trace tests: control attempts over each transport, and span relations."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
import sentry_sdk
from celery import current_app
from celery.signals import before_task_publish

from silo_router import tracing
from silo_router.envelope import Envelope, SealedEnvelope, seal
from silo_router.region.tasks import receive_envelope
from silo_router.transports import DeliveryError, delivering, transport_for
from silo_router.transports.celery import RECEIVE_TASK

from ...celery_app import app as suite_app
from ...sentry_capture import Span
from ...slack_signing import block_actions, interactive_body

#: Capabilities the test envelopes carry; none may reach anything sentry-sdk emits.
RESPONSE_URL = "https://hooks.slack.com/actions/T0US00001/42/RespUrlCapability0001"
TRIGGER_ID = "12345.98765.8088930838d88f2ad11fb56bc0b3ee1d"
#: local (in-process, on a thread), http (a real server on loopback), celery with a real
#: worker thread, and celery run eagerly: the published message, run in this process.
TRANSPORTS = ["local", "http", "celery-worker", "celery-eager"]

ATTEMPT = "silo_router.control.attempt"
RECEIVE = "silo_router.region.receive"
HANDLER = "silo_router.region.handler"
#: Spans sentry-sdk's own integrations may put between the attempt and the region's run.
INTEGRATION_OPS = frozenset({"http.client", "http.server", "queue.submit.celery", "queue.task.celery", "queue.process"})


@dataclasses.dataclass
class Sent:
    """What a control attempt sent: the envelope (with the request's trace), and what came back."""

    envelope: Envelope
    trace_id: str
    request_span_id: str
    answer: Any


def control_attempt(
    envelope: Envelope,
    *,
    attempt: int = 1,
    replays: int | None = None,
    wait: bool = True,
    sealed: SealedEnvelope | None = None,
) -> Sent:
    """Control's side in miniature: a request that creates the envelope, then one numbered attempt."""
    with tracing.flow("control", "request", "slack request", new_trace=True) as request:
        envelope = envelope.replace(trace=tracing.propagation_headers())
        trace_id = str(request.trace_id)
    (request_link, *_) = tracing.links.from_headers(envelope.trace).values()
    request_span_id = request_link.span_id
    with (
        tracing.flow("control", "attempt", "deliver to us", carrier=envelope.trace, span_kind="producer"),
        delivering(attempt=attempt, replays=replays),
    ):
        try:
            answer: Any = transport_for("us").deliver(sealed or seal(envelope), timeout=20.0, wait=wait)
        except DeliveryError as exc:
            answer = exc
    return Sent(envelope, trace_id, request_span_id, answer)


def of_trace(spans: Iterable[Span], trace_id: str, op: str) -> list[Span]:
    return [span for span in spans if span.trace_id == trace_id and span.op == op]


def path_to(spans: Iterable[Span], span: Span, ancestor_op: str) -> list[str]:
    """The ops from ``span``'s parent up to the first ancestor named ``ancestor_op`` (AssertionError if none)."""
    by_id = {each.span_id: each for each in spans}
    ops: list[str] = []
    parent = by_id.get(span.parent_span_id or "")
    while parent is not None:
        ops.append(parent.op)
        if parent.op == ancestor_op:
            return ops
        parent = by_id.get(parent.parent_span_id or "")
    raise AssertionError(f"{span.op} does not descend from {ancestor_op}: its ancestors are {ops}")


def assert_child_of(spans: list[Span], span: Span, ancestor_op: str) -> None:
    """``span`` descends from ``ancestor_op`` with nothing but sentry-sdk's integration spans between."""
    between = path_to(spans, span, ancestor_op)[:-1]
    assert set(between) <= INTEGRATION_OPS, between


@contextlib.contextmanager
def region_side() -> Iterator[None]:
    """Threads started in here run with the region's client (the global one), never control's."""
    with sentry_sdk.isolation_scope() as scope:
        scope.set_client(None)
        yield


@contextlib.contextmanager
def published() -> Iterator[list[dict[str, Any]]]:
    """Every Celery message published meanwhile: its task name, headers and body."""
    messages: list[dict[str, Any]] = []

    def keep(sender: Any = None, headers: Any = None, body: Any = None, **kwargs: Any) -> None:
        messages.append({"task": sender, "headers": dict(headers or {}), "body": body})

    before_task_publish.connect(keep, weak=False)
    try:
        yield messages
    finally:
        before_task_publish.disconnect(keep)


def give_up_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Region workers do not retry a failing handler: control hears "failed" at the first failure."""
    for app in {current_app._get_current_object(), suite_app}:
        monkeypatch.setattr(type(app.tasks[RECEIVE_TASK]), "max_retries", 0)


class Crossing:
    """Runs control attempts over one transport, and the region's side where it is not a server."""

    def __init__(self, name: str, request: pytest.FixtureRequest, settings: Any) -> None:
        self.name = name
        if name == "http":
            request.getfixturevalue("http_region")
        elif name == "celery-worker":
            request.getfixturevalue("region_worker")
        elif name == "celery-eager":
            settings.SILO_ROUTER = {**settings.SILO_ROUTER, "REGIONS": {"us": {"TRANSPORT": "celery"}}}
            # send_task publishes for real (to the suite's in-memory broker); the message is run below.
            eager = suite_app.conf.task_always_eager
            suite_app.conf.update(task_always_eager=False)
            request.addfinalizer(lambda: suite_app.conf.update(task_always_eager=eager))

    def send(
        self, envelope: Envelope, *, attempt: int = 1, replays: int | None = None, sealed: SealedEnvelope | None = None
    ) -> Sent:
        """One attempt at ``envelope``, with its region's answer (a receipt, or the ``DeliveryError``)."""
        if self.name != "celery-eager":
            return control_attempt(envelope, attempt=attempt, replays=replays, sealed=sealed)
        with published() as messages:
            sent = control_attempt(envelope, attempt=attempt, replays=replays, sealed=sealed, wait=False)
        (message,) = [m for m in messages if m["task"] == RECEIVE_TASK]
        with region_side():
            result = receive_envelope.apply(args=message["body"][0], headers=message["headers"], throw=False)
        sent.answer = result.result
        return sent


def click_envelope(*, key: str = "slack:click:1", notification_id: str | None = None) -> Envelope:
    """A ``block_actions`` envelope for region us carrying a ``response_url`` and a ``trigger_id``."""
    payload = block_actions(trigger_id=TRIGGER_ID, response_url=RESPONSE_URL)
    return Envelope(
        id=Envelope.make_id(key, "us"),
        idempotency_key=key,
        provider="slack",
        kind="block_actions:resolve_dialog",
        region="us",
        body=interactive_body(payload).decode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
        strategy="async",
        organization_ids=("101",),
        installation={"installation_id": "7", "team_id": "T0US00001"},
        notification_id=notification_id,
    )
