"""Settings of region us in the Bolt end-to-end cluster: the example's region, serving Slack with a Bolt app."""

from __future__ import annotations

from example_project.settings.region_us import *  # noqa: F403
from example_project.settings.region_us import SILO_ROUTER as EXAMPLE_SILO_ROUTER

SILO_ROUTER = {**EXAMPLE_SILO_ROUTER, "HANDLER_MODULES": ["tests.bolt.e2e_handlers"]}
