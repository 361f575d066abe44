"""Admin for the control silo: installations, options (with an audit trail), payloads.

Installations show their Slack facts and whether a token is stored, never a token or
its ciphertext. A payload's page shows its timeline (stored, each attempt, delivered,
handled) and its trace id, linked when ``SILO_ROUTER["TRACE_URL"]`` is set.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import urllib.parse
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.utils.html import format_html
from django.utils.safestring import SafeString

from silo_router import redaction
from silo_router.conf import conf

from . import delivery, rerouting
from .models import (
    Integration,
    Option,
    OptionChange,
    OrganizationMapping,
    Payload,
    PayloadAttempt,
    RegionCircuit,
    SlackInstallation,
)
from .options import DEFINITIONS, options
from .status import UNROUTABLE_ADVICE, format_age, region_status
from .validation import unknown_provider, unknown_region


def _parsed_body(body: str) -> Any:
    """A provider body for reading: JSON, or a form whose ``payload`` field is JSON, decoded."""
    try:
        return json.loads(body)
    except ValueError:
        pass
    fields: dict[str, Any] = {}
    for key, raw in urllib.parse.parse_qsl(body, keep_blank_values=True):
        try:
            fields[key] = json.loads(raw) if key == "payload" else raw
        except ValueError:
            fields[key] = raw
    return fields


def _redacted_envelope(raw: str) -> str:
    """The stored envelope for an operator's eyes, with every capability and signature redacted."""
    try:
        envelope = json.loads(raw)
    except ValueError:
        return "(not valid JSON)"
    if not isinstance(envelope, dict):
        return "(not an envelope)"
    body = envelope.pop("body", "")
    shown = {**envelope, "parsed_body": _parsed_body(str(body))}
    return json.dumps(redaction.scrub(shown), indent=2, sort_keys=True)


_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
#: The receipts that mean the region ran (or had already run) the handler.
HANDLED_RECEIPTS = frozenset({"handled", "duplicate"})


def trace_url(trace_id: str) -> str | None:
    """The link to ``trace_id`` that ``SILO_ROUTER["TRACE_URL"]`` makes, if it is set and makes one."""
    template = conf.TRACE_URL
    if not template or "{trace_id}" not in template or not _TRACE_ID.match(trace_id or ""):
        return None
    url = template.replace("{trace_id}", trace_id)
    return url if url.startswith(("https://", "http://")) else None


@dataclasses.dataclass(frozen=True)
class TimelineEntry:
    """One line of a payload's timeline."""

    at: datetime.datetime | None
    what: str
    outcome: str = ""
    duration_ms: float | None = None
    detail: str = ""
    trace_id: str = ""
    trace_url: str | None = None


def payload_timeline(payload: Payload) -> list[TimelineEntry]:
    """Stored, each attempt, confirmations, delivered, handled, failed: in order, nothing secret."""
    entries = [TimelineEntry(payload.created_at, "stored", payload.strategy, trace_id=payload.trace_id)]
    handled = False
    for row in PayloadAttempt.objects.filter(payload=payload).order_by("started_at", "id"):
        replay = f" (replay {row.replay})" if row.replay else ""
        detail = delivery.safe_reason(row.error)
        entries.append(
            TimelineEntry(
                row.started_at,
                f"attempt {row.number}{replay}",
                row.outcome,
                row.duration_ms,
                detail,
                row.trace_id,
                trace_url(row.trace_id),
            )
        )
        if row.receipt in HANDLED_RECEIPTS and not handled:
            handled = True
            at = row.confirmed_at or row.started_at + datetime.timedelta(milliseconds=row.duration_ms)
            if payload.delivered_at is not None:  # recorded as delivered once the region said so
                at = min(at, payload.delivered_at)
            how = "confirmed by the region's queue" if row.confirmed_at else "the region's receipt"
            entries.append(TimelineEntry(at, "handled", row.receipt, detail=how))
        elif row.confirmed_at is not None:
            entries.append(TimelineEntry(row.confirmed_at, "confirmation", row.receipt))
    if payload.delivered_at is not None:
        entries.append(TimelineEntry(payload.delivered_at, "delivered"))
    if payload.state == Payload.State.FAILED:
        entries.append(TimelineEntry(None, "failed", detail=delivery.safe_reason(payload.last_error)))
    # Stable: on equal times, the order above (handled before delivered) stays.
    return sorted(entries, key=lambda entry: (entry.at is None, entry.at or payload.created_at))


class OrganizationMappingForm(forms.ModelForm):
    """``region`` must name a region in ``SILO_ROUTER['REGIONS']``."""

    class Meta:
        model = OrganizationMapping
        fields = "__all__"

    def clean_region(self) -> str:
        region = str(self.cleaned_data.get("region") or "")
        problem = unknown_region(region)
        if problem:
            raise forms.ValidationError(problem)
        return region


class IntegrationForm(forms.ModelForm):
    """``provider`` must name a registered provider."""

    class Meta:
        model = Integration
        fields = "__all__"

    def clean_provider(self) -> str:
        provider = str(self.cleaned_data.get("provider") or "")
        problem = unknown_provider(provider)
        if problem:
            raise forms.ValidationError(problem)
        return provider


@admin.register(OrganizationMapping)
class OrganizationMappingAdmin(admin.ModelAdmin):
    form = OrganizationMappingForm
    list_display = ["slug", "organization_id", "name", "region", "created_at"]
    list_filter = ["region"]
    search_fields = ["slug", "organization_id", "name"]


def _stored(ciphertext: str) -> str:
    return "yes" if ciphertext else "no"


#: What the admin shows of a Slack installation: facts, and "stored: yes/no" for each secret.
INSTALLATION_FIELDS: tuple[str, ...] = (
    "team_name",
    "enterprise_name",
    "bot_id",
    "bot_user_id",
    "bot_scopes",
    "bot_token_stored",
    "refresh_token_stored",
    "bot_token_expires_at",
    "user_id",
    "user_scopes",
    "user_token_stored",
    "user_token_expires_at",
    "incoming_webhook_stored",
    "incoming_webhook_channel",
    "token_type",
    "installed_at",
    "updated_at",
    "rotation_lease_until",
)


class SlackInstallationInline(admin.StackedInline):
    """The installation's Slack facts, read-only; tokens only as "stored: yes/no"."""

    model = SlackInstallation
    can_delete = False
    extra = 0
    max_num = 0
    verbose_name = "Slack installation"
    verbose_name_plural = "Slack installation"
    fields = INSTALLATION_FIELDS
    readonly_fields = INSTALLATION_FIELDS

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="bot token stored")
    def bot_token_stored(self, obj: SlackInstallation) -> str:
        return _stored(obj.encrypted_bot_token)

    @admin.display(description="refresh token stored")
    def refresh_token_stored(self, obj: SlackInstallation) -> str:
        return _stored(obj.encrypted_bot_refresh_token)

    @admin.display(description="user token stored")
    def user_token_stored(self, obj: SlackInstallation) -> str:
        return _stored(obj.encrypted_user_token)

    @admin.display(description="incoming webhook stored")
    def incoming_webhook_stored(self, obj: SlackInstallation) -> str:
        return _stored(obj.encrypted_incoming_webhook_url)


@admin.register(Integration)
class IntegrationAdmin(admin.ModelAdmin):
    form = IntegrationForm
    list_display = [
        "provider",
        "external_id",
        "enterprise_id",
        "is_enterprise_install",
        "app_id",
        "name",
        "active",
        "deactivation",
        "bot_user_id",
        "token_expires",
        "token_stored",
    ]
    list_filter = ["provider", "active", "is_enterprise_install"]
    search_fields = ["external_id", "enterprise_id", "name"]
    filter_horizontal = ["organizations"]
    readonly_fields = ["deactivated_at", "deactivation_reason"]
    inlines = [SlackInstallationInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Integration]:
        return super().get_queryset(request).select_related("slack_installation")

    @staticmethod
    def _installation(obj: Integration) -> SlackInstallation | None:
        return getattr(obj, "slack_installation", None)

    @admin.display(description="deactivated")
    def deactivation(self, obj: Integration) -> str:
        if obj.active:
            return "-"
        when = f" at {obj.deactivated_at:%Y-%m-%d %H:%M:%S}" if obj.deactivated_at else ""
        return f"{obj.deactivation_reason or 'by an operator'}{when}"

    @admin.display(description="bot user")
    def bot_user_id(self, obj: Integration) -> str:
        installation = self._installation(obj)
        return installation.bot_user_id if installation and installation.bot_user_id else "-"

    @admin.display(description="token expires")
    def token_expires(self, obj: Integration) -> str:
        installation = self._installation(obj)
        expires = installation.bot_token_expires_at if installation else None
        return f"{expires:%Y-%m-%d %H:%M:%S}" if expires else "-"

    @admin.display(description="token stored")
    def token_stored(self, obj: Integration) -> str:
        installation = self._installation(obj)
        return _stored(installation.encrypted_bot_token if installation else "")


class OptionForm(forms.ModelForm):
    """Edits ``Option.value`` through a form field of the option's declared type."""

    class Meta:
        model = Option
        fields: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        definition = DEFINITIONS.get(self.instance.key)
        if definition is None:
            return
        current = self.instance.value if self.instance.value is not None else definition.default
        if definition.type == "bool":
            self.fields["value"] = forms.BooleanField(
                required=False, initial=bool(current), help_text=definition.help_text
            )
        else:
            self.fields["value"] = forms.CharField(
                required=False,
                widget=forms.Textarea(attrs={"rows": 6}),
                initial="\n".join(current or []),
                help_text=definition.help_text,
            )

    def clean_value(self) -> Any:
        definition = DEFINITIONS[self.instance.key]
        raw = self.cleaned_data.get("value")
        if definition.type == "str_list":
            raw = [line.strip() for line in (raw or "").splitlines() if line.strip()]
        try:
            return definition.validate(raw)
        except ValueError as exc:
            raise forms.ValidationError(f"{definition.key} {exc}.") from exc


def shown(value: Any) -> str:
    """An option's value as an operator reads it: on / off, a list joined, "(none)" for an empty one."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "(none)"
    return "(none)" if value in (None, "") else str(value)


@admin.register(Option)
class OptionAdmin(admin.ModelAdmin):
    form = OptionForm
    list_display = ["key", "shown_value", "updated_at", "updated_by"]
    readonly_fields = ["key", "updated_at", "updated_by", "description"]
    fields = ["key", "description", "value", "updated_at", "updated_by"]

    @admin.display(description="value", ordering="value")
    def shown_value(self, obj: Option) -> str:
        return shown(obj.value)

    @admin.display(description="What it does")
    def description(self, obj: Option) -> str:
        definition = DEFINITIONS.get(obj.key)
        return definition.help_text if definition else "Not a known option."

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Option | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Option, form: forms.ModelForm, change: bool) -> None:
        new_value = form.cleaned_data["value"]
        with transaction.atomic():
            old_value = Option.objects.select_for_update().filter(pk=obj.pk).values_list("value", flat=True).first()
            obj.value = new_value
            obj.updated_by = request.user  # type: ignore[assignment]
            obj.save()
            if old_value != new_value:
                OptionChange.objects.create(
                    key=obj.key,
                    old_value=old_value,
                    new_value=new_value,
                    changed_by=request.user if isinstance(request.user, get_user_model()) else None,
                    changed_by_repr=str(request.user)[:200],
                )
        options.invalidate()


@admin.register(OptionChange)
class OptionChangeAdmin(admin.ModelAdmin):
    list_display = ["changed_at", "key", "shown_old_value", "shown_new_value", "changed_by_name"]
    list_filter = ["key"]

    @admin.display(description="old value")
    def shown_old_value(self, obj: OptionChange) -> str:
        return shown(obj.old_value)

    @admin.display(description="new value")
    def shown_new_value(self, obj: OptionChange) -> str:
        return shown(obj.new_value)

    @admin.display(description="changed by", ordering="changed_by_repr")
    def changed_by_name(self, obj: OptionChange) -> str:
        return obj.changed_by_repr

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: OptionChange | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: OptionChange | None = None) -> bool:
        return False


@admin.register(Payload)
class PayloadAdmin(admin.ModelAdmin):
    """Every stored payload; failed and unroutable ones stay here until replayed.

    Payload fields are never editable. Replaying needs the change permission on
    payloads; so does seeing a body, and then only with capabilities redacted.
    """

    list_display = [
        "created_at",
        "kind",
        "region",
        "state",
        "attempts",
        "short_error",
        "next_attempt_at",
        "time_to_deliver",
    ]
    list_filter = ["state", "region", "provider", "strategy", "kind"]
    date_hierarchy = "created_at"
    search_fields = ["id", "idempotency_key", "kind", "last_error"]
    actions = ["replay_selected"]
    change_list_template = "admin/silo_router_control/payload/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def _visible_fields(self, request: HttpRequest, obj: Payload | None) -> list[str]:
        fields = [f.name if f.name != "trace_id" else "trace" for f in Payload._meta.fields if f.name != "envelope"]
        fields.append("timeline")
        return [*fields, "body"] if self.has_change_permission(request, obj) else fields

    def get_fields(self, request: HttpRequest, obj: Payload | None = None) -> tuple[str, ...]:
        return tuple(self._visible_fields(request, obj))

    def get_readonly_fields(self, request: HttpRequest, obj: Payload | None = None) -> tuple[str, ...]:
        return tuple(self._visible_fields(request, obj))

    def save_model(self, request: HttpRequest, obj: Payload, form: forms.ModelForm, change: bool) -> None:
        """Never write a payload from a form: its state belongs to delivery."""

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        no_saving = {"show_save": False, "show_save_and_continue": False, "show_save_and_add_another": False}
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), **no_saving})

    @admin.display(description="trace")
    def trace(self, obj: Payload) -> str:
        return _trace_html(obj.trace_id)

    @admin.display(description="timeline")
    def timeline(self, obj: Payload) -> SafeString:
        rows = [{**dataclasses.asdict(entry), "trace": _trace_html(entry.trace_id)} for entry in payload_timeline(obj)]
        return SafeString(render_to_string("admin/silo_router_control/payload/timeline.html", {"entries": rows}))

    @admin.display(description="envelope (capabilities redacted)")
    def body(self, obj: Payload) -> str:
        return format_html("<pre>{}</pre>", _redacted_envelope(obj.envelope))

    @admin.display(description="last error")
    def short_error(self, obj: Payload) -> str:
        return obj.last_error[:80]

    @admin.display(description="delivered after")
    def time_to_deliver(self, obj: Payload) -> str:
        if obj.delivered_at is None:
            return "-"
        return f"{(obj.delivered_at - obj.created_at).total_seconds():.2f} s"

    @admin.action(
        description="Replay selected payloads (unroutable ones are routed again; handled ones have no second effect)",
        permissions=["change"],
    )
    def replay_selected(self, request: HttpRequest, queryset: QuerySet[Payload]) -> None:
        result = rerouting.replay(str(pk) for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, result.summary(), messages.SUCCESS)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        rows = [{**dataclasses.asdict(row), "oldest": format_age(row.oldest_pending_age)} for row in region_status()]
        advice = UNROUTABLE_ADVICE if any(row["unroutable"] for row in rows) else ""
        context = {**(extra_context or {}), "region_status": rows, "unroutable_advice": advice}
        return super().changelist_view(request, context)


def _trace_html(trace_id: str) -> str:
    """A trace id, as a link when ``TRACE_URL`` makes one."""
    if not trace_id:
        return "-"
    url = trace_url(trace_id)
    return format_html('<a href="{}">{}</a>', url, trace_id) if url else trace_id


@admin.register(RegionCircuit)
class RegionCircuitAdmin(admin.ModelAdmin):
    """Circuit breakers: which regions are being held back, since when, why."""

    list_display = ["region", "state", "failures", "retry_at", "last_error", "updated_at"]
    readonly_fields = [f.name for f in RegionCircuit._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RegionCircuit | None = None) -> bool:
        return False
