"""URLs of a region silo: the envelope receiver and a health check."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import include, path

from silo_router.conf import conf


def health(request: HttpRequest) -> JsonResponse:
    """200 with the region name once the silo can reach its database."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True, "region": conf.REGION})


urlpatterns = [
    path("silo-router/", include("silo_router.region.urls")),
    path("health/", health, name="health"),
]
