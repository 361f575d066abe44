"""The control-silo Django app."""

from __future__ import annotations

import importlib.util

from django.apps import AppConfig
from django.core import checks
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate


class ControlConfig(AppConfig):
    name = "silo_router.control"
    label = "silo_router_control"
    verbose_name = "Silo router (control)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from silo_router import checks as silo_checks
        from silo_router.redaction import install_log_redaction
        from silo_router.writer_turns import take_turns

        from .checks import check_middleware, check_runner
        from .options import create_option_rows

        if importlib.util.find_spec("celery") is not None:  # without Celery the embedded runner runs them
            from . import tasks  # noqa: F401  (registers the control tasks, so eager mode and workers run them by name)

        checks.register(silo_checks.check_settings, checks.Tags.compatibility)
        checks.register(check_runner, checks.Tags.compatibility)
        checks.register(check_middleware, checks.Tags.compatibility)
        install_log_redaction()
        post_migrate.connect(create_option_rows, sender=self)
        connection_created.connect(take_turns, dispatch_uid="silo_router.writer_turns")
