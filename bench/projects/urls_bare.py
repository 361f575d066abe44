from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [path("healthz", views.healthz), path("slack/events", views.bare)]
