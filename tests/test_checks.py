"""Every setting has a system check with a stable id and a hint."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import override_settings

from silo_router.checks import check_settings

BASE: dict[str, Any] = {
    "MODE": "control",
    "SIGNING_KEYS": {"k1": "k" * 40},
    "SIGNING_KEY_ID": "k1",
    "REGIONS": {"us": {"TRANSPORT": "http", "URL": "http://127.0.0.1:1/"}},
    "SLACK": {"SIGNING_SECRETS": ["s"], "BOT_TOKEN": "xoxb-1"},
}


def ids(config: Any) -> set[str]:
    with override_settings(SILO_ROUTER=config):
        messages = check_settings()
    assert all(m.hint for m in messages), "every message has a hint"
    return {m.id for m in messages}


def test_a_good_configuration_has_no_messages() -> None:
    assert ids(BASE) == set()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"MODE": "edge"}, "silo_router.E003"),
        ({"MODEE": "control"}, "silo_router.E002"),
        ({"DELIVERY_TIMEOUT": -1}, "silo_router.E004"),
        ({"MAX_BODY_SIZE": "big"}, "silo_router.E004"),
        ({"SYNC_SAFETY_MARGIN": 5}, "silo_router.E004"),
        ({"SIGNING_KEYS": {}}, "silo_router.E005"),
        ({"SIGNING_KEY_ID": "k9"}, "silo_router.E006"),
        ({"SIGNING_KEYS": {"k1": "short"}}, "silo_router.W001"),
        ({"REGIONS": {}}, "silo_router.E007"),
        ({"REGIONS": {"us": {"TRANSPORT": "htpp", "URL": "x"}}}, "silo_router.E008"),
        ({"REGIONS": {"us": {"TRANSPORT": "http"}}}, "silo_router.E009"),
        ({"URL_PREFIXES": {"extensions/slack": "slack"}}, "silo_router.E010"),
        ({"URL_PREFIXES": {"/x/": "slak"}}, "silo_router.E011"),
        ({"PROVIDERS": {"teams": "nowhere.Teams"}}, "silo_router.E012"),
        ({"ROUTES": {"slack.command": "later"}}, "silo_router.E013"),
        ({"FANOUT": {"slack.command": "some"}}, "silo_router.E014"),
        ({"RESOLVER": "nowhere.Resolver"}, "silo_router.E015"),
        ({"SLACK": {"BOT_TOKEN": "xoxb-1"}}, "silo_router.E016"),
        ({"SLACK": {"SIGNING_SECRETS": ["s"]}}, "silo_router.W003"),
        ({"MODE": "region", "SLACK": {}}, "silo_router.E017"),
        ({"MODE": "region", "REGION": "us", "HANDLER_MODULES": "app.handlers"}, "silo_router.E018"),
        ({"ATTEMPT_RETENTION": 0}, "silo_router.E004"),
        ({"TRACE_URL": "https://sentry.example.com/traces/"}, "silo_router.E029"),
        ({"TRACE_URL": "sentry.example.com/traces/{trace_id}/"}, "silo_router.E029"),
        ({"OPENTELEMETRY": "yes"}, "silo_router.E030"),
    ],
)
def test_each_problem_has_its_id(change: dict[str, Any], expected: str) -> None:
    assert expected in ids({**BASE, **change})


def test_a_trace_url_with_its_placeholder_and_a_tracing_switch_are_fine() -> None:
    assert ids({**BASE, "TRACE_URL": "https://sentry.example.com/traces/{trace_id}/", "OPENTELEMETRY": False}) == set()


def test_not_a_dict_is_e001() -> None:
    assert ids(["nope"]) == {"silo_router.E001"}


def test_did_you_mean_in_transport_error() -> None:
    with override_settings(SILO_ROUTER={**BASE, "REGIONS": {"us": {"TRANSPORT": "htpp", "URL": "x"}}}):
        (message,) = [m for m in check_settings() if m.id == "silo_router.E008"]
    assert "Did you mean 'http'?" in message.msg


PER_REGION: dict[str, Any] = {
    **BASE,
    "SIGNING_KEYS": {},
    "SIGNING_KEY_ID": None,
    "REGIONS": {
        "us": {"TRANSPORT": "http", "URL": "http://127.0.0.1:1/", "SIGNING_KEYS": {"us-1": "u" * 40}},
        "eu": {
            "TRANSPORT": "http",
            "URL": "http://127.0.0.1:2/",
            "SIGNING_KEYS": {"eu-1": "e" * 40, "eu-2": "f" * 40},
            "SIGNING_KEY_ID": "eu-2",
        },
    },
}


def test_a_key_per_region_needs_no_shared_key() -> None:
    assert ids(PER_REGION) == set()


@pytest.mark.parametrize(
    ("regions", "expected"),
    [
        ({"eu": {"TRANSPORT": "local", "SIGNING_KEYS": {"eu-1": ""}}}, "silo_router.E021"),
        ({"eu": {"TRANSPORT": "local", "SIGNING_KEYS": {"eu-1": "e" * 40, "eu-2": "f" * 40}}}, "silo_router.E021"),
        (
            {"eu": {"TRANSPORT": "local", "SIGNING_KEYS": {"eu-1": "e" * 40}, "SIGNING_KEY_ID": "eu-9"}},
            "silo_router.E021",
        ),
        ({"eu": {"TRANSPORT": "celery", "SIGNING_KEYS": {"eu-1": "u" * 40}}}, "silo_router.W004"),
        ({"eu": {"TRANSPORT": "local"}}, "silo_router.E005"),
    ],
)
def test_per_region_key_problems_have_their_ids(regions: dict[str, Any], expected: str) -> None:
    config = {**PER_REGION, "REGIONS": {"us": PER_REGION["REGIONS"]["us"], **regions}}
    assert expected in ids(config)


def test_regions_on_the_shared_fallback_key_are_warned_about() -> None:
    config = {**BASE, "REGIONS": {**BASE["REGIONS"], "eu": {"TRANSPORT": "celery"}}}
    assert ids(config) == {"silo_router.W004"}
    in_process = {**BASE, "REGIONS": {"us": {"TRANSPORT": "local"}, "eu": {"TRANSPORT": "local"}}}
    assert ids(in_process) == set()
