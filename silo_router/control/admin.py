"""Admin for the control silo: installations, options (with an audit trail), payloads."""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from . import delivery
from .models import Integration, Option, OptionChange, OrganizationMapping, Payload, RegionCircuit
from .options import DEFINITIONS, options
from .status import format_age, region_status


@admin.register(OrganizationMapping)
class OrganizationMappingAdmin(admin.ModelAdmin):
    list_display = ["slug", "organization_id", "name", "region", "created_at"]
    list_filter = ["region"]
    search_fields = ["slug", "organization_id", "name"]


@admin.register(Integration)
class IntegrationAdmin(admin.ModelAdmin):
    list_display = ["provider", "external_id", "enterprise_id", "app_id", "name"]
    list_filter = ["provider"]
    search_fields = ["external_id", "enterprise_id", "name"]
    filter_horizontal = ["organizations"]


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


@admin.register(Option)
class OptionAdmin(admin.ModelAdmin):
    form = OptionForm
    list_display = ["key", "value", "updated_at", "updated_by"]
    readonly_fields = ["key", "updated_at", "updated_by", "description"]
    fields = ["key", "description", "value", "updated_at", "updated_by"]

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
                    changed_by=cast(User, request.user),
                    changed_by_repr=str(request.user)[:200],
                )
        options.invalidate()


@admin.register(OptionChange)
class OptionChangeAdmin(admin.ModelAdmin):
    list_display = ["changed_at", "key", "old_value", "new_value", "changed_by_repr"]
    list_filter = ["key"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: OptionChange | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: OptionChange | None = None) -> bool:
        return False


@admin.register(Payload)
class PayloadAdmin(admin.ModelAdmin):
    """Every stored payload; failed ones stay here until replayed. Filter, select all, replay."""

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
    readonly_fields = [f.name for f in Payload._meta.fields]
    actions = ["replay_selected"]
    change_list_template = "admin/silo_router_control/payload/change_list.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Payload | None = None) -> bool:
        return False

    @admin.display(description="last error")
    def short_error(self, obj: Payload) -> str:
        return obj.last_error[:80]

    @admin.display(description="delivered after")
    def time_to_deliver(self, obj: Payload) -> str:
        if obj.delivered_at is None:
            return "-"
        return f"{(obj.delivered_at - obj.created_at).total_seconds():.2f} s"

    @admin.action(description="Replay selected payloads (handled ones have no second effect)")
    def replay_selected(self, request: HttpRequest, queryset: QuerySet[Payload]) -> None:
        count = delivery.replay(str(pk) for pk in queryset.values_list("pk", flat=True))
        self.message_user(request, f"{count} payloads queued for delivery again.", messages.SUCCESS)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        rows = [{**dataclasses.asdict(row), "oldest": format_age(row.oldest_pending_age)} for row in region_status()]
        return super().changelist_view(request, {**(extra_context or {}), "region_status": rows})


@admin.register(RegionCircuit)
class RegionCircuitAdmin(admin.ModelAdmin):
    """Circuit breakers: which regions are being held back, since when, why."""

    list_display = ["region", "state", "failures", "retry_at", "last_error", "updated_at"]
    readonly_fields = [f.name for f in RegionCircuit._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RegionCircuit | None = None) -> bool:
        return False
