"""A handler module that does not import: commands still run, checks say so, envelopes wait instead of being lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from silo_router.envelope import Envelope, seal
from silo_router.exceptions import EnvelopeRejected
from silo_router.region import checks as region_checks
from silo_router.region import handlers
from silo_router.region.receiver import accept
from silo_router.transports.local import delivery_error

from .slack_signing import event_callback

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def broken_modules(settings: Any) -> Iterator[None]:
    """This process's region loads a module that does not exist (the real ones again after)."""
    real = settings.SILO_ROUTER
    settings.SILO_ROUTER = {**real, "HANDLER_MODULES": [*real.get("HANDLER_MODULES", []), "nowhere.handlers"]}
    handlers.load_handler_modules()
    yield
    settings.SILO_ROUTER = real
    handlers.load_handler_modules()


def test_a_module_that_does_not_import_is_a_warning_not_a_crash(broken_modules: None) -> None:
    assert "nowhere.handlers" in handlers.handler_import_errors()
    (warning,) = region_checks.check_handlers()
    assert warning.id == "silo_router.W008" and "'nowhere.handlers'" in warning.msg and warning.hint


@pytest.mark.django_db
def test_envelopes_are_refused_with_a_503_that_control_holds_and_retries(broken_modules: None, client: Client) -> None:
    envelope = Envelope(
        id=Envelope.make_id("slack:event:EvH", "us"),
        idempotency_key="slack:event:EvH",
        provider="slack",
        kind="event_callback:app_mention",
        region="us",
        body=json.dumps(event_callback(event_id="EvH")),
        headers={"content-type": "application/json"},
        strategy="async",
        organization_ids=("101",),
    )
    sealed = seal(envelope)
    response = client.post(
        "/silo-router/envelopes/",
        data=sealed.body,
        content_type="application/json",
        HTTP_X_SILO_ROUTER_SIGNATURE=sealed.signature,
    )
    assert response.status_code == 503
    assert response.json()["error"] == "handlers_not_loaded"
    assert b"nowhere" not in response.content
    with pytest.raises(EnvelopeRejected) as refused:  # the in-process transport's view of the same refusal
        accept(sealed.body, sealed.signature, region="us")
    error = delivery_error(refused.value)
    assert error.retryable and error.hold  # kept and held, never marked delivered with no handler


def test_handler_modules_given_as_a_string_leave_the_check_to_say_so(settings: Any) -> None:
    real = settings.SILO_ROUTER
    settings.SILO_ROUTER = {**real, "HANDLER_MODULES": "tickets.slack_handlers"}
    handlers.load_handler_modules()  # no traceback about a module named 't'
    assert handlers.handler_import_errors() == {}
    settings.SILO_ROUTER = real
    handlers.load_handler_modules()


def test_a_region_with_no_handler_registered_is_warned(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(region_checks, "registered_handler_count", lambda: 0)
    assert [m.id for m in region_checks.check_handlers()] == ["silo_router.W009"]


def test_migrate_runs_while_a_handler_module_is_missing(tmp_path: Path) -> None:
    database = str(tmp_path / "db.sqlite3")
    (tmp_path / "broken_region_settings.py").write_text(
        textwrap.dedent(
            f"""
            SECRET_KEY = "test-only"
            INSTALLED_APPS = ["django.contrib.contenttypes", "silo_router.region"]
            DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {database!r}}}}}
            USE_TZ = True
            SILO_ROUTER = {{
                "MODE": "region",
                "REGION": "us",
                "SIGNING_KEYS": {{"k1": "k" * 40}},
                "SIGNING_KEY_ID": "k1",
                "HANDLER_MODULES": ["tickets.slack_handlers"],
            }}
            """
        )
    )
    env: dict[str, Any] = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "broken_region_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--no-input"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "silo_router.W008" in done.stderr + done.stdout
    assert "'tickets.slack_handlers', which cannot be imported" in done.stderr + done.stdout
