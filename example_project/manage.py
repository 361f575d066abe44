"""Django's command-line utility: ``python -m example_project.manage <command>``.

``DJANGO_SETTINGS_MODULE`` picks the silo (default ``example_project.settings.control``).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    """Run a management command for the configured silo."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings.control")
    from django.core.management import execute_from_command_line

    from example_project.celery import app  # noqa: F401  (tasks sent from commands use it)

    execute_from_command_line(argv if argv is not None else sys.argv)


if __name__ == "__main__":
    main()
