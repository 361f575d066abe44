"""Prepare and inspect the silo_router project's database: ``python -m projects.silo_db prepare|count``.

``prepare`` migrates and creates the one installation every request routes to (Slack
workspace T0US00001 -> organization acme in region ``us``). ``count`` prints the stored
payloads and the Celery messages waiting in the broker folder, as JSON.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

TEAM_ID = "T0US00001"


def main(argv: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "projects.settings_silo")
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.db.models import Count

    from silo_router.control.models import Integration, OrganizationMapping, Payload

    command = argv[1] if len(argv) > 1 else ""
    if command == "prepare":
        settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
        call_command("migrate", verbosity=0, interactive=False)
        acme, _ = OrganizationMapping.objects.get_or_create(
            organization_id="101", slug="acme", defaults={"region": "us"}
        )
        integration, _ = Integration.objects.get_or_create(provider="slack", external_id=TEAM_ID)
        integration.organizations.add(acme)
        print(json.dumps({"integrations": Integration.objects.count(), "payloads": Payload.objects.count()}))
        return 0
    if command == "count":
        broker = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_out"])
        messages = sum(1 for name in os.listdir(broker) if name.endswith(".msg")) if broker.is_dir() else 0
        by_state = dict(Payload.objects.values_list("state").annotate(n=Count("id")).order_by())
        print(json.dumps({"payloads": Payload.objects.count(), "by_state": by_state, "messages": messages}))
        return 0
    print("usage: python -m projects.silo_db prepare|count", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
