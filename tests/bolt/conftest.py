"""Bolt apps in a region: real slack_bolt, two workspaces installed for real in the fake Slack.

The workspaces (``fake``, ``workspaces``) are those of ``tests/workspaces``: the monolith
test settings without ``BOT_TOKEN``, each workspace's token from the fake's OAuth, so a
Slack call made with the wrong workspace's token fails. ``region_env`` is what a region's
operator sets for a Bolt app (docs/bolt.md): no Slack token, and placeholders for the
signing secret and the OAuth credentials, with which Bolt builds an app without calling Slack.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_bolt import App

from tests.e2e.conftest import pytest_runtest_makereport  # noqa: F401  (service logs in a failed e2e report)
from tests.workspaces.conftest import fake, workspaces  # noqa: F401  (fixtures)

#: What a region's operator sets so that an unchanged Bolt app builds without a Slack credential:
#: placeholders (Bolt before 1.2x refuses an empty signing secret; OAuth settings make it skip auth.test).
REGION_ENV = {
    "SLACK_SIGNING_SECRET": "silo-region-placeholder",
    "SLACK_CLIENT_ID": "silo-region-placeholder",
    "SLACK_CLIENT_SECRET": "silo-region-placeholder",
}
#: Slack credentials a region must not have.
UNSET_ENV = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN")


@pytest.fixture
def region_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The region's environment for a Bolt app; ``HOME`` is a scratch directory (Bolt's file stores live there)."""
    for name in UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in REGION_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
def new_app(region_env: None) -> Callable[..., App]:
    """``new_app(**options)``: a Bolt app built as a documented app builds it, in the region's environment."""

    def build(**options: Any) -> App:
        return App(name="tests.bolt", **options)

    return build


@pytest.fixture
def import_fresh(region_env: None) -> Iterator[Callable[[str], Any]]:
    """``import_fresh(module)``: import a module now (in the region's environment), forgotten after the test."""
    imported: list[str] = []

    def load(name: str) -> Any:
        sys.modules.pop(name, None)
        imported.append(name)
        return importlib.import_module(name)

    yield load
    for name in imported:
        sys.modules.pop(name, None)
