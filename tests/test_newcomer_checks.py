"""A new user's mistakes each get a check that names them: nested typos, wrong types, the runner, the middleware."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from django.core.checks import CheckMessage
from django.test import override_settings

from silo_router.checks import check_settings
from silo_router.control import checks as control_checks

from .test_checks import BASE

MIDDLEWARE = "silo_router.control.middleware.SiloRouterMiddleware"


def messages(config: dict[str, Any], **django_settings: Any) -> list[CheckMessage]:
    with override_settings(SILO_ROUTER=config, **django_settings):
        found = check_settings() + control_checks.check_runner() + control_checks.check_middleware()
    assert all(m.hint for m in found), "every message has a hint"
    return found


def of(found: list[CheckMessage], check_id: str) -> list[str]:
    return [f"{m.msg} {m.hint}" for m in found if m.id == check_id]


@pytest.mark.parametrize(
    ("slack_key", "suggestion"),
    [("SIGNING_SECRET", "SIGNING_SECRETS"), ("TIMESTAMP_TOLERENCE", "TIMESTAMP_TOLERANCE"), ("BOT_TOKNE", "BOT_TOKEN")],
)
def test_a_typo_inside_slack_is_an_error_with_did_you_mean(slack_key: str, suggestion: str) -> None:
    (text,) = of(messages({**BASE, "SLACK": {**BASE["SLACK"], slack_key: "x"}}), "silo_router.E034")
    assert f"SILO_ROUTER['SLACK'] has an unknown key {slack_key!r}" in text
    assert f"Did you mean {suggestion!r}?" in text


@pytest.mark.parametrize(("region_key", "suggestion"), [("CONECT_TIMEOUT", "CONNECT_TIMEOUT"), ("url", "URL")])
def test_a_typo_inside_a_region_entry_is_an_error_with_did_you_mean(region_key: str, suggestion: str) -> None:
    region = {"TRANSPORT": "http", "URL": "http://127.0.0.1:1/", region_key: 1}
    (text,) = of(messages({**BASE, "REGIONS": {"us": region}}), "silo_router.E034")
    assert f"SILO_ROUTER['REGIONS']['us'] has an unknown key {region_key!r} (http)" in text
    assert f"Did you mean {suggestion!r}?" in text


def test_a_custom_transport_may_take_keys_of_its_own() -> None:
    region = {"TRANSPORT": "silo_router.transports.http.HttpTransport", "URL": "http://127.0.0.1:1/", "POOL": 4}
    assert not of(messages({**BASE, "REGIONS": {"us": region}}), "silo_router.E034")


@pytest.mark.parametrize(("value", "named"), [("s3cret", "not str"), ({"a": "b"}, "not dict")])
def test_signing_secrets_of_the_wrong_type_are_named_as_such_not_as_missing(value: Any, named: str) -> None:
    (text,) = of(messages({**BASE, "SLACK": {**BASE["SLACK"], "SIGNING_SECRETS": value}}), "silo_router.E016")
    assert "must be a list of signing secrets" in text and named in text
    assert "missing" not in text


def test_signing_secrets_left_out_are_named_missing() -> None:
    (text,) = of(messages({**BASE, "SLACK": {"BOT_TOKEN": "xoxb-1"}}), "silo_router.E016")
    assert "is missing" in text


def test_handler_modules_as_a_string_says_how_to_write_the_list() -> None:
    config = {**BASE, "MODE": "region", "REGION": "us", "HANDLER_MODULES": "tickets.slack_handlers"}
    (text,) = of(messages(config), "silo_router.E018")
    assert "not str" in text and "['tickets.slack_handlers']" in text


def test_with_no_broker_the_embedded_runner_is_active_and_said_so(settings: Any) -> None:
    del settings.CELERY_BROKER_URL
    found = messages(BASE)
    (text,) = of(found, "silo_router.I001")
    assert "embedded runner" in text
    assert not [m for m in found if m.is_serious()]


def test_with_a_broker_and_an_app_celery_is_active_and_said_so() -> None:
    (text,) = of(messages(BASE, CELERY_BROKER_URL="redis://127.0.0.1:6379/0"), "silo_router.I001")
    assert "run on Celery" in text


def test_the_celery_runner_with_no_broker_is_an_error(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    del settings.CELERY_BROKER_URL
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)
    found = messages({**BASE, "RUNNER": "celery"})
    (text,) = of(found, "silo_router.E036")
    assert "no Celery broker is configured" in text and "CELERY_BROKER_URL" in text
    assert not of(found, "silo_router.I001")


def test_the_celery_runner_without_celery_installed_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "celery" else real(name, *a))
    (text,) = of(messages({**BASE, "RUNNER": "celery"}), "silo_router.E036")
    assert "Celery is not installed" in text and "[celery]" in text


def test_a_broker_with_no_project_celery_app_is_warned(monkeypatch: pytest.MonkeyPatch) -> None:
    from celery import Celery, _state

    fallback = Celery("default", fixups=[], set_as_current=False)
    monkeypatch.setattr(_state, "_get_active_apps", lambda: [fallback])
    (text,) = of(messages(BASE, CELERY_BROKER_URL="redis://127.0.0.1:6379/0"), "silo_router.W010")
    assert "no Celery app of this project is loaded" in text and "namespace='CELERY'" in text


def test_an_unknown_runner_is_an_error_with_did_you_mean() -> None:
    (text,) = of(messages({**BASE, "RUNNER": "embeded"}), "silo_router.E035")
    assert "Did you mean 'embedded'?" in text


def test_the_middleware_first_has_no_warning() -> None:
    found = messages(BASE, MIDDLEWARE=[MIDDLEWARE, "django.middleware.common.CommonMiddleware"])
    assert not of(found, "silo_router.W011")


def test_the_middleware_after_django_middleware_is_warned_as_not_first() -> None:
    found = messages(BASE, MIDDLEWARE=["django.middleware.security.SecurityMiddleware", MIDDLEWARE])
    (text,) = of(found, "silo_router.W011")
    assert "is not first" in text and "SecurityMiddleware" in text


def test_the_middleware_after_a_project_middleware_is_warned_about_the_body() -> None:
    found = messages(BASE, MIDDLEWARE=["acme.middleware.LogBodyMiddleware", MIDDLEWARE])
    (text,) = of(found, "silo_router.W011")
    assert "acme.middleware.LogBodyMiddleware" in text and "body" in text


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["manage.py", "check"], True),
        (["manage.py", "runserver"], True),
        (["/usr/lib/python3/site-packages/django/__main__.py", "check"], True),
        (["manage.py", "migrate"], False),
        (["django-admin", "createsuperuser"], False),
        (["manage.py", "silo_router_map", "T1"], False),
    ],
)
def test_which_runner_is_said_by_check_and_runserver_not_by_every_command(
    argv: list[str], said: bool, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    del settings.CELERY_BROKER_URL
    monkeypatch.setattr("sys.argv", argv)
    assert bool(of(messages(BASE), "silo_router.I001")) is said
