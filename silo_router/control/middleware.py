"""The control silo's middleware: a thin adapter from Django to the control layer's views.

Under a provider's URL prefix it serves, for Slack, the install flow
(``SLACK["INSTALL_PATH"]``, ``SLACK["REDIRECT_PATH"]``) and everything else through
``pipeline``; at ``WEB_API_PROXY_PATH`` it serves the regions' Slack Web API proxy.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse

from silo_router.conf import conf

from . import pipeline, runner
from .slack import oauth, proxy


class SiloRouterMiddleware:
    """Answers requests under ``URL_PREFIXES`` and the Web API proxy path; everything else passes through untouched.

    Put it first in ``MIDDLEWARE``: provider requests then skip session, CSRF and auth
    work they do not need (the provider signature is their authentication).
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        if not conf.is_control:
            raise MiddlewareNotUsed("silo_router only answers providers in control or monolith mode")
        self.get_response = get_response
        #: A web process is where the embedded runner lives: its sweep resumes what a stopped
        #: process left as soon as the server loads, before any request.
        self.runs_deliveries = runner.embedded()
        if self.runs_deliveries:
            runner.runner.start()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.runs_deliveries:
            runner.runner.start()  # a look at the pid: again after a fork (an app loaded before forking workers)
        path = request.path_info
        proxy_path = conf.WEB_API_PROXY_PATH
        if proxy_path and path.startswith(proxy_path):
            return proxy.handle(request, path[len(proxy_path) :])
        matched = self.match_prefix(path)
        if matched is None:
            return self.get_response(request)
        prefix, provider = matched
        if provider == "slack":
            view = oauth.view_for(path[len(prefix) :])
            if view is not None:
                return view(request, prefix)
        return pipeline.handle(request, provider)

    @classmethod
    def match(cls, path: str) -> str | None:
        """The provider whose prefix ``path`` starts with (the longest prefix wins)."""
        matched = cls.match_prefix(path)
        return matched[1] if matched else None

    @staticmethod
    def match_prefix(path: str) -> tuple[str, str] | None:
        """``(prefix, provider)`` of the longest prefix ``path`` starts with."""
        best: tuple[str, str] | None = None
        for prefix, provider in conf.URL_PREFIXES.items():
            if path.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
                best = (prefix, provider)
        return best
