"""The floor of a durable acknowledgement (``projects.durable_floor``): a bare view that commits the body."""

from __future__ import annotations

from .common import *  # noqa: F403

ROOT_URLCONF = "projects.urls_floor"
