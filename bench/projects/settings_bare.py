"""The ceiling: a Django view that only answers 200."""

from __future__ import annotations

from .common import *  # noqa: F403

ROOT_URLCONF = "projects.urls_bare"
