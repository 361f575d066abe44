"""The handler module of the end-to-end cluster's region us: the Bolt app of ``e2e_app``, mounted."""

from __future__ import annotations

from silo_router.region.bolt import mount
from tests.bolt.e2e_app import app

mount(app)
