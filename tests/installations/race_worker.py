"""One OS process of a race test: set up Django, say ``ready``, run the one JSON command read from stdin.

Run as ``python -m tests.installations.race_worker`` with ``SILO_RACE_DB`` (and
``SILO_RACE_API_URL``) set; :mod:`tests.installations.processes` drives it.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ["DJANGO_SETTINGS_MODULE"] = "tests.installations.race_settings"

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from silo_router.control.models import SlackInstallation  # noqa: E402
from silo_router.control.slack.authorizer import InstallationAuthorizer  # noqa: E402
from silo_router.control.slack.store import DjangoInstallationStore, DjangoOAuthStateStore  # noqa: E402
from silo_router.providers.base import RoutingKeys  # noqa: E402
from tests.installations.builders import rotating_install  # noqa: E402


def run(command: dict[str, Any]) -> Any:
    op = command["op"]
    if op == "setup":
        call_command("migrate", verbosity=0)
        installs = command.get("installs", [])
        for install in installs:
            DjangoInstallationStore().save(
                rotating_install(
                    install["team_id"],
                    bot_token=install["bot_token"],
                    bot_refresh_token=install["refresh_token"],
                    expires_in=install["expires_in"],
                )
            )
        return DjangoOAuthStateStore().issue()
    if op == "authorize":
        found = InstallationAuthorizer().authorize(RoutingKeys(team_id=command["team_id"]))
        return found.token if found is not None else None
    if op == "consume_state":
        return str(DjangoOAuthStateStore().check_and_consume(command["state"]).outcome)
    if op == "inspect":
        record = SlackInstallation.objects.get(integration__external_id=command["team_id"])
        expires = record.bot_token_expires_at
        return {
            "bot_token": record.bot_token,
            "refresh_token": record.bot_refresh_token,
            "expires_at": expires.timestamp() if expires else None,
            "lease_owner": record.rotation_lease_owner,
        }
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    print("ready", flush=True)
    command = json.loads(sys.stdin.readline())
    print(json.dumps({"result": run(command)}), flush=True)


if __name__ == "__main__":
    main()
