from __future__ import annotations

from django.urls import path

from . import durable_floor, views

urlpatterns = [path("healthz", views.healthz), path("slack/events", durable_floor.durable_floor)]
