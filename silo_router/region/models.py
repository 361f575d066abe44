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
