"""The region-silo Django app."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks
from django.db.backends.signals import connection_created


class RegionConfig(AppConfig):
    name = "silo_router.region"
    label = "silo_router_region"
    verbose_name = "Silo router (region)"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Imported here, not at module level: they import models, which need the app registry.
        from silo_router import checks as silo_checks
        from silo_router.providers.slack import request as slack_request
        from silo_router.redaction import install_log_redaction
        from silo_router.transports import local
        from silo_router.writer_turns import take_turns

        from . import checks as region_checks
        from . import funnel, notifications, receiver
        from .handlers import load_handler_modules

        checks.register(silo_checks.check_settings, checks.Tags.compatibility)
        checks.register(region_checks.check_handlers, checks.Tags.compatibility)
        install_log_redaction()
        local.register_receiver(receiver.local_receiver)
        slack_request.register_region_services(on_replied=funnel.on_replied, prepare_notification=notifications.prepare)
        connection_created.connect(take_turns, dispatch_uid="silo_router.writer_turns")
        load_handler_modules()
