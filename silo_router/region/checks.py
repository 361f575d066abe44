"""System checks of the region silo: the handler modules, once the app is ready."""

from __future__ import annotations

from typing import Any

from django.core.checks import CheckMessage, Warning

from silo_router.conf import conf

from .handlers import handler_import_errors, registered_handler_count


def check_handlers(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Warnings, not errors, so that ``migrate`` still runs while a handler module is missing."""
    if not conf.is_region:
        return []
    broken = handler_import_errors()
    found: list[CheckMessage] = [
        Warning(
            f"SILO_ROUTER['HANDLER_MODULES'] names {path!r}, which cannot be imported ({why}).",
            hint="Fix the module path or the module; until it imports this region answers envelopes with 503 "
            "(control keeps them and retries).",
            id="silo_router.W008",
        )
        for path, why in broken.items()
    ]
    if not broken and isinstance(conf.get("HANDLER_MODULES"), list | tuple) and not registered_handler_count():
        found.append(
            Warning(
                "No handler is registered in this region: every envelope will be answered 'no handler'.",
                hint="List your handler modules in SILO_ROUTER['HANDLER_MODULES'], e.g. ['myapp.slack_handlers'].",
                id="silo_router.W009",
            )
        )
    return found
