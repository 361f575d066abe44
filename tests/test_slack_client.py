"""Slack WebClients: the cache stays bounded, and each installation gets a client with its own credentials."""

from __future__ import annotations

import pytest
from django.test import override_settings
from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError

from silo_router.conf import conf
from silo_router.providers.base import Authorization, RoutingKeys
from silo_router.providers.handler_request import _transaction_open
from silo_router.providers.slack import client as slack_clients


def test_a_thousand_distinct_timeouts_do_not_build_a_thousand_clients() -> None:
    timeouts = [0.1 + n / 1000 for n in range(1000)]
    clients = [slack_clients.slack_client(timeout=t) for t in timeouts]
    assert [c.timeout for c in clients] == timeouts
    assert slack_clients._client.cache_info().currsize == 1


def test_one_client_per_token_url_and_retry_policy() -> None:
    assert slack_clients.slack_client() is slack_clients.slack_client()
    assert slack_clients.slack_client(rate_limit_retries=0) is not slack_clients.slack_client()
    assert slack_clients.slack_client(token="xoxb-other").token == "xoxb-other"
    assert slack_clients._client.cache_info().currsize == 3


# -- installation_client ---------------------------------------------------------------


TOKENS = {"7": "xoxb-installation-seven", "8": "xoxb-installation-eight"}


class TableAuthorizer:
    """An authorizer over a fixed table: installations 7 and 8."""

    def authorize(self, routing: RoutingKeys) -> Authorization | None:
        return None

    def for_installation(self, installation_id: str) -> Authorization | None:
        token = TOKENS.get(installation_id)
        return Authorization(installation_id=installation_id, token=token) if token else None


def table_settings(**changes: object) -> dict[str, object]:
    slack = {**conf._raw["SLACK"], "BOT_TOKEN": None, "AUTHORIZER": f"{__name__}.TableAuthorizer"}
    return {**conf._raw, "SLACK": slack, **changes}


def test_in_control_the_client_carries_the_installations_own_token() -> None:
    with override_settings(SILO_ROUTER=table_settings()):
        seven, eight = slack_clients.installation_client("7"), slack_clients.installation_client("8")
        assert (seven.token, eight.token) == (TOKENS["7"], TOKENS["8"])
        assert not isinstance(seven, slack_clients.ControlProxyClient)
        assert seven.base_url == conf.SLACK["API_URL"]


def test_many_installations_and_timeouts_share_one_cached_client() -> None:
    with override_settings(SILO_ROUTER=table_settings()):
        for n in range(200):
            slack_clients.installation_client("7" if n % 2 else "8", timeout=1 + n / 100)
        assert slack_clients._client.cache_info().currsize == 1
        shared = slack_clients._client("", conf.SLACK["API_URL"], 2)
        assert shared.token == ""  # copies carry the tokens, the cached client none


def test_an_unknown_installation_is_no_installation() -> None:
    with override_settings(SILO_ROUTER=table_settings()):
        with pytest.raises(slack_clients.NoInstallation):
            slack_clients.installation_client("9")
        with pytest.raises(slack_clients.NoInstallation):
            slack_clients.installation_client(None)


def test_a_single_token_app_uses_its_bot_token_for_no_installation() -> None:
    assert slack_clients.installation_client(None).token == conf.SLACK["BOT_TOKEN"]
    assert slack_clients.installation_client("").token == conf.SLACK["BOT_TOKEN"]


def test_refused_while_a_handler_transaction_is_open() -> None:
    marker = _transaction_open.set(True)
    try:
        with pytest.raises(slack_clients.SlackCallInTransaction):
            slack_clients.installation_client("")
    finally:
        _transaction_open.reset(marker)


def region_settings(**changes: object) -> dict[str, object]:
    return {
        **conf._raw,
        "MODE": "region",
        "REGION": "us",
        "CONTROL_URL": "http://control.internal:8000/",
        **changes,
    }


def test_in_a_region_the_client_is_a_proxy_client_bound_to_the_installation() -> None:
    with override_settings(SILO_ROUTER=region_settings()):
        client = slack_clients.installation_client("7", timeout=4.0)
        assert isinstance(client, slack_clients.ControlProxyClient)
        assert isinstance(client, WebClient)
        assert client.token is None
        assert client.base_url == "http://control.internal:8000/silo-router/slack-api/"
        assert (client.region, client.installation_id, client.timeout) == ("us", "7", 4.0)
        assert slack_clients.installation_client("8").installation_id == "8"
        assert client.installation_id == "7"  # each call gets its own copy
        assert slack_clients._proxy_client.cache_info().currsize == 1
        assert "tests-control-to-region-key" not in repr(client)


@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"CONTROL_URL": None}, "CONTROL_URL"),
        ({"REGION": None}, "REGION"),
        ({"SIGNING_KEY_ID": "k-missing"}, "SIGNING_KEY_ID"),
    ],
)
def test_a_region_that_cannot_reach_control_says_which_setting(changes: dict[str, object], names: str) -> None:
    with override_settings(SILO_ROUTER=region_settings(**changes)):
        with pytest.raises(slack_clients.NoInstallation, match=names):
            slack_clients.installation_client("7")


def test_no_installation_is_a_slack_client_error() -> None:
    assert issubclass(slack_clients.NoInstallation, SlackClientError)
