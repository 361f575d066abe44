"""The control request as Sentry receives it: a span per stage, outcomes, the deadline, metrics."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from example_project.fake_slack import FakeSlack
from silo_router.control import control_responses, delivery
from silo_router.control.models import Option, Payload
from silo_router.control.options import CONTROL_RESPONSE_ACTIONS, CONTROL_RESPONSES_ENABLED, options
from silo_router.providers.base import ControlResponse, InboundRequest
from silo_router.providers.slack import SlackProvider
from silo_router.providers.slack.control_responses import LoadingModal
from silo_router.region.handlers import slack
from silo_router.tracing import links, metrics

from ...sentry_capture import Captured, Span
from ...slack_signing import block_actions, block_suggestion, event_callback, interactive_body, post_slack

pytestmark = pytest.mark.django_db(transaction=True)

REQUEST = "silo_router.control.request"
#: Seconds the slow control response waits before its views.open.
SLOW = 0.6


@pytest.fixture
def fake(settings: Any) -> Iterator[FakeSlack]:
    with FakeSlack(signing_secret=settings.SLACK_SIGNING_SECRET, bot_token="xoxb-tests") as server:
        settings.SILO_ROUTER = {
            **settings.SILO_ROUTER,
            "SLACK": {**settings.SILO_ROUTER["SLACK"], "API_URL": server.api_url},
            "CONTROL_RESPONSE_HANDLERS": {
                "slack.loading_modal": "silo_router.providers.slack.control_responses.LoadingModal",
                "slow": f"{__name__}.SlowLoadingModal",
            },
        }
        yield server


class SlowLoadingModal(LoadingModal):
    """The Loading modal, opened after a pause: a control response that spends the deadline."""

    def run(self, inbound: InboundRequest, *, external_id: str, timeout: float) -> ControlResponse:
        time.sleep(SLOW)
        return super().run(inbound, external_id=external_id, timeout=timeout)


def loading_modal_for(action: str, handler: str = "slack.loading_modal") -> None:
    Option.objects.update_or_create(key=CONTROL_RESPONSES_ENABLED, defaults={"value": True})
    Option.objects.update_or_create(key=CONTROL_RESPONSE_ACTIONS, defaults={"value": [f"{action}={handler}"]})
    options.invalidate()


def click(client: Client, fake: FakeSlack, *, timestamp: float | None = None, **fields: Any) -> Any:
    payload = block_actions(trigger_id=fake.issue_trigger(), **fields)
    payload["response_url"] = fake.issue_response_url(channel_id="C0CHAN001")
    return post_slack(client, interactive_body(payload), timestamp=timestamp)


def children_of(captured: Captured, parent: Span) -> dict[str, Span]:
    return {span.op: span for span in captured.spans() if span.parent_span_id == parent.span_id}


def test_every_stage_is_a_child_of_the_request_span(
    client: Client, fake: FakeSlack, installations: Any, captured: Captured
) -> None:
    loading_modal_for("resolve_dialog")

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        pass

    assert click(client, fake).status_code == 200
    request = captured.one(REQUEST)
    assert request.is_root
    assert request["provider"] == "slack"
    assert request["kind"] == "block_actions:resolve_dialog"
    assert request["installation"] == ""  # a single-token app: the installation has no id
    assert request["outcome"] == "stored"
    assert request["status"] == 200
    assert request["control_response"] == "opened"
    assert request.tags["silo_router.kind"] == "block_actions:resolve_dialog"
    assert request.tags["silo_router.outcome"] == "stored"
    stages = children_of(captured, request)
    for stage in ("read", "verify", "classify", "authorize", "control_response", "resolve", "store", "wake"):
        assert f"silo_router.control.{stage}" in stages, stage
    assert {span.trace_id for span in captured.spans()} == {request.trace_id}

    store = stages["silo_router.control.store"]
    (row,) = Payload.objects.all()
    assert store.data["messaging.operation.type"] == "create"
    assert store.data["messaging.destination.name"] == "us"
    assert store.data["messaging.message.id"] == str(row.pk)
    assert store["envelope_id"] == str(row.pk)
    assert row.trace_id == request.trace_id

    opened = stages["silo_router.control.control_response"]
    assert opened["outcome"] == "opened"
    assert opened["handler"] == "slack.loading_modal"
    assert 0 < opened["trigger_left_ms"] <= 3000
    assert opened["elapsed_ms"] > 0
    views_open = children_of(captured, opened)["silo_router.control.views_open"]
    assert views_open["method"] == "views.open"
    assert views_open["ok"] is True

    wake = stages["silo_router.control.wake"]  # eager Celery: the wake-up runs inline, in the request
    assert (wake["region"], wake["payloads"]) == ("us", 1)


def test_a_fast_answer_meets_the_deadline(client: Client, installations: Any, captured: Captured) -> None:
    body = json.dumps(event_callback(event_id="EvFast")).encode()
    assert post_slack(client, body, content_type="application/json", timestamp=time.time() + 1).status_code == 200
    request = captured.one(REQUEST)
    assert request["deadline_ms"] == 3000
    assert request["deadline_missed"] is False
    assert request.tags["silo_router.deadline_missed"] is False
    assert 0 <= request["ack_ms"] < request["deadline_ms"]
    assert request["in_transit_ms"] == 0  # a send timestamp ahead of control's clock counts as no transit
    (ack,) = captured.metrics(metrics.ACK_TIME)
    assert ack["type"] == "distribution"
    assert ack["unit"] == "millisecond"
    assert ack["attributes"] == {"provider": "slack", "kind": "event_callback:app_mention", "deadline_missed": False}
    assert captured.metrics(metrics.DEADLINE_MISSED) == []


def test_a_slow_control_response_misses_the_deadline(
    client: Client, fake: FakeSlack, installations: Any, captured: Captured, settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RESPONSE_DEADLINE": 0.5, "SYNC_SAFETY_MARGIN": 0.0}
    loading_modal_for("resolve_dialog", "slow")
    assert click(client, fake, timestamp=time.time() + 1).status_code == 200
    request = captured.one(REQUEST)
    assert request["deadline_ms"] == 500
    assert request["deadline_missed"] is True
    assert request.tags["silo_router.deadline_missed"] is True
    assert request["ack_ms"] > request["deadline_ms"]
    response = children_of(captured, request)["silo_router.control.control_response"]
    assert response["handler"] == "slow"
    # views.open went out after the pause: at most 3 s less the pause were left of the trigger.
    assert response["trigger_left_ms"] <= (3 - SLOW) * 1000

    (ack,) = captured.metrics(metrics.ACK_TIME)
    assert ack["attributes"]["deadline_missed"] is True
    assert ack["value"] > 500
    (missed,) = captured.metrics(metrics.DEADLINE_MISSED)
    assert missed["type"] == "counter"
    assert missed["value"] == 1
    assert missed["attributes"] == {"provider": "slack", "kind": "block_actions:resolve_dialog"}
    (left,) = captured.metrics(metrics.TRIGGER_LEFT)
    assert left["value"] == pytest.approx(response["trigger_left_ms"], abs=0.1)
    assert left["attributes"]["outcome"] in ("opened", "timeout")


def test_a_refused_trigger_is_the_control_responses_failure_with_slacks_error(
    client: Client, fake: FakeSlack, installations: Any, captured: Captured
) -> None:
    loading_modal_for("resolve_dialog")
    payload = block_actions(trigger_id="not-issued-by-slack")
    assert post_slack(client, interactive_body(payload)).status_code == 200
    request = captured.one(REQUEST)
    response = children_of(captured, request)["silo_router.control.control_response"]
    assert response["outcome"] == "failed"
    assert response["error"] == "invalid_trigger_id"
    assert response.status == "internal_error"
    views_open = children_of(captured, response)["silo_router.control.views_open"]
    assert (views_open["ok"], views_open["error"]) == (False, "invalid_trigger_id")
    assert request["control_response"] == "failed"
    assert request["outcome"] == "stored"  # the work is forwarded all the same


def test_a_synchronous_forward_records_its_budget_and_what_it_used(
    client: Client, installations: Any, captured: Captured
) -> None:
    @slack.options("pick_issue")
    def pick(request: Any) -> dict[str, Any]:
        return {"options": [{"text": {"type": "plain_text", "text": "One"}, "value": "1"}]}

    response = post_slack(client, interactive_body(block_suggestion()))
    assert response.status_code == 200
    assert json.loads(response.content)["options"][0]["value"] == "1"
    request = captured.one(REQUEST)
    assert request["outcome"] == "forwarded"
    forward = children_of(captured, request)["silo_router.control.forward_sync"]
    assert forward["region"] == "us"
    assert 0 < forward["budget_ms"] <= 3000
    assert 0 <= forward["used_ms"]
    assert forward["outcome"] == "forwarded"
    inside = children_of(captured, forward)
    assert "silo_router.control.store" in inside
    attempt = inside["silo_router.control.attempt"]
    assert attempt["outcome"] == "delivered"
    assert attempt["receipt"] == "handled"
    (used,) = captured.metrics(metrics.FORWARD_SYNC_USED)
    assert used["attributes"] == {"provider": "slack", "kind": "block_suggestion:pick_issue", "outcome": "forwarded"}
    assert used["value"] == pytest.approx(forward["used_ms"], abs=0.1)


def test_a_forged_request_is_rejected_after_read_and_verify(client: Client, captured: Captured) -> None:
    body = json.dumps(event_callback(event_id="EvForged")).encode()
    extra = {"HTTP_X_SLACK_SIGNATURE": "v0=" + "0" * 64}
    response = post_slack(client, body, content_type="application/json", extra=extra)
    assert response.status_code == 401
    request = captured.one(REQUEST)
    assert (request["outcome"], request["rejected"], request["status"]) == ("rejected", "signature_mismatch", 401)
    assert "silo_router.kind" not in request.data
    stages = children_of(captured, request)
    assert set(stages) == {"silo_router.control.read", "silo_router.control.verify"}
    assert stages["silo_router.control.verify"].status == "internal_error"
    (ack,) = captured.metrics(metrics.ACK_TIME)
    assert ack["attributes"] == {"provider": "slack", "deadline_missed": False}


def test_a_request_nobody_can_route_is_kept_as_unroutable(client: Client, captured: Captured) -> None:
    body = json.dumps(event_callback(event_id="EvNowhere", team_id="T0NOBODY1")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    request = captured.one(REQUEST)
    assert request["outcome"] == "unroutable"
    unroutable = children_of(captured, request)["silo_router.control.unroutable"]
    assert "T0NOBODY1" in unroutable["reason"]
    assert "silo_router.control.store" in children_of(captured, unroutable)


def test_a_retried_event_is_a_duplicate(client: Client, installations: Any, captured: Captured) -> None:
    body = json.dumps(event_callback(event_id="EvTwice")).encode()
    for _ in range(2):
        assert post_slack(client, body, content_type="application/json").status_code == 200
    outcomes = sorted(span["outcome"] for span in captured.all(REQUEST))
    assert outcomes == ["duplicate", "stored"]


class NotifyingSlack(SlackProvider):
    """Slack, reading the notification a click answers from the action's value (``notification:<id>``)."""

    def parse(self, *, body: bytes, headers: Any) -> InboundRequest:
        inbound = super().parse(body=body, headers=headers)
        actions = inbound.payload.get("actions") or [{}]
        value = str(actions[0].get("value") or "")
        if value.startswith("notification:"):
            return dataclasses.replace(inbound, notification_id=value.removeprefix("notification:"))
        return inbound


def test_a_click_on_a_notification_links_to_its_trace_and_carries_its_id(
    client: Client, installations: Any, captured: Captured, settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "PROVIDERS": {"slack": f"{__name__}.NotifyingSlack"}}
    notification_id = uuid.uuid4().hex

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        pass

    before = time.time()
    response = post_slack(client, interactive_body(block_actions(value=f"notification:{notification_id}")))
    after = time.time()
    assert response.status_code == 200
    request = captured.one(REQUEST)
    assert request["notification_id"] == notification_id
    trace_id, span_id = links.notification_ids(notification_id)
    (link,) = [link for link in request.links if link["attributes"]["sentry.link.type"] == "silo_router.notification"]
    assert (link["trace_id"], link["span_id"], link["sampled"]) == (trace_id, span_id, True)
    assert request.data["silo_router.notification"] == trace_id  # the searchable mirror of the link
    assert "silo_router.notification_id" not in request.tags  # an id: data, never a tag
    envelope = json.loads(Payload.objects.get().envelope)
    assert envelope["notification_id"] == notification_id
    assert before <= envelope["received_at"] <= after


def test_a_malformed_notification_id_is_ignored(
    client: Client, installations: Any, captured: Captured, settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "PROVIDERS": {"slack": f"{__name__}.NotifyingSlack"}}
    response = post_slack(client, interactive_body(block_actions(value="notification:not-an-id")))
    assert response.status_code == 200
    request = captured.one(REQUEST)
    assert "silo_router.notification_id" not in request.data
    assert request.links == ()
    envelope = json.loads(Payload.objects.get().envelope)
    assert envelope["notification_id"] is None
    assert envelope["received_at"] is not None  # every envelope says when control received it


def test_no_capability_is_in_anything_sent(
    client: Client, fake: FakeSlack, installations: Any, captured: Captured
) -> None:
    loading_modal_for("resolve_dialog")
    trigger = fake.issue_trigger()
    response_url = fake.issue_response_url(channel_id="C0CHAN001")
    payload = {**block_actions(trigger_id=trigger), "response_url": response_url}

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        pass

    assert post_slack(client, interactive_body(payload)).status_code == 200
    sent = captured.everything()
    assert captured.one(REQUEST)["outcome"] == "stored"
    for secret in (trigger, response_url, response_url.rsplit("/", 1)[-1], "xoxb-tests"):
        assert secret not in sent


def test_a_due_loading_check_and_its_report_are_spans_of_the_sweep(
    client: Client, fake: FakeSlack, installations: Any, captured: Captured
) -> None:
    loading_modal_for("resolve_dialog")

    @slack.action("resolve_dialog")
    def quiet(request: Any) -> None:
        """Does its work but never touches the modal."""

    assert click(client, fake).status_code == 200
    Payload.objects.update(loading_check_at=timezone.now())
    assert delivery.sweep()["loading_checks"] == 1
    sweep = captured.one("silo_router.control.sweep")
    assert sweep["loading_checks"] == 1
    check = captured.one("silo_router.control.loading_check")
    assert check.parent_span_id == sweep.span_id
    assert check["outcome"] == "done"
    report = children_of(captured, check)["silo_router.control.report_outcome"]
    assert (report["report"], report["outcome"], report["handler"]) == ("done", "updated", "slack.loading_modal")
    update = children_of(captured, report)["silo_router.control.views_update"]
    assert (update["method"], update["ok"]) == ("views.update", True)


def test_a_report_sent_off_the_request_thread_continues_the_requests_trace(
    client: Client, fake: FakeSlack, installations: Any, captured: Captured
) -> None:
    loading_modal_for("resolve_dialog")
    assert click(client, fake, team_id="T0NOBODY1").status_code == 200
    assert control_responses.wait_for_background_reports(timeout=10)
    request = captured.one(REQUEST)
    assert request["outcome"] == "unroutable"
    report = captured.one("silo_router.control.report_outcome")
    assert report.trace_id == request.trace_id
    assert report["report"] == "failed"
    assert report["outcome"] == "updated"


def test_an_event_for_two_regions_is_stored_as_one_batch(
    client: Client, installations: Any, captured: Captured
) -> None:
    @slack.event("app_mention")
    def mention(request: Any) -> None:
        pass

    body = json.dumps(event_callback(event_id="EvBoth", team_id="T0BOTH001")).encode()
    assert post_slack(client, body, content_type="application/json").status_code == 200
    request = captured.one(REQUEST)
    store = children_of(captured, request)["silo_router.control.store"]
    assert store.data["messaging.batch.message_count"] == 2
    assert store.data["messaging.operation.type"] == "create"
    assert (store["regions"], store["stored"], store["duplicates"]) == ("eu,us", 2, 0)
    attempts = captured.all("silo_router.control.attempt")
    assert sorted((span["region"], span["outcome"]) for span in attempts) == [("eu", "delivered"), ("us", "delivered")]
    assert set(Payload.objects.values_list("trace_id", flat=True)) == {request.trace_id}
