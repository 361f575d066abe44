"""Prepare and inspect the silo_router project's database: ``python -m projects.silo_db prepare|count``.

``prepare`` migrates and creates the one installation every request routes to (Slack
workspace T0US00001 -> organization acme in region ``us``). ``count`` prints, as JSON,
the stored payloads and the Celery messages waiting in the broker (the filesystem
folder or Redis lists), decoded: which delivery task each is and which payload ids it
names. A payload is woken either by ``silo_router.control.deliver`` with ``[id]`` or
by ``silo_router.control.deliver_batch`` with ``[[id, id, ...]]``; ``wakeups`` says
whether every stored payload is named by exactly one message of either task.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

TEAM_ID = "T0US00001"
DELIVER_TASK = "silo_router.control.deliver"
DELIVER_BATCH_TASK = "silo_router.control.deliver_batch"


def broker_messages(settings: Any) -> list[bytes]:
    """Every message waiting in the broker, raw (kombu's JSON envelope)."""
    if settings.CELERY_BROKER_URL.startswith("redis://"):
        import redis

        client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        try:
            # Queues are lists (one per priority step); bindings and the unacked index are sets and hashes.
            lists = [key for key in client.scan_iter(count=1000) if client.type(key) == b"list"]
            return [raw for key in lists for raw in client.lrange(key, 0, -1)]
        finally:
            client.close()
    folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_out"])
    if not folder.is_dir():
        return []
    return [path.read_bytes() for path in sorted(folder.iterdir()) if path.name.endswith(".msg")]


def named_payloads(message: bytes) -> tuple[str, list[str]]:
    """(task name, payload ids it names) of one Celery protocol 2 message."""
    envelope = json.loads(message)
    task = str(envelope.get("headers", {}).get("task", ""))
    body = envelope["body"]
    if envelope.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    if task == DELIVER_TASK:
        return task, [str(args[0])]
    if task == DELIVER_BATCH_TASK:
        return task, [str(i) for i in args[0]]
    return task, []


def wakeups(stored_ids: Iterable[str], messages: Iterable[bytes]) -> dict[str, Any]:
    """Which stored payloads the messages name: none, once, or more than once; and which names match no row."""
    by_task: Counter[str] = Counter()
    named: Counter[str] = Counter()
    for message in messages:
        task, ids = named_payloads(message)
        by_task[task] += 1
        named.update(ids)
    stored = set(stored_ids)
    unnamed = sorted(stored - set(named))
    twice = sorted(i for i, n in named.items() if n > 1 and i in stored)
    unknown = sorted(set(named) - stored)
    return {
        "by_task": dict(by_task),
        "ids_named": sum(named.values()),
        "unnamed": len(unnamed),
        "named_more_than_once": len(twice),
        "named_but_not_stored": len(unknown),
        "examples": {"unnamed": unnamed[:3], "named_more_than_once": twice[:3], "named_but_not_stored": unknown[:3]},
        "ok": not unnamed and not twice and not unknown,
    }


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
        messages = broker_messages(settings)
        by_state = dict(Payload.objects.values_list("state").annotate(n=Count("id")).order_by())
        stored = [str(pk) for pk in Payload.objects.values_list("pk", flat=True).iterator()]
        print(
            json.dumps(
                {
                    "payloads": len(stored),
                    "by_state": by_state,
                    "messages": len(messages),
                    "wakeups": wakeups(stored, messages),
                }
            )
        )
        return 0
    print("usage: python -m projects.silo_db prepare|count", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
