"""Operator options: edited through the admin's own form, typed, audited, seen fast."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from silo_router.control.models import Option, OptionChange
from silo_router.control.options import CONTROL_RESPONSE_ACTIONS, CONTROL_RESPONSES_ENABLED, DEFINITIONS, options

pytestmark = pytest.mark.django_db


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


@pytest.fixture
def staff_client() -> Client:
    User.objects.create_user("operator", password="pw-operator-1", is_staff=True, is_superuser=True)
    client = Client(enforce_csrf_checks=True)
    page = client.get("/admin/login/")
    response = client.post(
        "/admin/login/?next=/admin/",
        {
            "username": "operator",
            "password": "pw-operator-1",
            "csrfmiddlewaretoken": csrf_token(page.content.decode()),
            "next": "/admin/",
        },
    )
    assert response.status_code == 302
    return client


def edit_option(client: Client, key: str, value: Any) -> Any:
    option = Option.objects.get(key=key)
    url = f"/admin/silo_router_control/option/{option.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    data = {"csrfmiddlewaretoken": csrf_token(page.content.decode()), "_save": "Save"}
    if value is not None:
        data["value"] = value
    return client.post(url, data)


def test_every_option_has_a_row_after_migrate() -> None:
    assert set(Option.objects.values_list("key", flat=True)) == set(DEFINITIONS)


def test_staff_user_turns_control_responses_on_and_it_is_audited(staff_client: Client) -> None:
    assert options.get(CONTROL_RESPONSES_ENABLED) is False
    response = edit_option(staff_client, CONTROL_RESPONSES_ENABLED, "on")
    assert response.status_code == 302
    assert Option.objects.get(key=CONTROL_RESPONSES_ENABLED).value is True
    change = OptionChange.objects.get()
    assert (change.key, change.old_value, change.new_value, change.changed_by_repr) == (
        CONTROL_RESPONSES_ENABLED,
        False,
        True,
        "operator",
    )
    options.invalidate()
    assert options.get(CONTROL_RESPONSES_ENABLED) is True
    # Turning it off is an unchecked checkbox: no value in the POST.
    assert edit_option(staff_client, CONTROL_RESPONSES_ENABLED, None).status_code == 302
    assert Option.objects.get(key=CONTROL_RESPONSES_ENABLED).value is False
    assert OptionChange.objects.count() == 2


def test_list_option_is_validated(staff_client: Client) -> None:
    response = edit_option(staff_client, CONTROL_RESPONSE_ACTIONS, "resolve_dialog\narchive_dialog\n\n")
    assert response.status_code == 302
    assert Option.objects.get(key=CONTROL_RESPONSE_ACTIONS).value == ["resolve_dialog", "archive_dialog"]
    response = edit_option(staff_client, CONTROL_RESPONSE_ACTIONS, "resolve_dialog\nresolve_dialog")
    assert response.status_code == 200  # the form again, with the error
    assert b"must not repeat an entry" in response.content
    assert Option.objects.get(key=CONTROL_RESPONSE_ACTIONS).value == ["resolve_dialog", "archive_dialog"]


def test_options_cannot_be_added_or_deleted_and_history_is_read_only(staff_client: Client) -> None:
    assert staff_client.get("/admin/silo_router_control/option/add/").status_code == 403
    option = Option.objects.first()
    assert option is not None
    assert staff_client.get(f"/admin/silo_router_control/option/{option.pk}/delete/").status_code == 403
    assert staff_client.get("/admin/silo_router_control/optionchange/add/").status_code == 403


def test_values_are_read_from_memory_between_refreshes(django_assert_num_queries: Any, settings: Any) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "OPTIONS_REFRESH_INTERVAL": 60}
    options.invalidate()
    with django_assert_num_queries(1):
        for _ in range(100):
            options.get(CONTROL_RESPONSES_ENABLED)
    Option.objects.filter(key=CONTROL_RESPONSES_ENABLED).update(value=True)
    assert options.get(CONTROL_RESPONSES_ENABLED) is False  # still the snapshot
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "OPTIONS_REFRESH_INTERVAL": 0.0001}
    assert options.get(CONTROL_RESPONSES_ENABLED) is True  # the next refresh sees it


def test_an_invalid_stored_value_falls_back_to_the_default() -> None:
    Option.objects.filter(key=CONTROL_RESPONSES_ENABLED).update(value="yes please")
    options.invalidate()
    assert options.get(CONTROL_RESPONSES_ENABLED) is False


def test_the_lists_show_values_as_an_operator_reads_them(staff_client: Client) -> None:
    listed = staff_client.get("/admin/silo_router_control/option/").content.decode()
    assert re.search(r'<td class="field-shown_value">off</td>', listed)
    assert re.search(r'<td class="field-shown_value">\(none\)</td>', listed)  # the empty action list
    edit_option(staff_client, CONTROL_RESPONSES_ENABLED, "on")
    edit_option(staff_client, CONTROL_RESPONSE_ACTIONS, "resolve_dialog\nassign")
    listed = staff_client.get("/admin/silo_router_control/option/").content.decode()
    assert re.search(r'<td class="field-shown_value">on</td>', listed)
    assert re.search(r'<td class="field-shown_value">resolve_dialog, assign</td>', listed)
    changes = staff_client.get("/admin/silo_router_control/optionchange/").content.decode()
    assert "Changed by repr" not in changes
    assert re.search(r'<td class="field-shown_old_value">off</td><td class="field-shown_new_value">on</td>', changes)
    assert re.search(r'<td class="field-changed_by_name">operator</td>', changes)
