"""Slack requests never reach these URLs: SiloRouterMiddleware answers /extensions/slack/."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [path("healthz", views.healthz)]
