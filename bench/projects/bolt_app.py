"""A Bolt for Python app served by its Django adapter, as Bolt's documentation shows it.

It verifies Slack's signature with the same secret as the other targets and acks the
``resolve_dialog`` button. It never reaches Slack: ``token_verification_enabled=False``
skips the ``auth.test`` call at start, and the single-workspace authorization is given
the ``auth.test`` answer that a real app fetches once and caches (so every request
takes the path a warmed-up production app takes, with no network call), and the Web
API client points at the loopback discard port.
"""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from slack_bolt import Ack, App
from slack_bolt.adapter.django import SlackRequestHandler
from slack_bolt.middleware.authorization import SingleTeamAuthorization
from slack_sdk import WebClient
from slack_sdk.web import SlackResponse

ACTION_ID = "resolve_dialog"

#: What ``auth.test`` answers for the bot of workspace T0US00001.
AUTH_TEST = {
    "ok": True,
    "url": "https://acme.slack.com/",
    "team": "Acme",
    "user": "bench-bot",
    "team_id": "T0US00001",
    "user_id": "U0BOT0001",
    "bot_id": "B0BOT0001",
    "is_enterprise_install": False,
}


def build_app(*, process_before_response: bool) -> App:
    client = WebClient(token=settings.SLACK_BOT_TOKEN, base_url=settings.SLACK_API_URL, timeout=1)
    app = App(
        client=client,
        signing_secret=settings.SLACK_SIGNING_SECRET,
        request_verification_enabled=True,
        token_verification_enabled=False,
        process_before_response=process_before_response,
    )
    authorizations = [m for m in app._middleware_list if isinstance(m, SingleTeamAuthorization)]
    if len(authorizations) != 1:
        raise RuntimeError("Bolt's middleware list changed: expected one SingleTeamAuthorization")
    authorizations[0].auth_test_result = SlackResponse(
        client=client,
        http_verb="POST",
        api_url=settings.SLACK_API_URL + "auth.test",
        req_args={},
        data=AUTH_TEST,
        headers={"x-oauth-scopes": "chat:write,commands"},
        status_code=200,
    )

    @app.action(ACTION_ID)
    def resolve(ack: Ack) -> None:
        ack()

    return app


app = build_app(process_before_response=settings.BOLT_PROCESS_BEFORE_RESPONSE)
handler = SlackRequestHandler(app=app)


@csrf_exempt
def slack_events(request: HttpRequest) -> HttpResponse:
    return handler.handle(request)
