"""Admin for the region silo: the notifications it sent, where each one stopped, and the funnel.

The list shows each notification's furthest stage (failed or not) and, above it, how many
notifications (of the chosen name) reached each stage with the failures by stage; a
notification's page lists its events. Nothing shown is a capability: the funnel never
stores a token, a ``response_url`` or a ``trigger_id``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse
from django.template import engines
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from . import funnel
from .models import Notification, NotificationEvent

if TYPE_CHECKING:
    NotificationAdminBase = admin.ModelAdmin[Notification]
else:
    NotificationAdminBase = admin.ModelAdmin

#: The change list with the funnel's summary above it (kept here: it is this admin's only template).
_CHANGE_LIST = """{% extends "admin/change_list.html" %}
{% block content_title %}{{ block.super }}
<table style="margin-bottom: 1em">
  <caption>Funnel of {{ funnel.notifications }} notifications
    {% if funnel_name %}named {{ funnel_name }}{% endif %}</caption>
  <thead><tr><th>stage</th><th>reached</th><th>stopped there, failed</th><th>failures by error</th></tr></thead>
  <tbody>
  {% for stage in funnel.stages %}
    <tr><td>{{ stage.stage }}</td><td>{{ stage.reached }}</td><td>{{ stage.failed }}</td>
    <td>{% for error, count in stage.errors.items %}{{ error }} {{ count }}{% if not forloop.last %}, {% endif %}
    {% empty %}-{% endfor %}</td></tr>
  {% endfor %}
  </tbody>
</table>
{% endblock %}
"""


@functools.cache
def _change_list_template() -> Any:
    return engines["django"].from_string(_CHANGE_LIST)


def _furthest(field: str) -> Subquery:
    events = NotificationEvent.objects.filter(notification_id=OuterRef("pk")).order_by("-rank", "-ok", "-at")
    return Subquery(events.values(field)[:1])


@admin.register(Notification)
class NotificationAdmin(NotificationAdminBase):
    """Notifications sent from this region: read-only, with their funnel."""

    list_display = ("id", "name", "furthest_stage", "channel", "ts", "region", "created_at")
    list_filter = ("name", "region")
    search_fields = ("id", "channel", "ts")
    date_hierarchy = "created_at"
    fields = (
        "id",
        "name",
        "furthest_stage",
        "installation_id",
        "region",
        "channel",
        "ts",
        "trace",
        "created_at",
        "events",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[Notification]:
        return (
            super()
            .get_queryset(request)
            .annotate(furthest=_furthest("stage"), furthest_ok=_furthest("ok"), furthest_error=_furthest("error"))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Notification | None = None) -> bool:
        return False

    @admin.display(description="furthest stage", ordering="furthest")
    def furthest_stage(self, obj: Notification) -> str:
        stage = getattr(obj, "furthest", None)
        if stage is None:
            return "-"
        if getattr(obj, "furthest_ok", True):
            return str(stage)
        return f"{stage} (failed: {getattr(obj, 'furthest_error', '') or 'no error given'})"

    @admin.display(description="trace")
    def trace(self, obj: Notification) -> str:
        caused_by = f"; caused by trace {obj.caused_by_trace_id}" if obj.caused_by_trace_id else ""
        return f"trace {obj.id}{caused_by}"

    @admin.display(description="events")
    def events(self, obj: Notification) -> SafeString:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    event.stage,
                    f"{event.at:%Y-%m-%d %H:%M:%S.%f}"[:23],
                    "ok" if event.ok else "failed",
                    event.error or "-",
                    event.service,
                    event.envelope_id or "-",
                    " ".join(f"{key}={value}" for key, value in sorted((event.attributes or {}).items())),
                )
                for event in funnel.events_for(obj.id)
            ),
        )
        header = format_html(
            "<tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr>",
            "stage",
            "at (UTC)",
            "ok",
            "error",
            "service",
            "envelope",
            "details",
        )
        return format_html("<table><thead>{}</thead><tbody>{}</tbody></table>", header, rows)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        name = request.GET.get("name__exact") or None
        context = {**(extra_context or {}), "funnel": funnel.summary(name=name), "funnel_name": name}
        response = super().changelist_view(request, context)
        if isinstance(response, TemplateResponse):
            response.template_name = _change_list_template()
        return response
