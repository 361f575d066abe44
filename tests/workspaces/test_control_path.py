"""Control's own Slack calls use the token of the installation the request belongs to."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from django.db import OperationalError, connection
from django.test import Client
from django.utils import timezone

from example_project.fake_slack import FakeSlack
from silo_router.control import control_responses, delivery, followups
from silo_router.control.models import Payload
from silo_router.control.resolver import Resolution, Resolver
from silo_router.control.slack.store import DjangoInstallationStore
from silo_router.providers.base import Authorization, RoutingKeys
from silo_router.region.handlers import slack

from ..slack_signing import block_actions, interactive_body, post_slack
from .conftest import T1, T2, Installed, click, enable_loading_modal

pytestmark = pytest.mark.django_db(transaction=True)


def opened_views(fake: FakeSlack) -> list[tuple[str | None, str | None]]:
    """``(team of the token, error)`` of every views.open the fake saw."""
    return [(call.team_id, call.error) for call in fake.calls("views.open")]


def test_each_workspace_opens_its_loading_modal_with_its_own_token(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    enable_loading_modal()
    seen: list[dict[str, Any]] = []

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        seen.append(dict(request.control_response))

    assert click(client, fake, workspaces[T1]).status_code == 200
    assert click(client, fake, workspaces[T2]).status_code == 200
    assert opened_views(fake) == [(T1, None), (T2, None)]
    assert [(s["status"], s["installation_id"]) for s in seen] == [
        ("opened", workspaces[T1].installation_id),
        ("opened", workspaces[T2].installation_id),
    ]


def test_a_busy_workspace_opens_its_modal_before_any_query(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], settings: Any
) -> None:
    """Once the installation is cached, views.open is still the first I/O of a click."""
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "OPTIONS_REFRESH_INTERVAL": 60}
    enable_loading_modal()
    assert click(client, fake, workspaces[T1]).status_code == 200  # warms the options, authorizer and resolver
    query_times: list[float] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        query_times.append(time.monotonic())
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        assert click(client, fake, workspaces[T1]).status_code == 200
    first, second = fake.calls("views.open")
    assert (first.team_id, second.team_id, second.error) == (T1, T1, None)
    assert query_times and second.at < min(query_times)


def test_the_envelope_carries_the_installation_facts_never_its_token(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    t2 = workspaces[T2]
    seen: list[Any] = []

    @slack.action("resolve_dialog")
    def resolve(request: Any) -> None:
        seen.append(dict(request.envelope.installation))

    assert click(client, fake, t2).status_code == 200
    (facts,) = seen
    assert facts["installation_id"] == t2.installation_id
    assert (facts["team_id"], facts["bot_user_id"], facts["bot_id"]) == (T2, t2.bot_user_id, t2.bot_id)
    assert "token" not in facts
    stored = Payload.objects.get().envelope
    assert t2.token not in stored
    assert json.loads(stored)["installation"] == facts


def test_a_workspace_without_an_installation_opens_no_modal(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    enable_loading_modal()
    fake.add_workspace("T0NOAPP01", channels=("C0NOAPP01",))
    payload = block_actions(team_id="T0NOAPP01", trigger_id=fake.issue_trigger(team_id="T0NOAPP01"))
    assert post_slack(client, interactive_body(payload)).status_code == 200
    assert fake.calls("views.open") == []
    payload_row = Payload.objects.get()
    assert payload_row.state == "unroutable"
    assert "T0NOAPP01" in payload_row.last_error


def make_checks_due() -> int:
    Payload.objects.exclude(loading_check_at=None).update(loading_check_at=timezone.now())
    return followups.run_due_checks()


def test_follow_up_reports_use_the_installation_token(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed]
) -> None:
    enable_loading_modal()

    @slack.action("resolve_dialog")
    def quiet(request: Any) -> None:
        """Does its work but leaves the modal to control."""

    assert click(client, fake, workspaces[T2]).status_code == 200
    Payload.objects.update(loading_check_at=timezone.now())
    assert delivery.sweep()["loading_checks"] == 1
    assert [(c.team_id, c.error) for c in fake.calls("views.update")] == [(T2, None)]
    (view,) = fake.views.values()
    assert view["title"]["text"] == "Done"


def test_a_final_failure_is_reported_with_the_installation_token(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], settings: Any
) -> None:
    enable_loading_modal()
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "DELIVERY_MAX_ATTEMPTS": 1}

    @slack.action("resolve_dialog")
    def broken(request: Any) -> None:
        raise RuntimeError("region database is down")

    assert click(client, fake, workspaces[T1]).status_code == 200
    assert Payload.objects.get().state == "failed"
    assert [(c.team_id, c.error) for c in fake.calls("views.update")] == [(T1, None)]
    (view,) = fake.views.values()
    assert view["title"]["text"] == "Something went wrong"


class UnavailableResolver(Resolver):
    """A resolver whose database is down."""

    def resolve(self, inbound: Any) -> Resolution:
        raise OperationalError("could not connect to server")


def test_a_report_sent_in_the_background_uses_the_installation_token(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], settings: Any
) -> None:
    enable_loading_modal()
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "RESOLVER": f"{__name__}.UnavailableResolver"}
    assert click(client, fake, workspaces[T2]).status_code == 503
    assert control_responses.wait_for_background_reports(timeout=10)
    assert [(c.team_id, c.error) for c in fake.calls("views.update")] == [(T2, None)]
    (view,) = fake.views.values()
    assert view["title"]["text"] == "Something went wrong"


def test_a_report_for_an_installation_gone_since_is_logged_and_sends_nothing(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], caplog: pytest.LogCaptureFixture
) -> None:
    enable_loading_modal()

    @slack.action("resolve_dialog")
    def quiet(request: Any) -> None:
        """Leaves the modal to control."""

    assert click(client, fake, workspaces[T1]).status_code == 200
    DjangoInstallationStore().deactivate(workspaces[T1].integration, reason="app_uninstalled")
    with caplog.at_level(logging.WARNING, logger="silo_router.slack"):
        assert make_checks_due() == 1
    assert fake.calls("views.update") == []
    assert [r for r in caplog.records if "not active" in r.getMessage()]
    assert Payload.objects.get().loading_view == Payload.LoadingView.CLOSED


class UnavailableAuthorizer:
    """An authorizer whose database is down."""

    def authorize(self, routing: RoutingKeys) -> Authorization | None:
        raise OperationalError("could not connect to server")

    def for_installation(self, installation_id: str) -> Authorization | None:
        raise OperationalError("could not connect to server")


def test_an_authorizer_outage_is_a_503_and_nothing_is_sent(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], settings: Any
) -> None:
    enable_loading_modal()
    slack_settings = {**settings.SILO_ROUTER["SLACK"], "AUTHORIZER": f"{__name__}.UnavailableAuthorizer"}
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": slack_settings}
    response = click(client, fake, workspaces[T1])
    assert response.status_code == 503
    assert json.loads(response.content)["error"] == "storage_unavailable"
    assert not Payload.objects.exists()
    assert fake.calls("views.open") == fake.calls("views.update") == []


def test_an_authorizer_that_cannot_be_imported_is_a_logged_503(
    client: Client, fake: FakeSlack, workspaces: dict[str, Installed], settings: Any
) -> None:
    slack_settings = {**settings.SILO_ROUTER["SLACK"], "AUTHORIZER": "no.such.module.Authorizer"}
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "SLACK": slack_settings}
    response = click(client, fake, workspaces[T1])
    assert (response.status_code, json.loads(response.content)["error"]) == (503, "not_configured")
    assert not Payload.objects.exists()
