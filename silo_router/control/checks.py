"""System checks of the control silo: which runner delivers, and where the middleware sits."""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Info, Warning

from silo_router.checks import MIDDLEWARE_PATH
from silo_router.conf import conf
from silo_router.plugins import did_you_mean

from . import runner

#: Django's own middleware, none of which reads a request's body before the view.
DJANGO_MIDDLEWARE_PREFIX = "django."


#: The management commands that say which runner is active (I001); the others, run often
#: (``migrate``, ``createsuperuser``, ``silo_router_map``...), would print it every time.
SAYS_RUNNER = frozenset({"check", "runserver"})


def _says_runner() -> bool:
    """Whether this process should say which runner is active: ``check``, ``runserver``, or not a command."""
    program = sys.argv[0] if sys.argv else ""
    command = os.path.basename(program) in ("manage.py", "django-admin") or program.endswith(
        os.path.join("django", "__main__.py")
    )
    return not command or len(sys.argv) < 2 or sys.argv[1] in SAYS_RUNNER


def check_runner(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """``RUNNER`` (E035), a Celery runner that cannot run (E036, W010), and which runner is active
    (I001, from ``check`` and ``runserver`` only)."""
    if not conf.is_control:
        return []
    chosen = conf.get("RUNNER")
    if chosen is not None and chosen not in runner.RUNNERS:
        return [
            Error(
                f"SILO_ROUTER['RUNNER'] is {chosen!r}.",
                hint="Use 'embedded', 'celery', or leave it unset (Celery when a broker is configured)."
                + did_you_mean(str(chosen), runner.RUNNERS),
                id="silo_router.E035",
            )
        ]
    if runner.active_runner() == runner.EMBEDDED:
        said = Info(
            "Deliveries run on the embedded runner: threads of each web process (or of "
            "`manage.py silo_router_runner`) deliver, retry and sweep.",
            hint="For production, install the [celery] extra, set CELERY_BROKER_URL and run Celery's worker and "
            "beat. Silence this with SILENCED_SYSTEM_CHECKS = ['silo_router.I001'].",
            id="silo_router.I001",
        )
    else:
        problems = _celery_problems()
        if problems:
            return problems
        said = Info(
            "Deliveries run on Celery: run a worker and beat (see silo_router.control.beat).",
            hint="Silence this with SILENCED_SYSTEM_CHECKS = ['silo_router.I001'].",
            id="silo_router.I001",
        )
    return [said] if _says_runner() else []


def _celery_problems() -> list[CheckMessage]:
    if importlib.util.find_spec("celery") is None:
        return [
            Error(
                "SILO_ROUTER['RUNNER'] is 'celery' but Celery is not installed.",
                hint="pip install 'django-silo-router[celery]', or use the embedded runner (RUNNER 'embedded').",
                id="silo_router.E036",
            )
        ]
    if not runner.celery_broker_configured():
        return [
            Error(
                "SILO_ROUTER['RUNNER'] is 'celery' but no Celery broker is configured: every payload would wait "
                "for a broker that Celery cannot reach.",
                hint="Set CELERY_BROKER_URL (e.g. 'redis://localhost:6379/0'), or unset RUNNER to deliver with the "
                "embedded runner.",
                id="silo_router.E036",
            )
        ]
    if not _project_celery_apps():
        return [
            Warning(
                "A Celery broker is configured but no Celery app of this project is loaded: `celery -A <project> "
                "worker` will not find one, and CELERY_* settings are only read by an app that is told to.",
                hint="Add <project>/celery.py with app = Celery('<project>'); "
                "app.config_from_object('django.conf:settings', namespace='CELERY'); app.autodiscover_tasks(); "
                "and import it in <project>/__init__.py (README, Production).",
                id="silo_router.W010",
            )
        ]
    return []


def _project_celery_apps() -> list[Any]:
    """Celery apps created by the project (not Celery's own fallback app, named 'default')."""
    from celery import _state

    return [app for app in _state._get_active_apps() if app.main != "default"]  # type: ignore[attr-defined]


def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """The middleware is not first (W011): what runs before it runs on every provider request, and may read
    or change the body whose signature the middleware checks."""
    if not conf.is_control:
        return []
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    if MIDDLEWARE_PATH not in middleware:
        return []  # W002
    before = middleware[: middleware.index(MIDDLEWARE_PATH)]
    if not before:
        return []
    foreign = [path for path in before if not str(path).startswith(DJANGO_MIDDLEWARE_PREFIX)]
    if foreign:
        message = (
            f"SiloRouterMiddleware comes after {', '.join(map(str, foreign))}: a middleware that reads or changes "
            "the request body before it makes Slack's signature fail (401) or reads a body it should not."
        )
    else:
        message = (
            f"SiloRouterMiddleware is not first in MIDDLEWARE: {', '.join(map(str, before))} run on every Slack "
            "request first, inside Slack's 3 seconds."
        )
    return [
        Warning(
            message,
            hint=f"Put {MIDDLEWARE_PATH!r} first in MIDDLEWARE.",
            id="silo_router.W011",
        )
    ]
