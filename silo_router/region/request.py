"""The handler's argument; it lives in :mod:`silo_router.providers.handler_request`."""

from __future__ import annotations

from silo_router.providers.handler_request import HandlerRequest

__all__ = ["HandlerRequest"]
