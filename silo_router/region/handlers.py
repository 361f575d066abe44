"""Handler registries for region silos.

Handlers are registered with decorators on a provider's registry::

    from silo_router.region.handlers import slack

    @slack.action("resolve_dialog")
    def resolve(request: SlackHandlerRequest) -> None: ...

    @slack.action("sync_ticket", atomic=False)   # runs outside a transaction; at least once
    def sync(request: SlackHandlerRequest) -> None: ...

The modules that hold handlers are listed in ``SILO_ROUTER['HANDLER_MODULES']`` and
imported when the region app is ready, so what is registered never depends on what
happened to be imported first.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from silo_router.conf import conf
from silo_router.exceptions import SiloRouterConfigurationError
from silo_router.providers.slack.request import SlackHandlerRequest

from .request import HandlerRequest

logger = logging.getLogger("silo_router.region")

Handler = Callable[[Any], Any]
H = TypeVar("H", bound=Handler)
ANY = "*"


@dataclasses.dataclass(frozen=True)
class Registration:
    """A handler and how it runs.

    ``atomic`` (the default): the handler runs inside ``transaction.atomic()`` with the
    envelope's idempotency record, so it runs effectively once. ``atomic=False``: it runs
    outside any transaction (it may call Slack directly) and the record is written after
    it returns, so a crash between the two runs it again (at least once).
    """

    handler: Handler
    atomic: bool = True

    @property
    def name(self) -> str:
        return f"{self.handler.__module__}.{self.handler.__qualname__}"


class HandlerRegistry:
    """Handlers for one provider, keyed by request type and name (``*`` for any name)."""

    #: The class of the argument handlers receive.
    request_class: type[HandlerRequest] = HandlerRequest

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._handlers: dict[tuple[str, str], Registration] = {}

    def on(self, type: str, name: str = ANY, *, atomic: bool = True) -> Callable[[H], H]:
        """Register the decorated function for requests of ``type`` (and ``name``)."""

        def decorator(func: H) -> H:
            key = (type, name)
            existing = self._handlers.get(key)
            if existing is not None and existing.handler is not func:
                raise SiloRouterConfigurationError(
                    f"Two {self.provider} handlers for {type}:{name}: "
                    f"{existing.name} and {func.__module__}.{func.__qualname__}."
                )
            self._handlers[key] = Registration(handler=func, atomic=atomic)
            return func

        return decorator

    def find(self, type: str, name: str) -> Registration | None:
        """The registration for ``type:name``, else the ``type:*`` one, else ``None``."""
        return self._handlers.get((type, name)) or self._handlers.get((type, ANY))

    def unregister(self, type: str, name: str = ANY) -> None:
        """Remove a registration."""
        self._handlers.pop((type, name), None)

    def registered(self) -> Mapping[tuple[str, str], Registration]:
        """A copy of every registration, e.g. to restore later with ``restore``."""
        return dict(self._handlers)

    def restore(self, registrations: Mapping[tuple[str, str], Registration]) -> None:
        """Replace every registration with ``registrations`` (from ``registered()``)."""
        self._handlers = dict(registrations)


class SlackHandlers(HandlerRegistry):
    """Decorators named after Slack's request kinds."""

    request_class = SlackHandlerRequest

    def action(self, action_id: str = ANY, *, atomic: bool = True) -> Callable[[H], H]:
        """``block_actions`` whose first action has ``action_id``."""
        return self.on("block_actions", action_id, atomic=atomic)

    def event(self, event_type: str = ANY, *, atomic: bool = True) -> Callable[[H], H]:
        """``event_callback`` events of ``event_type`` (``app_mention``, ``message``...)."""
        return self.on("event_callback", event_type, atomic=atomic)

    def command(self, command: str = ANY, *, atomic: bool = True) -> Callable[[H], H]:
        """Slash commands, by command including the slash (``/ticket``)."""
        return self.on("command", command, atomic=atomic)

    def view(self, callback_id: str = ANY, *, atomic: bool = True) -> Callable[[H], H]:
        """``view_submission`` by the view's ``callback_id``; may return a ``response_action`` dict."""
        return self.on("view_submission", callback_id, atomic=atomic)

    def view_closed(self, callback_id: str = ANY, *, atomic: bool = True) -> Callable[[H], H]:
        return self.on("view_closed", callback_id, atomic=atomic)

    def options(self, action_id: str = ANY, *, atomic: bool = True) -> Callable[[H], H]:
        """``block_suggestion`` by ``action_id``; returns ``{"options": [...]}``."""
        return self.on("block_suggestion", action_id, atomic=atomic)

    def shortcut(self, callback_id: str = ANY, *, atomic: bool = True) -> Callable[[H], H]:
        """Global shortcuts and message actions, by ``callback_id``."""
        return _both(
            self.on("shortcut", callback_id, atomic=atomic), self.on("message_action", callback_id, atomic=atomic)
        )


def _both(first: Callable[[H], H], second: Callable[[H], H]) -> Callable[[H], H]:
    def decorator(func: H) -> H:
        return second(first(func))

    return decorator


slack = SlackHandlers("slack")
_registries: dict[str, HandlerRegistry] = {}


def register_registry(registry: HandlerRegistry) -> HandlerRegistry:
    """Make ``registry`` the one that handles its provider's envelopes."""
    _registries[registry.provider] = registry
    return registry


register_registry(slack)


def registry_for(provider: str) -> HandlerRegistry | None:
    """The handler registry of ``provider``, if one is registered."""
    return _registries.get(provider)


def load_handler_modules() -> None:
    """Import the modules named in ``HANDLER_MODULES`` (region and monolith modes).

    One that fails to import is logged and kept in :func:`handler_import_errors`, not
    raised: ``migrate`` and every other command must still run while a handler module
    is missing or broken. The system checks report it (``silo_router.W008``) and the
    region refuses envelopes with a 503 until it imports, so control keeps them and
    retries instead of recording them as delivered with no handler.
    """
    _import_errors.clear()
    if not conf.is_region:
        return
    modules = conf.get("HANDLER_MODULES")
    if not isinstance(modules, list | tuple):  # silo_router.E018 says so
        return
    for path in modules:
        try:
            importlib.import_module(str(path))
        except Exception as exc:  # a missing module, a syntax error, two handlers for one kind
            _import_errors[str(path)] = f"{type(exc).__name__}: {exc}"
            logger.error("SILO_ROUTER['HANDLER_MODULES'] names %r, which cannot be imported: %s", path, exc)


def handler_import_errors() -> dict[str, str]:
    """``{module path: why}`` for the handler modules that did not import."""
    return dict(_import_errors)


def registered_handler_count() -> int:
    """How many handlers the registries hold, over every provider."""
    return sum(len(registry._handlers) for registry in _registries.values())


_import_errors: dict[str, str] = {}
