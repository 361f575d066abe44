"""Install links a region builds: control's install URL with a grant only that region could sign."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
from django.test import override_settings

from silo_router.conf import conf
from silo_router.exceptions import EnvelopeRejected, SiloRouterConfigurationError
from silo_router.providers.slack.proxy_signing import verify_install_grant
from silo_router.region.installs import install_url

from .conftest import INSTALL, KEYS

INSTALL_URL = "https://control.example.com" + INSTALL


def region(**changes: Any) -> dict[str, Any]:
    raw = conf._raw
    return {
        **raw,
        "MODE": "region",
        "REGION": "eu",
        "SIGNING_KEYS": KEYS["eu"],
        "SIGNING_KEY_ID": None,
        "SLACK": {**raw["SLACK"], "INSTALL_URL": INSTALL_URL},
        **changes,
    }


def test_the_link_carries_a_grant_signed_with_the_regions_key() -> None:
    with override_settings(SILO_ROUTER=region()):
        link = install_url("201")
    assert link.startswith(INSTALL_URL + "?")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(link).query))
    assert (query["organization"], query["region"]) == ("201", "eu")
    assert verify_install_grant(organization_id="201", region="eu", grant=query["grant"], keys=KEYS["eu"], max_age=60)
    with pytest.raises(EnvelopeRejected):
        verify_install_grant(organization_id="201", region="eu", grant=query["grant"], keys=KEYS["us"], max_age=60)
    with pytest.raises(EnvelopeRejected):
        verify_install_grant(organization_id="202", region="eu", grant=query["grant"], keys=KEYS["eu"], max_age=60)
    assert KEYS["eu"]["eu-1"] not in link


def test_an_install_url_with_a_query_keeps_it() -> None:
    slack = {**conf._raw["SLACK"], "INSTALL_URL": INSTALL_URL + "?team=T0ABC"}
    with override_settings(SILO_ROUTER=region(SLACK=slack)):
        assert install_url("201").startswith(INSTALL_URL + "?team=T0ABC&organization=201")


def test_a_region_without_install_url_says_so() -> None:
    slack = {**conf._raw["SLACK"], "INSTALL_URL": None}
    with override_settings(SILO_ROUTER=region(SLACK=slack)):
        with pytest.raises(SiloRouterConfigurationError, match="INSTALL_URL"):
            install_url("201")


def test_a_region_without_its_key_says_so() -> None:
    with override_settings(SILO_ROUTER=region(SIGNING_KEY_ID="missing")):
        with pytest.raises(SiloRouterConfigurationError, match="SIGNING_KEY_ID"):
            install_url("201")


def test_a_monolith_links_to_its_own_install_view() -> None:
    assert install_url("101").startswith(INSTALL + "?organization=101&region=us&grant=")
