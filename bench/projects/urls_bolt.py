from __future__ import annotations

from django.urls import path

from . import views
from .bolt_app import slack_events

urlpatterns = [path("healthz", views.healthz), path("slack/events", slack_events)]
