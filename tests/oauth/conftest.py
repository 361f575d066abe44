"""The install flow: control's views through Django's test client, Slack played by the fake.

The browser is simulated step by step: the install view's redirect is followed to the
fake's consent screen over real HTTP (with ``team=`` naming the workspace whose user
consents), and the fake's redirect back is given to the test client, which keeps the
state cookie as a browser would.
"""

from __future__ import annotations

import http.client
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client

from example_project.fake_slack import FakeSlack
from silo_router.control.models import OrganizationMapping

CLIENT_ID = "111.222"
CLIENT_SECRET = "oauth-tests-client-secret-0123456789"
PREFIX = "/extensions/slack/"
INSTALL = PREFIX + "install/"
KEYS = {
    "us": {"us-1": "us-region-hop-key-for-oauth-tests-0123456789"},
    "eu": {"eu-1": "eu-region-hop-key-for-oauth-tests-0123456789"},
}
US_TEAM, EU_TEAM, OTHER_TEAM = "T0OAUTHUS", "T0OAUTHEU", "T0OAUTHXX"


@pytest.fixture
def fake() -> Iterator[FakeSlack]:
    with FakeSlack(signing_secret="oauth-tests-signing", client_id=CLIENT_ID, client_secret=CLIENT_SECRET) as server:
        server.add_workspace(US_TEAM, name="Acme US")
        server.add_workspace(EU_TEAM, name="Globex EU")
        server.add_workspace(OTHER_TEAM, name="Other Co")
        yield server


@pytest.fixture
def oauth_settings(settings: Any, fake: FakeSlack) -> FakeSlack:
    """Control with OAuth credentials, installations in the database, Slack = the fake."""
    base = settings.SILO_ROUTER
    settings.SILO_ROUTER = {
        **base,
        "REGIONS": {name: {"TRANSPORT": "local", "SIGNING_KEYS": keys} for name, keys in KEYS.items()},
        "SLACK": {
            **base["SLACK"],
            "BOT_TOKEN": None,
            "CLIENT_ID": CLIENT_ID,
            "CLIENT_SECRET": CLIENT_SECRET,
            "SCOPES": ["chat:write", "commands"],
            "USER_SCOPES": ["search:read"],
            "API_URL": fake.api_url,
            "AUTHORIZE_URL": fake.authorize_url,
        },
    }
    return fake


@pytest.fixture
def orgs(db: None) -> dict[str, OrganizationMapping]:
    return {
        "acme": OrganizationMapping.objects.create(organization_id="101", slug="acme", name="Acme", region="us"),
        "globex": OrganizationMapping.objects.create(organization_id="201", slug="globex", name="Globex", region="eu"),
    }


@dataclass
class Consent:
    """Where the fake's consent screen sends the browser back to."""

    location: str

    @property
    def path(self) -> str:
        """The redirect URL as the test client takes it (path and query)."""
        parts = urllib.parse.urlsplit(self.location)
        return parts.path + "?" + parts.query

    @property
    def query(self) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.location).query))


def consent(authorize_url: str, *, team: str, deny: bool = False) -> Consent:
    """A user of ``team`` answers the consent screen ``authorize_url`` (a real GET to the fake)."""
    extra = {"team": team, **({"fake_consent": "deny"} if deny else {})}
    url = authorize_url + "&" + urllib.parse.urlencode(extra)
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        connection.request("GET", parts.path + "?" + parts.query)
        answer = connection.getresponse()
        answer.read()
    finally:
        connection.close()
    assert answer.status == 302, f"the fake's consent screen answered {answer.status}"
    return Consent(answer.getheader("Location") or "")


def start(client: Client, link: str = INSTALL) -> HttpResponse:
    """The browser opens an install link; the install view sends it to Slack."""
    parts = urllib.parse.urlsplit(link)
    response: HttpResponse = client.get(parts.path + ("?" + parts.query if parts.query else ""))
    return response


def install(client: Client, link: str = INSTALL, *, team: str) -> HttpResponse:
    """The whole dance: install link, consent by a user of ``team``, redirect back."""
    started = start(client, link)
    assert started.status_code == 302, started.content
    response: HttpResponse = client.get(consent(started["Location"], team=team).path)
    return response
