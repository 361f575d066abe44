"""URLs for the test suite (a monolith: admin, region endpoint, a plain page)."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def plain_page(request: HttpRequest) -> HttpResponse:
    """A page outside the provider prefixes, to show the middleware passes it through."""
    return HttpResponse(f"plain {request.method} {request.body.decode()[:20]}")


urlpatterns = [
    path("admin/", admin.site.urls),
    path("silo-router/", include("silo_router.region.urls")),
    path("plain/", plain_page),
]
