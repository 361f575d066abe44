"""The one model of the demo app: an issue of an organization, stored in that organization's region."""

from __future__ import annotations

from django.db import models


class Issue(models.Model):
    """An issue, numbered per organization."""

    class Status(models.TextChoices):
        """Where an issue stands."""

        OPEN = "open"
        RESOLVED = "resolved"
        ARCHIVED = "archived"

    organization_id = models.CharField(max_length=64, db_index=True)
    number = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OPEN)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        """Issue numbers are unique per organization."""

        ordering = ["organization_id", "number"]
        constraints = [models.UniqueConstraint(fields=["organization_id", "number"], name="issues_issue_number_unique")]

    def __str__(self) -> str:
        return f"#{self.number} {self.title} [{self.status}]"
