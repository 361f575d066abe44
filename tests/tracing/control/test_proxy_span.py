"""The Web API proxy's span says whether Slack said ok, and its error; never the token."""

from __future__ import annotations

import pytest
from slack_sdk.errors import SlackApiError

from example_project.fake_slack import FakeSlack

from ...proxy.conftest import BOT_TOKEN, ProxyClient, control_url, fake_slack, proxied, proxy_client  # noqa: F401
from ...sentry_capture import Captured

pytestmark = pytest.mark.django_db(transaction=True)

PROXY = "silo_router.control.proxy"


def test_the_proxy_span_says_ok_and_slacks_error(
    proxied: FakeSlack,  # noqa: F811
    proxy_client: ProxyClient,  # noqa: F811
    captured: Captured,
) -> None:
    client = proxy_client("us")
    client.auth_test()
    with pytest.raises(SlackApiError):
        client.views_update(view_id="V0NOTHERE", view={"type": "modal", "title": {"type": "plain_text", "text": "x"}})
    by_method = {span["method"]: span for span in captured.all(PROXY)}
    ok = by_method["auth.test"]
    assert (ok["ok"], ok["status"], ok["outcome"], ok["region"]) == (True, 200, "ok", "us")
    assert "silo_router.error" not in ok.data
    failed = by_method["views.update"]
    assert (failed["ok"], failed["error"], failed["outcome"]) == (False, "not_found", "error")
    assert BOT_TOKEN not in captured.everything()
