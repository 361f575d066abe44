"""``manage.py silo_router_runner``: the embedded runner in a process of its own, for deliveries without Celery.

Web processes with the embedded runner deliver what they store; this command adds a
process that only delivers and sweeps (what web processes that stopped left behind,
retries that come due), for a control silo whose web processes are restarted often or
that should not run handlers' deliveries beside requests. With Celery, run Celery's
worker and beat instead.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from silo_router.conf import conf
from silo_router.control import runner


class Command(BaseCommand):
    help = "Run the embedded delivery runner (deliveries, retries and the sweep) until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--seconds", type=float, default=None, help="Stop after this many seconds (default: run until stopped)."
        )

    def handle(self, *args: Any, seconds: float | None = None, **options: Any) -> None:
        if not conf.is_control:
            raise CommandError("silo_router_runner runs in the control silo (MODE 'control' or 'monolith').")
        if not runner.embedded():
            raise CommandError(
                "The active runner is Celery (a broker is configured or SILO_ROUTER['RUNNER'] is 'celery'): "
                "run `celery worker` and `celery beat` instead, or set SILO_ROUTER['RUNNER'] = 'embedded'."
            )
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        runner.runner.start()
        self.stdout.write(f"silo_router runner: {conf.RUNNER_THREADS} threads, a sweep every {conf.SWEEP_INTERVAL:g} s")
        stop.wait(seconds)
        left = runner.runner.pending()
        runner.runner.stop()  # running tasks finish; queued ones are not lost: the next sweep finds their rows
        self.stdout.write(f"silo_router runner: stopped ({left} tasks were queued or running)")
