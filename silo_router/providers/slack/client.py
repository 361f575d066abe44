"""Slack Web API clients built from settings.

One ``WebClient`` is kept per (token, API URL, 429 retries); a call with another
timeout gets a shallow copy of it, so the cache stays bounded whatever timeouts callers
compute (the request path derives them from what is left of Slack's 3 seconds).
"""

from __future__ import annotations

import copy

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from silo_router.conf import conf
from silo_router.plugins import cached
from silo_router.providers.handler_request import handler_transaction_open

#: Seconds a Web API call may take unless the caller says otherwise.
DEFAULT_TIMEOUT = 10.0


class SlackCallInTransaction(RuntimeError):
    """A handler called Slack while its database transaction is open."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} was called while the handler's database transaction is open, which would hold "
            "its locks across a network call. Reply with request.respond() or request.update_view() "
            "(they run after commit), wrap the call in request.after_commit(lambda: ...), or register "
            "the handler with atomic=False."
        )


@cached
def _client(token: str, base_url: str, rate_limit_retries: int) -> WebClient:
    handlers = [RateLimitErrorRetryHandler(max_retry_count=rate_limit_retries)] if rate_limit_retries else []
    return WebClient(token=token, base_url=base_url, timeout=DEFAULT_TIMEOUT, retry_handlers=handlers)  # type: ignore[arg-type]


def slack_client(
    *, timeout: float = DEFAULT_TIMEOUT, rate_limit_retries: int | None = None, token: str | None = None
) -> WebClient:
    """A ``WebClient`` for the configured bot token and API URL.

    429 answers are retried after their ``Retry-After`` up to ``RATE_LIMIT_RETRIES``
    times (``rate_limit_retries=0`` for calls that must not wait, such as
    ``views.open`` with a trigger that dies in 3 seconds). Refused with
    ``SlackCallInTransaction`` while a region handler's transaction is open.
    """
    if handler_transaction_open():
        raise SlackCallInTransaction("A Slack client")
    slack = conf.SLACK
    retries = int(slack["RATE_LIMIT_RETRIES"]) if rate_limit_retries is None else rate_limit_retries
    shared: WebClient = _client(token or slack["BOT_TOKEN"] or "", str(slack["API_URL"]), retries)
    if timeout == shared.timeout:
        return shared
    timed = copy.copy(shared)
    timed.timeout = timeout  # type: ignore[assignment]
    return timed
