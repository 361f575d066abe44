"""The control silo's middleware: a thin adapter from Django to ``pipeline``."""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse

from silo_router.conf import conf

from . import pipeline


class SiloRouterMiddleware:
    """Answers requests under ``URL_PREFIXES``; everything else passes through untouched.

    Put it first in ``MIDDLEWARE``: provider requests then skip session, CSRF and auth
    work they do not need (the provider signature is their authentication).
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        if not conf.is_control:
            raise MiddlewareNotUsed("silo_router only answers providers in control or monolith mode")
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        provider = self.match(request.path_info)
        if provider is None:
            return self.get_response(request)
        return pipeline.handle(request, provider)

    @staticmethod
    def match(path: str) -> str | None:
        """The provider whose prefix ``path`` starts with (the longest prefix wins)."""
        best: tuple[int, str] | None = None
        for prefix, provider in conf.URL_PREFIXES.items():
            if path.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), provider)
        return best[1] if best else None
