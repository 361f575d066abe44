"""Include in a region silo's URLconf, e.g. ``path("silo-router/", include("silo_router.region.urls"))``."""

from __future__ import annotations

from django.urls import path

from .views import envelope_batch, envelopes

app_name = "silo_router_region"
urlpatterns = [
    path("envelopes/", envelopes, name="envelopes"),
    path("envelopes/batch/", envelope_batch, name="envelope_batch"),
]
