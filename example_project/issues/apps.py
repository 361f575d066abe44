"""App config of the demo issue tracker."""

from __future__ import annotations

from django.apps import AppConfig


class IssuesConfig(AppConfig):
    """The ``issues`` app, installed in region silos only."""

    name = "example_project.issues"
    label = "issues"
    verbose_name = "Issues (demo)"
    default_auto_field = "django.db.models.BigAutoField"
