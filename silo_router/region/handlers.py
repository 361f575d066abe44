"""Handler registries for region silos.

Handlers are registered with decorators on a provider's registry::

    from silo_router.region.handlers import slack

    @slack.action("resolve_dialog")
    def resolve(request: SlackHandlerRequest) -> None: ...

The modules that hold handlers are listed in ``SILO_ROUTER['HANDLER_MODULES']`` and
imported when the region app is ready, so what is registered never depends on what
happened to be imported first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from silo_router.conf import conf
from silo_router.exceptions import SiloRouterConfigurationError
from silo_router.providers.slack.request import SlackHandlerRequest

from .request import HandlerRequest

Handler = Callable[[Any], Any]
H = TypeVar("H", bound=Handler)
ANY = "*"


class HandlerRegistry:
    """Handlers for one provider, keyed by request type and name (``*`` for any name)."""

    #: The class of the argument handlers receive.
    request_class: type[HandlerRequest] = HandlerRequest

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._handlers: dict[tuple[str, str], Handler] = {}

    def on(self, type: str, name: str = ANY) -> Callable[[H], H]:
        """Register the decorated function for requests of ``type`` (and ``name``)."""

        def decorator(func: H) -> H:
            key = (type, name)
            existing = self._handlers.get(key)
            if existing is not None and existing is not func:
                raise SiloRouterConfigurationError(
                    f"Two {self.provider} handlers for {type}:{name}: "
                    f"{existing.__module__}.{existing.__qualname__} and {func.__module__}.{func.__qualname__}."
                )
            self._handlers[key] = func
            return func

        return decorator

    def find(self, type: str, name: str) -> Handler | None:
        """The handler for ``type:name``, else the ``type:*`` one, else ``None``."""
        return self._handlers.get((type, name)) or self._handlers.get((type, ANY))

    def unregister(self, type: str, name: str = ANY) -> None:
        """Remove a registration (tests)."""
        self._handlers.pop((type, name), None)

    def registered(self) -> Mapping[tuple[str, str], Handler]:
        return dict(self._handlers)


class SlackHandlers(HandlerRegistry):
    """Decorators named after Slack's request kinds."""

    request_class = SlackHandlerRequest

    def action(self, action_id: str = ANY) -> Callable[[H], H]:
        """``block_actions`` whose first action has ``action_id``."""
        return self.on("block_actions", action_id)

    def event(self, event_type: str = ANY) -> Callable[[H], H]:
        """``event_callback`` events of ``event_type`` (``app_mention``, ``message``...)."""
        return self.on("event_callback", event_type)

    def command(self, command: str = ANY) -> Callable[[H], H]:
        """Slash commands, by command including the slash (``/ticket``)."""
        return self.on("command", command)

    def view(self, callback_id: str = ANY) -> Callable[[H], H]:
        """``view_submission`` by the view's ``callback_id``; may return a ``response_action`` dict."""
        return self.on("view_submission", callback_id)

    def view_closed(self, callback_id: str = ANY) -> Callable[[H], H]:
        return self.on("view_closed", callback_id)

    def options(self, action_id: str = ANY) -> Callable[[H], H]:
        """``block_suggestion`` by ``action_id``; returns ``{"options": [...]}``."""
        return self.on("block_suggestion", action_id)

    def shortcut(self, callback_id: str = ANY) -> Callable[[H], H]:
        """Global shortcuts and message actions, by ``callback_id``."""
        return _both(self.on("shortcut", callback_id), self.on("message_action", callback_id))


def _both(first: Callable[[H], H], second: Callable[[H], H]) -> Callable[[H], H]:
    def decorator(func: H) -> H:
        return second(first(func))

    return decorator


slack = SlackHandlers("slack")
REGISTRIES: dict[str, HandlerRegistry] = {"slack": slack}


def registry_for(provider: str) -> HandlerRegistry | None:
    return REGISTRIES.get(provider)


def load_handler_modules() -> None:
    """Import the modules named in ``HANDLER_MODULES`` (region and monolith modes)."""
    if not conf.is_region:
        return
    for path in conf.HANDLER_MODULES:
        try:
            importlib.import_module(path)
        except ImportError as exc:
            raise SiloRouterConfigurationError(
                f"SILO_ROUTER['HANDLER_MODULES'] names {path!r}, which cannot be imported: {exc}"
            ) from exc
