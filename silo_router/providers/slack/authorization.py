"""Which credentials a Slack call uses: the installation's, found by the configured authorizer.

A multi-workspace app keeps installations in control (``SLACK["AUTHORIZER"]``, by default
the Django-model store of :mod:`silo_router.control.slack`). A single-workspace app may
set ``SLACK["BOT_TOKEN"]`` instead: every request then uses that token, as Bolt's
``App(token=...)`` does. The authorizer is imported by dotted path, so this module does
not depend on the control layer.
"""

from __future__ import annotations

from silo_router.conf import conf
from silo_router.plugins import cached, import_by_alias
from silo_router.providers.base import Authorization, Authorizer, RoutingKeys


class SingleTokenAuthorizer:
    """Every request is authorized with ``SLACK["BOT_TOKEN"]`` (a single-workspace app)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def authorize(self, routing: RoutingKeys) -> Authorization | None:
        return Authorization(
            installation_id="",
            token=self._token,
            team_id=routing.team_id,
            enterprise_id=routing.enterprise_id,
            is_enterprise_install=routing.is_enterprise_install,
            app_id=routing.app_id,
        )

    def for_installation(self, installation_id: str) -> Authorization | None:
        return Authorization(installation_id=installation_id, token=self._token)


@cached
def authorizer() -> Authorizer:
    """The configured authorizer, built once (``SingleTokenAuthorizer`` when ``BOT_TOKEN`` is set)."""
    slack = conf.SLACK
    if slack.get("BOT_TOKEN"):
        return SingleTokenAuthorizer(str(slack["BOT_TOKEN"]))
    found: Authorizer = import_by_alias(str(slack["AUTHORIZER"]), aliases={}, setting="SLACK.AUTHORIZER")()
    return found
