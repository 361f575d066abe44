"""The ``eu`` region silo."""

from __future__ import annotations

from .region import *  # noqa: F403
from .region import region_settings

DATABASES, SILO_ROUTER = region_settings("eu")
