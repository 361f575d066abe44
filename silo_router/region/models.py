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
