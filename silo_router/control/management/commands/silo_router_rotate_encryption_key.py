"""``manage.py silo_router_rotate_encryption_key``: re-encrypt every stored token with the first key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from silo_router.control.slack.encryption import reencrypt_all


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored Slack token with the first key in SILO_ROUTER['TOKEN_ENCRYPTION_KEYS']. "
        "Run it after putting a new key first; afterwards the old keys can be removed."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        count = reencrypt_all()
        self.stdout.write(f"Re-encrypted {count} stored secrets with the first key.")
