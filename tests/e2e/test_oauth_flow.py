"""Installing the app through Slack's OAuth flow, and the ways it fails, with real processes.

A browser (``InstallBrowser``, cookies kept) opens an install link made by a region,
goes through the fake Slack's consent screen and back to control. Each test installs a
workspace of its own (created in the fake for it), so the session's other workspaces are
untouched. Control's failure pages name their reason (``Reason: <code>...</code>``).
"""

from __future__ import annotations

import itertools
import re

import pytest

from example_project.cluster import HOST, SLACK_PATH, Cluster
from example_project.install_browser import InstallBrowser, PageSeen, query_param, with_params

from .helpers import ASYNC_TIMEOUT, EU_ORG, US_ORG, new_payloads, payload_ids, replies_to, wait_until

pytestmark = pytest.mark.e2e

#: The cookie control binds an install's state to (Bolt's name).
STATE_COOKIE = "slack-app-oauth-state"
_serial = itertools.count(1)


def new_workspace(cluster: Cluster, label: str) -> str:
    """A workspace of the fake that no one installed yet (``T0<label><n>``)."""
    team_id = f"T0{label}{next(_serial):03d}"
    cluster.fake.add_workspace(team_id, name=f"Workspace {team_id}", channels=[f"C{team_id[1:]}"])
    return team_id


def bind_state(browser: InstallBrowser, state: str) -> None:
    """Give ``browser`` the state cookie control would have set for ``state`` (a replay, or an attacker's own)."""
    browser.session.cookies.clear()
    browser.session.cookies.set(STATE_COOKIE, state, domain=HOST, path=SLACK_PATH)


def reason(page: PageSeen) -> str | None:
    """The reason control's failure page names."""
    match = re.search(r"Reason: <code>([a-z_]+)</code>", page.text)
    return match.group(1) if match else None


def exchanges(cluster: Cluster) -> int:
    """How many ``oauth.v2.access`` calls the fake has seen."""
    return len(cluster.fake.calls("oauth.v2.access"))


def test_an_install_links_the_workspace_to_the_organization_of_the_link(cluster: Cluster) -> None:
    """globex's admin installs a new workspace from eu's link: it is routed to eu, its token stored encrypted."""
    team_id = new_workspace(cluster, "NEW")
    link = cluster.install_links(["globex"])["globex"]
    assert (query_param(link, "organization"), query_param(link, "region")) == (EU_ORG, "eu")

    with InstallBrowser() as browser:
        authorize = browser.start(link)
        assert authorize.startswith(cluster.slack_url + "/oauth/v2/authorize?")
        state = query_param(authorize, "state")
        assert state and browser.session.cookies.get(STATE_COOKIE) == state
        assert query_param(authorize, "client_id") == cluster.client_id
        assert set(str(query_param(authorize, "scope")).split(",")) >= {"chat:write", "commands"}
        redirect = browser.consent(authorize, team_id=team_id)
        assert redirect.startswith(cluster.control_url + SLACK_PATH + "oauth_redirect/?")
        page = browser.finish(redirect)

    assert page.status == 200, page.text
    assert "Slack app installed" in page.text and "Globex" in page.text
    installed = cluster.installation(team_id)
    assert installed is not None and installed.active and installed.organizations == ("globex",)
    [token] = cluster.fake.tokens(team_id)
    assert installed.encrypted_bot_token and token not in installed.encrypted_bot_token
    before = payload_ids(cluster)
    sent = cluster.sender().slash_command(team_id=team_id, command="/ticket", channel_id=f"C{team_id[1:]}")
    assert sent.status == 200
    assert [(p.kind, p.region) for p in new_payloads(cluster, before)] == [("command:/ticket", "eu")]
    [reply] = wait_until(lambda: replies_to(cluster, sent.response_url), timeout=ASYNC_TIMEOUT, what="eu's reply")
    assert "(region eu)" in reply["params"]["text"]


def test_a_state_that_is_not_this_browsers_is_refused(cluster: Cluster) -> None:
    """Slack's redirect with another state than the one control bound to this browser: 400, nothing exchanged."""
    team_id = new_workspace(cluster, "BAD")
    link = cluster.install_links(["acme"])["acme"]
    with InstallBrowser() as browser:
        authorize = browser.start(link)
        redirect = browser.consent(authorize, team_id=team_id)
        exchanged = exchanges(cluster)

        other = browser.finish(with_params(redirect, state="forged" + str(query_param(redirect, "state"))[6:]))
        assert (other.status, reason(other)) == (400, "state_mismatch")

        # The attacker's own browser, where the cookie says what the forged state says.
        forged = "x" + str(query_param(redirect, "state"))[1:]
        bind_state(browser, forged)
        bad = browser.finish(with_params(redirect, state=forged))
        assert (bad.status, reason(bad)) == (400, "invalid_state")
        assert exchanges(cluster) == exchanged  # the code was never sent to Slack
        assert cluster.installation(team_id) is None

        # The real state, still unspent, finishes the install it was issued for.
        bind_state(browser, str(query_param(redirect, "state")))
        good = browser.finish(redirect)
    assert good.status == 200, good.text
    installed = cluster.installation(team_id)
    assert installed is not None and installed.organizations == ("acme",)


def test_a_state_is_used_once(cluster: Cluster) -> None:
    """A second consent with the same state (a replayed install) is refused after the first succeeded."""
    team_id = new_workspace(cluster, "TWO")
    link = cluster.install_links(["acme"])["acme"]
    with InstallBrowser() as browser:
        authorize = browser.start(link)
        state = str(query_param(authorize, "state"))
        first = browser.finish(browser.consent(authorize, team_id=team_id))
        assert first.status == 200, first.text
        assert browser.session.cookies.get(STATE_COOKIE) is None  # control dropped it with the install

        again = browser.consent(authorize, team_id=team_id)  # Slack hands out a new code for the same state
        exchanged = exchanges(cluster)
        bind_state(browser, state)  # replayed with its cookie
        replayed = browser.finish(again)
        assert (replayed.status, reason(replayed)) == (400, "used_state")

        browser.session.cookies.clear()
        without_cookie = browser.finish(again)
        assert (without_cookie.status, reason(without_cookie)) == (400, "state_cookie_missing")
    assert exchanges(cluster) == exchanged
    [token] = cluster.fake.tokens(team_id)  # only the first install's token exists
    assert token


def test_a_denied_consent_installs_nothing(cluster: Cluster) -> None:
    """The user cancels at Slack: control says so (200, nothing went wrong), stores nothing, spends the state."""
    team_id = new_workspace(cluster, "NO")
    link = cluster.install_links(["globex"])["globex"]
    with InstallBrowser() as browser:
        authorize = browser.start(link)
        state = str(query_param(authorize, "state"))
        redirect = browser.consent(authorize, team_id=team_id, deny=True)
        assert query_param(redirect, "error") == "access_denied" and query_param(redirect, "code") is None
        exchanged = exchanges(cluster)
        page = browser.finish(redirect)
        assert (page.status, reason(page)) == (200, "cancelled")
        assert "Installation cancelled" in page.text

        allowed = browser.consent(authorize, team_id=team_id)  # changing one's mind needs a new install link
        bind_state(browser, state)
        late = browser.finish(allowed)
        assert (late.status, reason(late)) == (400, "used_state")
    assert exchanges(cluster) == exchanged
    assert cluster.installation(team_id) is None
    assert cluster.fake.tokens(team_id) == []


def test_an_install_link_cannot_name_another_regions_organization(cluster: Cluster) -> None:
    """us's link edited to name globex (eu), or a link with its grant altered: 400 before Slack is involved."""
    link = cluster.install_links(["acme"])["acme"]
    with InstallBrowser() as browser:
        for edited, expected in (
            (with_params(link, organization=EU_ORG), "invalid_grant"),  # us's grant does not cover 201
            (with_params(link, organization=EU_ORG, region="eu"), "invalid_grant"),  # nor does eu's key verify it
            (with_params(link, grant=str(query_param(link, "grant"))[:-4] + "0000"), "invalid_grant"),
        ):
            page = browser.start_page(edited)
            assert (page.status, reason(page)) == (400, expected), edited
            assert browser.session.cookies.get(STATE_COOKIE) is None  # no state was issued
    assert query_param(link, "organization") == US_ORG
