"""Slack Web API clients built from settings.

One ``WebClient`` is kept per (token, API URL, 429 retries); a call with another
timeout gets a shallow copy of it, so the cache stays bounded whatever timeouts callers
compute (the request path derives them from what is left of Slack's 3 seconds).

:func:`installation_client` is the client of one installation. In control (and a
monolith) it carries the installation's bot token, found by the configured authorizer.
A region holds no token: its client is a :class:`ControlProxyClient`, an ordinary
``WebClient`` whose base URL is control's Web API proxy and which signs every request
with the region's own hop key, naming the installation; control adds the token. Either
way the whole Web API is available, method by method, as slack_sdk knows it.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.request import Request

from slack_sdk import WebClient
from slack_sdk.errors import SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.http_retry.handler import RetryHandler

from silo_router.conf import conf
from silo_router.plugins import cached
from silo_router.providers.handler_request import handler_transaction_open

from .authorization import authorizer
from .proxy_signing import METHOD_RE, sign_call

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


class NoInstallation(SlackClientError):
    """No client can call Slack for this installation (unknown, deactivated, or control unreachable by settings)."""


class ControlProxyClient(WebClient):
    """A ``WebClient`` that calls Slack through control's Web API proxy, as one installation.

    It holds no token. Each HTTP attempt (429 retries included) is signed anew over its
    exact body with the region's hop key, so a retry after ``Retry-After`` is not
    refused as a replay and a body changed in transit is refused.
    """

    def __init__(
        self,
        *,
        base_url: str,
        region: str,
        key_id: str,
        key: str,
        installation_id: str = "",
        timeout: float = DEFAULT_TIMEOUT,
        retry_handlers: list[RetryHandler] | None = None,
    ) -> None:
        super().__init__(token=None, base_url=base_url, timeout=timeout, retry_handlers=retry_handlers)  # type: ignore[arg-type]
        self.region = region
        self.installation_id = installation_id
        self._key_id = key_id
        self._key = key

    def __repr__(self) -> str:
        return f"<ControlProxyClient {self.base_url} region={self.region} installation={self.installation_id!r}>"

    def bound_to(self, installation_id: str, *, timeout: float | None = None) -> ControlProxyClient:
        """A shallow copy of this client for ``installation_id`` (and ``timeout``)."""
        bound = copy.copy(self)
        bound.installation_id = installation_id
        if timeout is not None:
            bound.timeout = timeout  # type: ignore[assignment]
        return bound

    def _perform_urllib_http_request_internal(self, url: str, req: Request) -> dict[str, Any]:
        method = url[len(self.base_url) :].split("?", 1)[0] if url.startswith(self.base_url) else ""
        if not METHOD_RE.match(method):
            raise SlackClientError(f"{url!r} does not name a Web API method under the control proxy.")
        body = req.data if isinstance(req.data, bytes) else b""
        for name, value in sign_call(
            method=method,
            installation_id=self.installation_id,
            region=self.region,
            body=body,
            key_id=self._key_id,
            key=self._key,
        ).items():
            req.add_header(name, value)
        req.remove_header("Authorization")  # a region has no token; control attaches the installation's
        response: dict[str, Any] = super()._perform_urllib_http_request_internal(url, req)
        return response


def _retry_handlers(rate_limit_retries: int) -> list[RetryHandler]:
    return [RateLimitErrorRetryHandler(max_retry_count=rate_limit_retries)] if rate_limit_retries else []


@cached
def _client(token: str, base_url: str, rate_limit_retries: int) -> WebClient:
    return WebClient(
        token=token,
        base_url=base_url,
        timeout=DEFAULT_TIMEOUT,  # type: ignore[arg-type]
        retry_handlers=_retry_handlers(rate_limit_retries),
    )


@cached
def _proxy_client(base_url: str, region: str, key_id: str, rate_limit_retries: int) -> ControlProxyClient:
    return ControlProxyClient(
        base_url=base_url,
        region=region,
        key_id=key_id,
        key=conf.signing_keys_for(region)[key_id],
        retry_handlers=_retry_handlers(rate_limit_retries),
    )


def _timed(shared: WebClient, timeout: float, **attributes: Any) -> WebClient:
    """``shared`` itself, or a shallow copy with ``timeout`` and ``attributes`` set."""
    if timeout == shared.timeout and not attributes:
        return shared
    timed = copy.copy(shared)
    timed.timeout = timeout  # type: ignore[assignment]
    for name, value in attributes.items():
        setattr(timed, name, value)
    return timed


def _retries(rate_limit_retries: int | None) -> int:
    return int(conf.SLACK["RATE_LIMIT_RETRIES"]) if rate_limit_retries is None else rate_limit_retries


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
    shared: WebClient = _client(token or slack["BOT_TOKEN"] or "", str(slack["API_URL"]), _retries(rate_limit_retries))
    return _timed(shared, timeout)


def installation_client(
    installation_id: str | None, *, timeout: float = DEFAULT_TIMEOUT, rate_limit_retries: int | None = None
) -> WebClient:
    """A ``WebClient`` that calls Slack as the installation ``installation_id``.

    Control and a monolith: a client with the installation's bot token (``""`` or
    ``None`` is the single token of a ``BOT_TOKEN`` app). A region: a
    :class:`ControlProxyClient` to ``CONTROL_URL``. Raises :class:`NoInstallation` when the
    installation is unknown or deactivated, or a region cannot reach control by its
    settings; ``SlackCallInTransaction`` while a handler's transaction is open. Retries
    429 answers like :func:`slack_client`.
    """
    if handler_transaction_open():
        raise SlackCallInTransaction("A Slack client")
    retries = _retries(rate_limit_retries)
    if conf.MODE == "region":
        return _region_client(installation_id or "", timeout=timeout, rate_limit_retries=retries)
    authorization = authorizer().for_installation(installation_id or "")
    if authorization is None:
        raise NoInstallation(f"Installation {installation_id or ''!r} is unknown or deactivated in control.")
    shared = _client("", str(conf.SLACK["API_URL"]), retries)
    return _timed(shared, timeout, token=authorization.token)


def _region_client(installation_id: str, *, timeout: float, rate_limit_retries: int) -> ControlProxyClient:
    url = conf.web_api_proxy_url
    if url is None:
        raise NoInstallation(
            "SILO_ROUTER['CONTROL_URL'] is not set: a region calls Slack through control's Web API proxy, "
            "so handlers cannot call Slack without it."
        )
    region = conf.REGION
    key_id = conf.signing_key_id_for(region) if region else None
    if not region or not key_id or key_id not in conf.signing_keys_for(region):
        raise NoInstallation(
            "A region signs its Slack calls with its own hop key: set SILO_ROUTER['REGION'], "
            "SIGNING_KEYS and SIGNING_KEY_ID."
        )
    shared: ControlProxyClient = _proxy_client(url, region, key_id, rate_limit_retries)
    return shared.bound_to(installation_id, timeout=timeout)
