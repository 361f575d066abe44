"""Control responses against the fake Slack: the Loading modal, its failures, its fate."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import DataError, OperationalError, connection
from django.test import Client
from django.utils import timezone

from example_project.fake_slack import FakeSlack
from silo_router.control import control_responses, delivery
from silo_router.control.models import Option, Payload
from silo_router.control.options import CONTROL_RESPONSE_ACTIONS, CONTROL_RESPONSES_ENABLED, options
from silo_router.control.resolver import Resolution, Resolver
from silo_router.providers.base import ControlResponse, ControlResponseStatus
from silo_router.providers.slack.control_responses import LoadingModal
from silo_router.providers.slack.parsing import parse_request
from silo_router.region.handlers import slack
from silo_router.transports import DeliveryError

from .loading_modal import stored_with_loading_modal
from .slack_signing import block_actions, interactive_body, post_slack

pytestmark = pytest.mark.django_db(transaction=True)

RESOLVED_VIEW = {
    "type": "modal",
    "title": {"type": "plain_text", "text": "Resolved"},
    "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Issue resolved"}}],
}


@pytest.fixture
def fake(settings: Any) -> Iterator[FakeSlack]:
    with FakeSlack(signing_secret=settings.SLACK_SIGNING_SECRET, bot_token="xoxb-tests") as server:
        settings.SILO_ROUTER = {
            **settings.SILO_ROUTER,
            "SLACK": {**settings.SILO_ROUTER["SLACK"], "API_URL": server.api_url},
        }
        yield server


def set_options(*, enabled: bool, actions: list[str]) -> None:
    Option.objects.update_or_create(key=CONTROL_RESPONSES_ENABLED, defaults={"value": enabled})
    Option.objects.update_or_create(key=CONTROL_RESPONSE_ACTIONS, defaults={"value": actions})
    options.invalidate()


def click(client: Client, fake: FakeSlack, **kwargs: Any) -> Any:
    payload = block_actions(trigger_id=fake.issue_trigger(), **kwargs)
    payload["response_url"] = fake.issue_response_url(channel_id="C0CHAN001")
    return post_slack(client, interactive_body(payload))


def test_loading_modal_opens_before_any_database_work(
    client: Client, fake: FakeSlack, installations: Any, settings: Any
) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "OPTIONS_REFRESH_INTERVAL": 60}
    set_options(enabled=True, actions=["resolve_dialog"])
    options.get(CONTROL_RESPONSES_ENABLED)  # warm the snapshot, as a running process has it
    query_times: list[float] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        query_times.append(time.monotonic())
        return execute(sql, params, many, context)

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        assert request.loading_view_open
        request.update_view(RESOLVED_VIEW)

    with connection.execute_wrapper(record):
        response = click(client, fake)
    assert response.status_code == 200
    (opened,) = fake.calls("views.open")
    assert opened.ok
    assert opened.at < min(query_times), "views.open must precede every query of the request"
    (updated,) = [c for c in fake.calls("views.update") if c.ok]
    view = fake.views[updated.params["view_id"]]
    assert view["title"]["text"] == "Resolved"
    envelope = json.loads(Payload.objects.get().envelope)
    assert envelope["control_response"]["status"] == "opened"
    assert envelope["control_response"]["view_id"] == updated.params["view_id"]
    # A single-token app (BOT_TOKEN): the installation has no id of its own.
    assert envelope["control_response"]["installation_id"] == ""
    assert envelope["installation"]["installation_id"] == ""


def test_flag_off_or_unlisted_action_opens_nothing(client: Client, fake: FakeSlack, installations: Any) -> None:
    seen: list[bool] = []

    @slack.action()
    def any_action(request: Any) -> None:
        seen.append(request.loading_view_open)

    set_options(enabled=False, actions=["resolve_dialog"])
    assert click(client, fake).status_code == 200
    set_options(enabled=True, actions=["archive_dialog"])
    assert click(client, fake).status_code == 200
    assert fake.calls("views.open") == []
    assert seen == [False, False]


def test_expired_trigger_is_not_retried_and_the_region_answers_by_response_url(
    client: Client, fake: FakeSlack, installations: Any
) -> None:
    set_options(enabled=True, actions=["resolve_dialog"])
    told: list[Any] = []

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        told.append(dict(request.control_response))
        request.update_view(RESOLVED_VIEW, fallback_text="Issue resolved")

    payload = block_actions(trigger_id="not-issued-by-slack")
    payload["response_url"] = fake.issue_response_url(channel_id="C0CHAN001")
    assert post_slack(client, interactive_body(payload)).status_code == 200
    assert [c.error for c in fake.calls("views.open")] == ["invalid_trigger_id"]
    assert told[0]["status"] == "failed"
    assert told[0]["error"] == "invalid_trigger_id"
    (reply,) = fake.calls("response_url")
    assert reply.ok
    assert reply.params["text"] == "Issue resolved"


def test_region_failure_replaces_the_loading_modal_with_an_error(
    client: Client, fake: FakeSlack, installations: Any, settings: Any
) -> None:
    set_options(enabled=True, actions=["resolve_dialog"])
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "DELIVERY_MAX_ATTEMPTS": 1}

    @slack.action("resolve_dialog")
    def broken(request: Any) -> None:
        raise RuntimeError("region database is down")

    assert click(client, fake).status_code == 200
    (opened,) = fake.calls("views.open")
    view_id = opened.params.get("view_id") or next(iter(fake.views))
    assert fake.views[view_id]["title"]["text"] == "Something went wrong"
    assert Payload.objects.get().state == "failed"


def run_due_loading_checks() -> None:
    """Make every scheduled Loading-modal check due and let the sweeper run it."""
    assert Payload.objects.exclude(loading_check_at=None).exists()
    Payload.objects.update(loading_check_at=timezone.now())
    assert delivery.sweep()["loading_checks"] >= 1


def test_loading_modal_left_alone_by_the_handler_is_closed_out(
    client: Client, fake: FakeSlack, installations: Any
) -> None:
    set_options(enabled=True, actions=["resolve_dialog"])

    @slack.action("resolve_dialog")
    def quiet(request: Any) -> None:
        """Does its work but never touches the modal."""

    assert click(client, fake).status_code == 200
    run_due_loading_checks()
    (view,) = fake.views.values()
    assert view["title"]["text"] == "Done"


def test_the_check_never_overwrites_the_handlers_view(client: Client, fake: FakeSlack, installations: Any) -> None:
    set_options(enabled=True, actions=["resolve_dialog"])

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        request.update_view(RESOLVED_VIEW)

    assert click(client, fake).status_code == 200
    run_due_loading_checks()
    (view,) = fake.views.values()
    assert view["title"]["text"] == "Resolved"
    assert "hash_conflict" in [c.error for c in fake.calls("views.update")]


def test_unroutable_click_does_not_leave_the_modal_loading(client: Client, fake: FakeSlack, installations: Any) -> None:
    set_options(enabled=True, actions=["resolve_dialog"])
    assert click(client, fake, team_id="T0NOBODY1").status_code == 200
    assert control_responses.wait_for_background_reports(timeout=10)
    (view,) = fake.views.values()
    assert view["title"]["text"] == "Something went wrong"
    assert Payload.objects.get().state == "unroutable"


def test_no_installation_is_a_failed_control_response_and_nothing_is_sent(fake: FakeSlack) -> None:
    """Without the installation's credentials there is no token to open a modal with."""
    inbound = parse_request(body=interactive_body(block_actions(trigger_id=fake.issue_trigger())), headers={})
    assert inbound.authorization is None
    answered = LoadingModal("slack.loading_modal").run(inbound, external_id="sr-1", timeout=1.0)
    assert (answered.status, answered.error) == (ControlResponseStatus.FAILED, "no_installation")
    assert fake.calls() == []


def test_a_late_failure_replaces_the_taking_longer_view(fake: FakeSlack, installations: Any, settings: Any) -> None:
    """The check shows "taking longer"; a later final failure must still reach the user."""
    set_options(enabled=True, actions=["resolve_dialog"])
    payload_id, view = stored_with_loading_modal(fake, key="k-late")
    payload = Payload.objects.get(pk=payload_id)
    delivery.check_loading_view(str(payload.pk))
    # A slow operation has not gone wrong: its own title, and a promise the library keeps.
    assert fake.views[view["id"]]["title"]["text"] == "Still working"
    text = json.dumps(fake.views[view["id"]]["blocks"])
    assert "longer than expected" in text and "will update" in text
    assert "notified" not in text
    payload.refresh_from_db()
    delivery.record_failure(payload, DeliveryError("http_503", retryable=False))
    assert "could not be completed" in json.dumps(fake.views[view["id"]]["blocks"])
    assert [c.error for c in fake.calls("views.update")] == [None, None]


# -- a control response never costs the request, and never blocks it -------------------------


class RaisingControlResponse:
    """A custom control-response handler with a bug."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, inbound: Any, *, external_id: str, timeout: float) -> Any:
        raise RuntimeError("bug in a custom control response")

    def report(self, response: Any, *, outcome: str, timeout: float | None = None) -> str | None:
        raise RuntimeError("bug in a custom control response")


class OpenedThenBlockedReport:
    """Opens nothing real, and holds every report until the test releases it."""

    release = threading.Event()
    reported: list[tuple[str, str, float | None]] = []

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, inbound: Any, *, external_id: str, timeout: float) -> ControlResponse:
        return ControlResponse(handler=self.name, status=ControlResponseStatus.OPENED, view_id="V-held")

    def report(self, response: Any, *, outcome: str, timeout: float | None = None) -> str | None:
        self.release.wait(timeout=30)
        self.reported.append((threading.current_thread().name, str(outcome), timeout))
        return None


class UnavailableResolver(Resolver):
    """A resolver whose database is down."""

    def resolve(self, inbound: Any) -> Resolution:
        raise OperationalError("could not connect to server")


def with_handler(settings: Any, name: str, path: str) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "CONTROL_RESPONSE_HANDLERS": {name: path}}
    set_options(enabled=True, actions=[f"resolve_dialog={name}"])


def test_a_control_response_that_raises_still_stores_and_forwards(
    client: Client, fake: FakeSlack, installations: Any, settings: Any
) -> None:
    with_handler(settings, "custom.raising", f"{__name__}.RaisingControlResponse")
    seen: list[Any] = []

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        seen.append(dict(request.control_response))

    assert click(client, fake).status_code == 200
    assert Payload.objects.get().state == "delivered"
    assert seen == [
        {
            "handler": "custom.raising",
            "status": "failed",
            "view_id": None,
            "external_id": None,
            "hash": None,
            "error": "handler_error",
            "elapsed_ms": 0.0,
            "installation_id": None,
        }
    ]


def test_a_resolver_database_error_is_a_503_and_the_modal_is_told_off_thread(
    client: Client, fake: FakeSlack, installations: Any, settings: Any
) -> None:
    set_options(enabled=True, actions=["resolve_dialog"])
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RESOLVER": f"{__name__}.UnavailableResolver"}
    response = click(client, fake)
    assert response.status_code == 503
    assert json.loads(response.content)["error"] == "storage_unavailable"
    assert not Payload.objects.exists()
    assert control_responses.wait_for_background_reports(timeout=10)
    (view,) = fake.views.values()
    assert view["title"]["text"] == "Something went wrong"


def test_the_failed_report_runs_off_the_request_thread(client: Client, installations: Any, settings: Any) -> None:
    """The request is answered while the report is still held: it cannot delay Slack's 3 seconds."""
    with_handler(settings, "custom.held", f"{__name__}.OpenedThenBlockedReport")
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RESOLVER": f"{__name__}.UnavailableResolver"}
    OpenedThenBlockedReport.release.clear()
    OpenedThenBlockedReport.reported.clear()
    try:
        response = post_slack(client, interactive_body(block_actions(trigger_id="t-1")))
        assert response.status_code == 503
        assert OpenedThenBlockedReport.reported == []  # still held: the answer did not wait for it
    finally:
        OpenedThenBlockedReport.release.set()
    assert control_responses.wait_for_background_reports(timeout=10)
    ((thread, outcome, timeout),) = OpenedThenBlockedReport.reported
    assert thread != threading.current_thread().name
    assert outcome == "failed"
    assert timeout is not None and timeout <= settings.SILO_ROUTER.get("CONTROL_RESPONSE_TIMEOUT", 1.5)


def test_a_background_report_does_not_wait_out_a_rate_limit(
    client: Client, fake: FakeSlack, installations: Any, settings: Any
) -> None:
    set_options(enabled=True, actions=["resolve_dialog"])
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RESOLVER": f"{__name__}.UnavailableResolver"}
    fake.fail_next("views.update", status=429, retry_after=30)
    assert click(client, fake).status_code == 503
    assert control_responses.wait_for_background_reports(timeout=10)
    assert [c.error for c in fake.calls("views.update")] == ["ratelimited"]


def test_a_storage_outage_is_a_503_but_bad_data_is_a_400(client: Client, installations: Any, settings: Any) -> None:
    for error, status, reason in ((OperationalError, 503, "storage_unavailable"), (DataError, 400, "invalid_field")):

        def fail(execute: Any, sql: str, params: Any, many: bool, context: Any, error: type = error) -> Any:
            if sql.lstrip().upper().startswith("INSERT"):
                raise error("refused")
            return execute(sql, params, many, context)

        with connection.execute_wrapper(fail):
            response = post_slack(client, interactive_body(block_actions()))
        assert (response.status_code, json.loads(response.content)["error"]) == (status, reason)
