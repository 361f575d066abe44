"""Region-silo models."""

from __future__ import annotations

from django.db import models


class ProcessedEnvelope(models.Model):
    """Written in the same transaction as a handler's effects: the idempotency record."""

    id = models.UUIDField(primary_key=True)
    kind = models.CharField(max_length=200)
    idempotency_key = models.CharField(max_length=200, db_index=True)
    outcome = models.CharField(max_length=16)
    response = models.JSONField(null=True, blank=True)
    processed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-processed_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} [{self.outcome}]"


class ResponseUrlUse(models.Model):
    """How often a Slack response_url was used, keyed by a hash of the URL (never the URL)."""

    url_hash = models.CharField(max_length=64, primary_key=True)
    uses = models.PositiveIntegerField(default=0)
    first_used_at = models.DateTimeField(auto_now_add=True, db_index=True)

    def __str__(self) -> str:
        return f"response_url {self.url_hash[:12]}… used {self.uses}×"


class Notification(models.Model):
    """A Slack message this region sent as a notification (``silo_router.region.notifications``).

    Its trace id is derived from ``id``; ``caused_by_trace_id`` names the trace that
    triggered it. No text, token or URL is kept: only where it went and what Slack answered.
    """

    id = models.CharField(max_length=32, primary_key=True)
    name = models.CharField(max_length=100, db_index=True)
    installation_id = models.CharField(max_length=200, blank=True)
    region = models.CharField(max_length=100, blank=True)
    channel = models.CharField(max_length=255, blank=True)
    ts = models.CharField(max_length=64, blank=True)
    caused_by_trace_id = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} {self.id}"


class NotificationEvent(models.Model):
    """One stage a notification reached (or failed at): one schema for the whole funnel.

    ``id`` is derived from the notification, the stage, the envelope and the reply, so
    a retried delivery or a duplicate inserts nothing twice. ``rank`` orders the stages.
    """

    id = models.UUIDField(primary_key=True)
    notification_id = models.CharField(max_length=32, db_index=True)
    stage = models.CharField(max_length=16)
    rank = models.PositiveSmallIntegerField()
    at = models.DateTimeField(db_index=True)
    service = models.CharField(max_length=200)
    name = models.CharField(max_length=100, blank=True, db_index=True)
    region = models.CharField(max_length=100, blank=True)
    ok = models.BooleanField()
    error = models.CharField(max_length=200, blank=True)
    envelope_id = models.CharField(max_length=36, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["rank", "at"]
        indexes = [models.Index(fields=["notification_id", "rank"], name="silo_router_notif_rank")]

    def __str__(self) -> str:
        state = "ok" if self.ok else f"failed: {self.error}"
        return f"{self.notification_id} {self.stage} [{state}]"
