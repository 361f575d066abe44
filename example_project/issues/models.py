"""The demo app's models: issues of an organization, stored in its region, and an effect ledger."""

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


class Effect(models.Model):
    """One row per run of a ledger handler: how the fault tests and benchmarks count effects.

    ``key`` is deliberately not unique: a handler that ran twice for one event leaves two
    rows, so "exactly once" is checked by counting, not enforced by a constraint.
    """

    key = models.CharField(max_length=100, db_index=True)
    organization_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.key


class Antidote(models.Model):
    """Lets a poison event through: the fault tests insert one, then replay the payload."""

    key = models.CharField(max_length=100, unique=True)

    def __str__(self) -> str:
        return self.key
