"""An organization admin's browser going through Slack's OAuth install, against real processes.

The steps a person takes, each one HTTP request that a test can also make alone:

1. ``start(install_link)``: open the install link a region handed out; control answers
   with Slack's authorize URL (a redirect, or a page with an "Add to Slack" link) carrying
   the OAuth ``state``;
2. ``consent(authorize_url, team_id=...)``: Slack's consent screen; the fake Slack plays
   the user choosing workspace ``team_id`` and clicking Allow (or Cancel, ``deny=True``)
   and redirects to control's ``redirect_uri`` with a ``code`` (or an ``error``);
3. ``finish(redirect_url)``: back at control, which exchanges the code, stores the
   installation and shows a success (or failure) page.

``SlackSender.authorize`` runs all three at once; this browser stops between them, for the
demo to show each step and for tests to tamper with one. Nothing here reads a database or
imports Django: the outcome is what the browser sees.
"""

from __future__ import annotations

import dataclasses
import html
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

#: Where the fake Slack, like Slack, shows its consent screen.
AUTHORIZE_PATH = "/oauth/v2/authorize"
_AUTHORIZE_LINK = re.compile(r'href="([^"]*' + re.escape(AUTHORIZE_PATH) + r'[^"]*)"')


class InstallFlowError(RuntimeError):
    """A step of the install did not answer as a browser expects (its status and where it was)."""


@dataclasses.dataclass(frozen=True)
class PageSeen:
    """A page the browser ended on: its status, URL and text."""

    status: int
    url: str
    text: str

    @property
    def ok(self) -> bool:
        """Whether the page is a 2xx."""
        return 200 <= self.status < 300


def with_params(url: str, **params: str) -> str:
    """``url`` with ``params`` added to (or replacing those in) its query string."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def query_param(url: str, name: str) -> str | None:
    """The value of query parameter ``name`` in ``url``, or ``None``."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True)).get(name)


class InstallBrowser:
    """One browser session (cookies kept across the steps, as a real browser keeps them)."""

    def __init__(self, *, timeout: float = 15.0) -> None:
        self.session = requests.Session()
        self.timeout = timeout

    def close(self) -> None:
        """Close the pooled connections."""
        self.session.close()

    def __enter__(self) -> InstallBrowser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, url: str) -> requests.Response:
        return self.session.get(url, allow_redirects=False, timeout=self.timeout)

    def start(self, install_link: str) -> str:
        """Open the install link; return the authorize URL control sends the browser to."""
        answer = self._get(install_link)
        location = answer.headers.get("Location", "")
        if answer.status_code in (301, 302, 303, 307) and AUTHORIZE_PATH in location:
            return location
        if answer.status_code == 200:
            link = _AUTHORIZE_LINK.search(answer.text)
            if link is not None:
                return html.unescape(link.group(1))
        raise InstallFlowError(
            f"the install link answered HTTP {answer.status_code} without Slack's authorize URL: {answer.text[:300]!r}"
        )

    def start_page(self, install_link: str) -> PageSeen:
        """Open the install link and stay there (for links control refuses)."""
        answer = self._get(install_link)
        return PageSeen(answer.status_code, install_link, answer.text)

    def consent(self, authorize_url: str, *, team_id: str, deny: bool = False) -> str:
        """At Slack's consent screen, pick workspace ``team_id`` and allow (or deny); return the redirect URL."""
        params = {"team": team_id, **({"fake_consent": "deny"} if deny else {})}
        answer = self._get(with_params(authorize_url, **params))
        location = answer.headers.get("Location", "")
        if answer.status_code not in (302, 303) or not location:
            raise InstallFlowError(f"Slack's consent answered HTTP {answer.status_code}: {answer.text[:300]!r}")
        return location

    def finish(self, redirect_url: str) -> PageSeen:
        """Follow Slack's redirect back to control; the page control shows at the end."""
        answer = self.session.get(redirect_url, allow_redirects=True, timeout=self.timeout)
        return PageSeen(answer.status_code, answer.url, answer.text)
