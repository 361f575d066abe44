"""Run an existing ``slack_bolt.App`` in a region silo, unchanged.

A region receives Slack requests as envelopes that control verified and signed. This
module hands each one to a Bolt app through Bolt's own dispatch, so its listeners,
matchers, global and listener middleware, error handlers and lazy listeners run as they
do behind Bolt's HTTP adapters::

    # myproj/slack_region.py, listed in SILO_ROUTER["HANDLER_MODULES"]
    from silo_router.region.bolt import mount

    from myproj.slack_app import app  # the Bolt app, as it is

    mount(app)

What ``mount`` changes in the app (as Bolt's own adapters change its listener runner):

- **Verification.** The envelope was verified (Slack's signature in control, the hop's
  signature here), so requests reach Bolt as ``mode="socket_mode"``, the mode in which
  Bolt's ``RequestVerification`` skips the signature check. A region has no signing
  secret.
- **Authorization.** Bolt's ``SingleTeamAuthorization`` / ``MultiTeamsAuthorization``
  step is replaced by :class:`ControlAuthorization`: ``context.client`` is the
  installation's client through control's Web API proxy (the client a native handler
  gets as ``request.client``), ``authorize_result`` carries the bot's ids and scopes from
  control's installation record, and no token is ever in the context. Bolt's own ``say``
  uses that client; ``respond`` is :class:`RegionRespond` (the response_url with this
  library's fallbacks: a private reply never goes public); ``ack`` is :class:`RegionAck`.
- **Timing.** Listeners run to completion inside the envelope's handler (as with Bolt's
  ``process_before_response=True``), so a listener that raises is a handler failure that
  control retries, and ``ack()`` answers a synchronous kind (options loads, view
  submissions) with the Bolt response the listener produced. Lazy listeners run after
  the receipt has gone back to control, in the same process, once.

The handler is registered for every request type control forwards (``ROUTES``), with
``atomic=False``: Bolt listeners call Slack while they run, so they run outside a
database transaction (at least once). A native handler for a particular ``type:name``
still wins over the Bolt app.
"""

from __future__ import annotations

import contextvars
import json
import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

try:
    from slack_bolt import Ack, App, BoltRequest, BoltResponse, Respond, Say
except ImportError as exc:  # pragma: no cover - the optional extra is missing
    raise ImportError("silo_router.region.bolt needs slack-bolt: pip install 'django-silo-router[bolt]'") from exc
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.lazy_listener import LazyListenerRunner
from slack_bolt.listener.thread_runner import ThreadListenerRunner
from slack_bolt.middleware.authorization import Authorization, SingleTeamAuthorization
from slack_bolt.util.utils import convert_to_dict, convert_to_dict_list
from slack_sdk import WebClient
from slack_sdk.webhook import WebhookResponse

from silo_router.conf import conf
from silo_router.exceptions import SiloRouterConfigurationError
from silo_router.providers.slack.client import NoInstallation
from silo_router.providers.slack.request import SlackHandlerRequest
from silo_router.routing import Strategy

from .handlers import ANY, SlackHandlers, slack

logger = logging.getLogger("silo_router.region.bolt")

__all__ = [
    "BoltAppFailed",
    "ControlAuthorization",
    "RegionAck",
    "RegionRespond",
    "dispatch",
    "forwarded_types",
    "message_of",
    "mount",
]

#: Request types whose ``ack()`` message Slack shows to the user: posted through the response_url when async.
ACK_MESSAGE_TYPES = frozenset({"command"})
#: Bolt's answer when no listener matched the request.
UNHANDLED_STATUS = 404

#: The handler request of the envelope being dispatched on this thread (or task).
_current: contextvars.ContextVar[SlackHandlerRequest | None] = contextvars.ContextVar(
    "silo_router_bolt_request", default=None
)
#: The catch-all handler of each mounted app, so mounting twice registers the same function.
_handlers: weakref.WeakKeyDictionary[App, Callable[[SlackHandlerRequest], dict[str, Any] | None]] = (
    weakref.WeakKeyDictionary()
)


class BoltAppFailed(Exception):
    """The Bolt app answered an envelope with a server error (a listener or middleware raised).

    Raised from the region handler, so control keeps the payload and retries it, as Slack
    retries an event a Bolt app answered with 500.
    """


# -- registration ------------------------------------------------------------------------------


def mount(app: App, *, registry: SlackHandlers | None = None) -> App:
    """Serve every Slack request this region receives with ``app``; returns ``app``.

    Call it in a module listed in ``SILO_ROUTER["HANDLER_MODULES"]``. Registers one
    handler (``atomic=False``) for each type in :func:`forwarded_types` on ``registry``
    (the region's ``slack`` registry by default); handlers registered for a particular
    ``type:name`` keep precedence. Mounting the same app again changes nothing; another
    app on the same registry is a ``SiloRouterConfigurationError``, as two handlers for
    one kind are.
    """
    _prepare(app)
    registry = slack if registry is None else registry
    handler = _handlers.get(app)
    if handler is None:
        handler = _handler_for(app)
        _handlers[app] = handler
    types = forwarded_types(registry.provider)
    registered = registry.registered()
    taken = [t for t in types if (t, ANY) in registered and registered[(t, ANY)].handler is not handler]
    if taken:  # refused before anything is registered
        raise SiloRouterConfigurationError(
            f"Cannot mount the Bolt app {app.name}: {', '.join(f'{t}:{ANY}' for t in taken)} already has a "
            f"{registry.provider} handler ({registered[(taken[0], ANY)].name})."
        )
    for request_type in types:
        registry.on(request_type, ANY, atomic=False)(handler)
    return app


def forwarded_types(provider: str = "slack") -> tuple[str, ...]:
    """The request types of ``provider`` that control forwards to regions (``async`` or ``sync`` in ``ROUTES``)."""
    forwarded = {str(Strategy.ASYNC), str(Strategy.SYNC)}
    found: set[str] = set()
    for key, strategy in conf.ROUTES.items():
        prefix, _, kind = str(key).partition(".")
        if prefix == provider and kind and str(strategy) in forwarded:
            found.add(kind.partition(":")[0])
    return tuple(sorted(found))


def _handler_for(app: App) -> Callable[[SlackHandlerRequest], dict[str, Any] | None]:
    def bolt_app(request: SlackHandlerRequest) -> dict[str, Any] | None:
        return dispatch(app, request)

    bolt_app.__qualname__ = f"bolt_app[{app.name}]"
    return bolt_app


def _prepare(app: App) -> None:
    """Make ``app`` dispatch envelopes: control's authorization, listeners run in the handler."""
    if not isinstance(app, App):
        raise TypeError(f"mount() takes a slack_bolt.App, not {type(app).__name__} (AsyncApp is not supported)")
    middleware = getattr(app, "_middleware_list", None)
    if not isinstance(middleware, list):
        raise SiloRouterConfigurationError("This slack_bolt version keeps no middleware list that mount() can adapt.")
    steps = [index for index, step in enumerate(middleware) if isinstance(step, Authorization)]
    if not any(isinstance(middleware[index], ControlAuthorization) for index in steps):
        if len(steps) != 1:
            raise SiloRouterConfigurationError(
                f"The Bolt app has {len(steps)} authorization steps; mount() replaces exactly one."
            )
        step = middleware[steps[0]]
        if conf.MODE == "region" and isinstance(step, SingleTeamAuthorization) and step.auth_test_result is not None:
            raise SiloRouterConfigurationError(
                "The Bolt app verified its token with Slack (auth.test) when it was built, so this region holds a "
                "working Slack token, which a region must not. Remove SLACK_BOT_TOKEN from the region and set "
                "SLACK_CLIENT_ID and SLACK_CLIENT_SECRET to placeholders (docs/bolt.md)."
            )
        middleware[steps[0]] = ControlAuthorization()
        if conf.MODE == "region" and getattr(app, "_token", None):
            logger.warning(
                "the Bolt app %s was given a Slack token, which this region never uses: remove SLACK_BOT_TOKEN "
                "from the region's environment (docs/bolt.md)",
                app.name,
            )
    runner = app.listener_runner
    if not isinstance(runner, ThreadListenerRunner):
        raise SiloRouterConfigurationError("mount() needs the Bolt app's default ThreadListenerRunner.")
    runner.process_before_response = True  # the listener's run is the envelope's run
    if not isinstance(runner.lazy_listener_runner, AfterReceiptLazyRunner):
        runner.lazy_listener_runner = AfterReceiptLazyRunner(runner.logger)


# -- dispatch ----------------------------------------------------------------------------------


def dispatch(app: App, request: SlackHandlerRequest) -> dict[str, Any] | None:
    """Run ``app`` on the envelope of ``request``; the answer of a synchronous kind, else ``None``.

    The BoltRequest is the envelope's original body and forwarded headers. A 2xx Bolt
    response is the answer (its JSON object, or ``{"text": ...}`` for a plain-text
    ack); 404 (no listener matched) is no answer; 5xx raises :class:`BoltAppFailed`.
    """
    _prepare(app)
    envelope = request.envelope
    sync = envelope.strategy == Strategy.SYNC
    bolt_request = BoltRequest(
        body=envelope.body,
        headers=dict(envelope.headers),
        context={"logger": app.logger, "ack": RegionAck(request, sync=sync), "respond": RegionRespond(request)},
        mode="socket_mode",  # verified already: Bolt's RequestVerification skips this mode
    )
    token = _current.set(request)
    try:
        response = app.dispatch(bolt_request)
    finally:
        _current.reset(token)
    return _answer(response, request, sync=sync)


def _answer(response: BoltResponse, request: SlackHandlerRequest, *, sync: bool) -> dict[str, Any] | None:
    status = response.status
    if 200 <= status < 300:
        return message_of(response) if sync else None
    if status == UNHANDLED_STATUS:
        logger.info("no listener of the Bolt app matched %s; nothing to do", request.kind)
        return None
    if status >= 500:
        raise BoltAppFailed(f"the Bolt app answered HTTP {status} to {request.kind}")
    logger.warning("the Bolt app answered HTTP %s to %s; Slack gets no answer from it", status, request.kind)
    return None


def message_of(response: BoltResponse) -> dict[str, Any] | None:
    """A Bolt response's body as an answer: its JSON object, ``{"text": body}`` for text, ``None`` if empty."""
    body = response.body
    if not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    return data if isinstance(data, dict) else {"text": body}


# -- authorization -----------------------------------------------------------------------------


class ControlAuthorization(Authorization):
    """Bolt's authorization step in a region: the installation control named, and no token.

    Sets ``authorize_result`` (team, enterprise, user, the bot's ids and scopes from
    control's installation record; ``bot_token`` and ``user_token`` stay ``None``),
    ``context.client`` (the installation's client, through control's Web API proxy in
    a region) and ``organization_id``, ``organization_ids`` and ``installation_id``,
    which listeners can take as arguments like any context key. Outside an envelope's
    dispatch (a Bolt HTTP adapter left in place) it refuses the request with a 500.
    """

    def process(self, *, req: BoltRequest, resp: BoltResponse, next: Callable[[], BoltResponse]) -> BoltResponse | None:
        request = _current.get()
        if request is None:
            logger.error("a mounted Bolt app only serves envelopes: a request reached it another way and was refused")
            return BoltResponse(status=500, body="")
        facts = request.context
        req.context.set_authorize_result(
            AuthorizeResult(
                enterprise_id=req.context.enterprise_id,
                team_id=req.context.team_id,
                bot_id=facts.bot_id,
                bot_user_id=facts.bot_user_id,
                bot_scopes=list(facts.scopes) or None,
                user_id=req.context.user_id,
            )
        )
        req.context["token"] = None
        client = _client_of(request)
        req.context["client"] = client
        say = req.context.get("say")
        if isinstance(say, Say) and say.client is not client:  # built before this step, with Bolt's own client
            del req.context["say"]
        req.context["installation_id"] = request.installation_id
        req.context["organization_id"] = request.organization_id
        req.context["organization_ids"] = list(request.organization_ids)
        return next()


def _client_of(request: SlackHandlerRequest) -> WebClient:
    """The installation's client; one that refuses every call when there is none (an uninstall's events)."""
    try:
        return request.client
    except NoInstallation as exc:
        logger.warning("%s reached the Bolt app without a usable installation: %s", request.kind, exc)
        return _NoClient(str(exc))


class _NoClient(WebClient):
    """A client for a request whose installation is gone: every call raises ``NoInstallation``."""

    def __init__(self, reason: str) -> None:
        super().__init__(token=None)
        self._reason = reason

    def api_call(self, *args: Any, **kwargs: Any) -> Any:
        raise NoInstallation(self._reason)


# -- ack and respond ---------------------------------------------------------------------------


class RegionAck(Ack):
    """Bolt's ``ack`` for an envelope: the response it builds is the answer of a synchronous kind.

    Control acknowledged an asynchronous kind already; the message of a slash command's
    ``ack(text)`` (which Slack would show the user) is then posted through the
    command's response_url at once, ephemeral unless ``response_type="in_channel"``.
    Any other asynchronous kind's ack body is ignored, as Slack ignores it.
    """

    def __init__(self, request: SlackHandlerRequest, *, sync: bool) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._request = request
        self._sync = sync

    def __call__(self, *args: Any, **kwargs: Any) -> BoltResponse:
        response = super().__call__(*args, **kwargs)
        if not self._sync:
            message = message_of(response)
            if message is not None and self._request.inbound.type in ACK_MESSAGE_TYPES:
                _respond_now(self._request, message)
            elif message is not None:
                logger.debug("the ack body of %s is ignored: control acknowledged it already", self._request.kind)
        return response

    def __deepcopy__(self, memo: dict[int, Any]) -> Ack:
        # A lazy listener's copy of the request: its ack() answers nothing, as in Bolt.
        return Ack()  # type: ignore[no-untyped-call]


class RegionRespond(Respond):
    """Bolt's ``respond`` through this library's response_url handling, now.

    The post counts against the response_url's 5 uses (across attempts and handlers);
    when the URL is stale, used up, failing or absent, an ephemeral reply goes to the
    user with ``chat.postEphemeral`` and never to the channel, ``in_channel`` with
    ``chat.postMessage``, ``replace_original`` / ``delete_original`` with ``chat.update``
    / ``chat.delete``. Returns a ``WebhookResponse``: 200 when the reply went out one way
    or another, else 500 with the error (a failure is also logged at ERROR); its ``url``
    is empty, so the capability is not passed around.
    """

    def __init__(self, request: SlackHandlerRequest) -> None:
        super().__init__(response_url=request.inbound.response_url)
        self._request = request

    def __call__(
        self,
        text: str | dict[str, Any] = "",
        blocks: Sequence[Any] | None = None,
        attachments: Sequence[Any] | None = None,
        response_type: str | None = None,
        replace_original: bool | None = None,
        delete_original: bool | None = None,
        unfurl_links: bool | None = None,
        unfurl_media: bool | None = None,
        thread_ts: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> WebhookResponse:
        if isinstance(text, Mapping):
            message = _whole_message(text)
        elif isinstance(text, str):
            options = {
                "response_type": response_type,
                "replace_original": replace_original,
                "delete_original": delete_original,
                "unfurl_links": unfurl_links,
                "unfurl_media": unfurl_media,
                "thread_ts": thread_ts,
            }
            message = {"text": text, **{name: value for name, value in options.items() if value is not None}}
            if blocks:
                message["blocks"] = convert_to_dict_list(blocks)
            if attachments:
                message["attachments"] = convert_to_dict_list(attachments)
            if metadata is not None:
                message["metadata"] = convert_to_dict(metadata)
        else:
            raise ValueError(f"The arg is unexpected type ({type(text)})")
        return _respond_now(self._request, message)

    def __deepcopy__(self, memo: dict[int, Any]) -> RegionRespond:
        return self


def _whole_message(message: Mapping[str, Any]) -> dict[str, Any]:
    whole = dict(message)
    for name in ("blocks", "attachments"):
        if whole.get(name):
            whole[name] = convert_to_dict_list(whole[name])
    if whole.get("metadata") is not None:
        whole["metadata"] = convert_to_dict(whole["metadata"])
    return whole


def _respond_now(request: SlackHandlerRequest, message: Mapping[str, Any]) -> WebhookResponse:
    """Post ``message`` as a ``respond()`` reply of ``request`` now; Slack's default ``response_type`` is ephemeral."""
    result = request.respond_now(message)
    if result.ok:
        return WebhookResponse(url="", status_code=200, body="ok", headers={})
    return WebhookResponse(url="", status_code=500, body=result.error or "failed", headers={})


# -- lazy listeners ----------------------------------------------------------------------------


class AfterReceiptLazyRunner(LazyListenerRunner):
    """Runs a Bolt lazy listener once the envelope's receipt has gone back to control.

    In the same process and thread (``request.after_commit``), in a flow that continues
    the handler's trace; it runs once: its failure is logged (by Bolt) and not retried.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def start(self, function: Callable[..., None], request: BoltRequest) -> None:
        current = _current.get()

        def lazy_listener() -> None:
            self.run(function=function, request=request)

        lazy_listener.__qualname__ = f"bolt lazy listener {getattr(function, '__name__', type(function).__name__)}"
        if current is None:
            lazy_listener()
        else:
            current.after_commit(lazy_listener)
