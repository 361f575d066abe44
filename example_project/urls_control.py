"""URLs of the control silo: the admin only.

Slack's requests (``/extensions/slack/...``) never reach a URLconf: SiloRouterMiddleware
answers them.
"""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
