"""The Slack WebClient cache stays bounded whatever timeouts callers compute."""

from __future__ import annotations

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
