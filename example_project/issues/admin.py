"""Admin for the demo issues."""

from __future__ import annotations

from django.contrib import admin

from .models import Issue


@admin.register(Issue)
class IssueAdmin(admin.ModelAdmin):
    """Issues by organization and status."""

    list_display = ["organization_id", "number", "title", "status", "updated_at"]
    list_filter = ["status", "organization_id"]
