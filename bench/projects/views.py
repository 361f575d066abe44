"""The few views the benchmark projects need."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt


def healthz(request: HttpRequest) -> HttpResponse:
    """Readiness probe (outside every Slack URL)."""
    return HttpResponse(b"ok", content_type="text/plain")


@csrf_exempt
def bare(request: HttpRequest) -> HttpResponse:
    """The ceiling: read the body (as any Slack endpoint must), answer an empty 200."""
    request.body  # noqa: B018
    return HttpResponse(status=200)
