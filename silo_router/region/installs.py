"""Install links built in a region: "Add to Slack" for one of this region's organizations.

A region knows which of its users may connect a workspace to an organization; control
does not. :func:`install_url` is control's install URL (``SLACK["INSTALL_URL"]``; in a monolith,
its own install path) carrying a grant signed with this region's own hop key, valid for
``SLACK["STATE_EXPIRATION"]`` seconds. Control checks it and, once the user has approved
the app at Slack, maps the workspace to that organization.
"""

from __future__ import annotations

import urllib.parse

from silo_router.conf import conf
from silo_router.exceptions import SiloRouterConfigurationError
from silo_router.providers.slack.proxy_signing import sign_install_grant


def install_url(organization_id: str) -> str:
    """A link that installs the Slack app for ``organization_id``, an organization of this region."""
    slack = conf.SLACK
    base = slack["INSTALL_URL"] or (_local_install_path() if conf.is_control else None)
    if not base:
        raise SiloRouterConfigurationError(
            "SILO_ROUTER['SLACK']['INSTALL_URL'] is not set: set it to control's public install URL "
            "(for example https://control.example.com/extensions/slack/install/)."
        )
    region = conf.REGION
    key_id = conf.signing_key_id_for(region) if region else None
    keys = conf.signing_keys_for(region) if region else {}
    if not region or not key_id or key_id not in keys:
        raise SiloRouterConfigurationError(
            "An install link is signed with this region's hop key: set SILO_ROUTER['REGION'], SIGNING_KEYS "
            "and SIGNING_KEY_ID."
        )
    grant = sign_install_grant(organization_id=str(organization_id), region=region, key_id=key_id, key=keys[key_id])
    query = urllib.parse.urlencode({"organization": organization_id, "region": region, "grant": grant})
    return f"{base}{'&' if '?' in str(base) else '?'}{query}"


def _local_install_path() -> str | None:
    """In a monolith, the install view of this very server (under the first Slack URL prefix)."""
    for prefix, provider in conf.URL_PREFIXES.items():
        if provider == "slack":
            return prefix + str(conf.SLACK["INSTALL_PATH"])
    return None
