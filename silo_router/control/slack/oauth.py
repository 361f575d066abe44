"""The Slack install flow in control: "Add to Slack", and the redirect back from Slack.

``<slack prefix><INSTALL_PATH>`` (GET) checks the optional grant that names the
organization the install is for, issues a signed, single-use, expiring state that
carries it, binds the state to the browser with a cookie and sends the browser to Slack.
``<slack prefix><REDIRECT_PATH>`` (GET) checks the state against the cookie and the
state store, exchanges the code with ``oauth.v2.access`` (and ``auth.test`` for the bot
id, as Bolt does), stores the installation linked to the organization and shows a page.

Grants: a region builds the link with :func:`silo_router.region.installs.install_url`
(signed with its own hop key, see :mod:`silo_router.providers.slack.proxy_signing`);
control's admin with :func:`install_link` (signed with ``SECRET_KEY``). Without a grant
the install is linked to no organization, for an operator to map later.

Pages are the templates ``silo_router/slack/install_success.html`` and
``install_failure.html`` (override them in a project template directory). They never
show a code, a state or a token. Statuses: success 200; the user cancelling at Slack
200 (nothing went wrong); a bad, expired, reused or unbound state, a missing code or a
bad grant 400; Slack refusing the exchange or unreachable 502; this server unable to
store or not configured 503.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

from django.core import signing as django_signing
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.template.loader import render_to_string
from django.utils.crypto import constant_time_compare
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.oauth import AuthorizeUrlGenerator
from slack_sdk.oauth.installation_store import Installation

from silo_router.conf import conf
from silo_router.exceptions import EnvelopeRejected, SiloRouterConfigurationError
from silo_router.providers.slack.client import DEFAULT_TIMEOUT
from silo_router.providers.slack.proxy_signing import NAME_RE, verify_install_grant

from ..models import OrganizationMapping
from .store import DjangoInstallationStore, DjangoOAuthStateStore, StateCheck

logger = logging.getLogger("silo_router.control.oauth")

#: The cookie that binds a state to the browser that started the install (Bolt's name).
STATE_COOKIE = "slack-app-oauth-state"
#: Salt of the grants control's admin signs with ``SECRET_KEY``.
ADMIN_GRANT_SALT = "silo_router.slack.install-grant"
SUCCESS_TEMPLATE = "silo_router/slack/install_success.html"
FAILURE_TEMPLATE = "silo_router/slack/install_failure.html"
#: Slack ids and error names as they may be shown or passed on (anything else is dropped).
_SLACK_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")

#: slack_sdk writes request and answer bodies (the new tokens) to DEBUG logs when its
#: logger's own level allows it; the exchange's client uses this logger, which does not.
_sdk_logger = logging.getLogger("silo_router.control.oauth.slack_sdk")
_sdk_logger.setLevel(logging.INFO)

View = Callable[[HttpRequest, str], HttpResponse]

FAILURES: Mapping[str, tuple[str, str]] = {
    "cancelled": ("Installation cancelled", "The app was not installed. You can close this window."),
    "slack_refused": ("Installation failed", "Slack did not complete the installation."),
    "missing_state": ("Installation failed", "This link is incomplete. Start the installation again."),
    "state_cookie_missing": (
        "Installation failed",
        "This installation was not started in this browser (or its cookie expired). Start it again "
        "from the install link, in this browser.",
    ),
    "state_mismatch": (
        "Installation failed",
        "This installation was started in another window or browser. Start it again from the install link.",
    ),
    "invalid_state": ("Installation failed", "This installation link is not valid. Start the installation again."),
    "expired_state": ("Installation expired", "This installation took too long. Start it again."),
    "used_state": ("Installation already completed", "This installation link was already used."),
    "missing_code": ("Installation failed", "Slack's answer is incomplete. Start the installation again."),
    "invalid_grant": ("Install link not valid", "This install link is not valid. Ask for a new one."),
    "expired_grant": ("Install link expired", "This install link has expired. Ask for a new one."),
    "unknown_organization": ("Install link not valid", "This install link names an organization that is unknown."),
    "wrong_region": ("Install link not valid", "This install link names an organization of another region."),
    "slack_error": ("Installation failed", "Slack refused to complete the installation."),
    "slack_unreachable": ("Installation failed", "Slack could not be reached. Try again in a moment."),
    "storage_unavailable": ("Installation failed", "The installation could not be saved. Try again in a moment."),
    "not_configured": ("Installation unavailable", "This server is not set up to install the Slack app."),
    "method_not_allowed": ("Installation failed", "Open this link in a browser."),
}


class Failure(Exception):
    """The install flow stops here with a failure page."""

    def __init__(self, status: int, reason: str, *, slack_error: str | None = None, spent: bool = True) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        #: The flow's state is used up (its cookie can go).
        self.spent = spent
        self.slack_error = slack_error if slack_error and _SLACK_NAME_RE.match(slack_error) else None


def view_for(subpath: str) -> View | None:
    """The install flow view served at ``subpath`` under the Slack prefix, if any."""
    name = subpath.strip("/")
    if not name:
        return None
    slack = conf.SLACK
    if name == str(slack["INSTALL_PATH"] or "").strip("/"):
        return install
    if name == str(slack["REDIRECT_PATH"] or "").strip("/"):
        return redirect
    return None


def install(request: HttpRequest, prefix: str) -> HttpResponse:
    """Start an install: check the grant, issue the state, send the browser to Slack."""
    try:
        _require_get(request)
        slack = conf.SLACK
        if not slack["CLIENT_ID"] or not slack["CLIENT_SECRET"]:
            raise Failure(503, "not_configured")
        organization = granted_organization(request.GET)
        state = DjangoOAuthStateStore().issue(organization=organization)
    except Failure as failure:
        return failure_page(failure)
    except DatabaseError:
        logger.exception("could not issue a Slack install state")
        return failure_page(Failure(503, "storage_unavailable"))
    generator = AuthorizeUrlGenerator(
        client_id=str(slack["CLIENT_ID"]),
        scopes=list(slack["SCOPES"] or ()),
        user_scopes=list(slack["USER_SCOPES"] or ()),
        redirect_uri=_quoted(redirect_uri(request, prefix)),
        authorization_url=str(slack["AUTHORIZE_URL"]),
    )
    team = request.GET.get("team")
    url = generator.generate(_quoted(state), team=team if team and _SLACK_NAME_RE.match(team) else None)
    response = HttpResponseRedirect(url)
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=int(slack["STATE_EXPIRATION"]),
        path=prefix,
        secure=request.is_secure(),
        httponly=True,
        samesite="Lax",
    )
    response["Cache-Control"] = "no-store"
    logger.info(
        "started a Slack install for %s",
        f"organization {organization.organization_id}" if organization else "no organization",
    )
    return response


def redirect(request: HttpRequest, prefix: str) -> HttpResponse:
    """Finish an install: check the state, exchange the code, store and link the installation.

    The state cookie is cleared once the state is spent (whatever the outcome after
    that); a request that cannot be this browser's flow leaves it alone.
    """
    try:
        _require_get(request)
        check = _checked_state(request)
        installation = exchange(str(request.GET.get("code")), redirect_uri=redirect_uri(request, prefix))
        integration = DjangoInstallationStore().save_for(installation, organization=check.organization)
    except Failure as failure:
        response = failure_page(failure)
        if not failure.spent:
            return response
    except DatabaseError:
        logger.exception("could not store a Slack installation")
        response = failure_page(Failure(503, "storage_unavailable"))
    else:
        logger.info(
            "installed Slack %s %s as integration %s, linked to %s",
            "enterprise" if installation.is_enterprise_install else "workspace",
            installation.enterprise_id if installation.is_enterprise_install else installation.team_id,
            integration.pk,
            f"organization {check.organization.organization_id}" if check.organization else "no organization",
        )
        response = _page(
            SUCCESS_TEMPLATE,
            {
                "workspace": installation.team_name or installation.enterprise_name or installation.team_id,
                "organization": check.organization,
                "is_enterprise_install": installation.is_enterprise_install,
            },
            status=200,
        )
    response.delete_cookie(STATE_COOKIE, path=prefix, samesite="Lax")
    return response


def _require_get(request: HttpRequest) -> None:
    if request.method != "GET":
        raise Failure(405, "method_not_allowed", spent=False)


def _checked_state(request: HttpRequest) -> StateCheck:
    """The consumed state's check (with its organization), once it is this browser's and valid."""
    query = request.GET
    state = query.get("state") or ""
    cookie = request.COOKIES.get(STATE_COOKIE) or ""
    bound = bool(state) and bool(cookie) and constant_time_compare(state, cookie)
    error = query.get("error")
    if error:
        if bound:  # the flow ends here; a state from another browser is not ours to spend
            DjangoOAuthStateStore().check_and_consume(state)
        if error == "access_denied":
            raise Failure(200, "cancelled", spent=bound)
        raise Failure(400, "slack_refused", slack_error=error, spent=bound)
    if not state:
        raise Failure(400, "missing_state", spent=False)
    if not cookie:
        raise Failure(400, "state_cookie_missing", spent=False)
    if not bound:
        raise Failure(400, "state_mismatch", spent=False)
    if not query.get("code"):
        raise Failure(400, "missing_code", spent=False)
    check = DjangoOAuthStateStore().check_and_consume(state)
    if check.outcome != "ok":
        raise Failure(400, f"{check.outcome}_state")
    return check


def granted_organization(query: QueryDict) -> OrganizationMapping | None:
    """The organization an install link's grant names (``None`` without a grant); ``Failure`` if it is bad."""
    organization_id = query.get("organization") or ""
    grant = query.get("grant") or ""
    region = query.get("region") or ""
    if not (organization_id or grant or region):
        return None
    if not organization_id or not grant:
        raise Failure(400, "invalid_grant")
    max_age = int(conf.SLACK["STATE_EXPIRATION"])
    if region:
        if not NAME_RE.match(region) or region not in conf.REGIONS:
            raise Failure(400, "invalid_grant")
        try:
            verify_install_grant(
                organization_id=organization_id,
                region=region,
                grant=grant,
                keys=conf.signing_keys_for(region),
                max_age=max_age,
            )
        except EnvelopeRejected as exc:
            logger.warning("refused a Slack install grant of region %s: %s", region, exc.reason)
            raise Failure(400, "expired_grant" if exc.reason == "stale_signature" else "invalid_grant") from None
    else:
        try:
            signed = django_signing.loads(grant, salt=ADMIN_GRANT_SALT, max_age=max_age)
        except django_signing.SignatureExpired:
            raise Failure(400, "expired_grant") from None
        except django_signing.BadSignature:
            raise Failure(400, "invalid_grant") from None
        if signed != organization_id:
            raise Failure(400, "invalid_grant")
    organization = OrganizationMapping.objects.filter(organization_id=organization_id).first()
    if organization is None:
        raise Failure(400, "unknown_organization")
    if region and organization.region != region:
        logger.warning(
            "refused a Slack install grant of region %s for an organization of %s", region, organization.region
        )
        raise Failure(400, "wrong_region")
    return organization


def exchange(code: str, *, redirect_uri: str) -> Installation:
    """``oauth.v2.access`` for ``code``, then ``auth.test`` for the bot id: the installation, as Bolt builds it."""
    slack = conf.SLACK
    client = WebClient(
        base_url=str(slack["API_URL"]),
        timeout=DEFAULT_TIMEOUT,  # type: ignore[arg-type]
        logger=_sdk_logger,
        retry_handlers=[],
    )
    try:
        answer = client.oauth_v2_access(
            client_id=str(slack["CLIENT_ID"]),
            client_secret=str(slack["CLIENT_SECRET"]),
            code=code,
            redirect_uri=redirect_uri,
        )
        bot_token = answer.get("access_token")
        bot_id = enterprise_url = None
        is_enterprise_install = bool(answer.get("is_enterprise_install"))
        if bot_token:
            identity = client.auth_test(token=bot_token)
            bot_id = identity.get("bot_id")
            enterprise_url = identity.get("url") if is_enterprise_install else None
    except SlackApiError as exc:
        error = exc.response.get("error") if isinstance(exc.response.data, dict) else None
        logger.warning("Slack refused an install: %s", error if isinstance(error, str) else "no error name")
        raise Failure(502, "slack_error", slack_error=error if isinstance(error, str) else None) from None
    except (SlackClientError, OSError) as exc:
        logger.warning("Slack could not be reached to finish an install (%s)", type(exc).__name__)
        raise Failure(502, "slack_unreachable") from None
    return installation_from(
        answer.data if isinstance(answer.data, dict) else {}, bot_id=bot_id, enterprise_url=enterprise_url
    )


def installation_from(answer: Mapping[str, Any], *, bot_id: str | None, enterprise_url: str | None) -> Installation:
    """The slack_sdk ``Installation`` of an ``oauth.v2.access`` answer (and ``auth.test``'s bot id and URL)."""
    bot_token = answer.get("access_token")
    is_enterprise_install = bool(answer.get("is_enterprise_install"))
    enterprise = answer.get("enterprise") or {}
    team = answer.get("team") or {}
    installer = answer.get("authed_user") or {}
    webhook = answer.get("incoming_webhook") or {}
    return Installation(
        app_id=answer.get("app_id"),
        enterprise_id=enterprise.get("id"),
        enterprise_name=enterprise.get("name"),
        enterprise_url=enterprise_url,
        team_id=team.get("id"),
        team_name=team.get("name"),
        bot_token=bot_token,
        bot_id=bot_id,
        bot_user_id=answer.get("bot_user_id"),
        bot_scopes=answer.get("scope") or "",
        bot_refresh_token=answer.get("refresh_token"),
        bot_token_expires_in=answer.get("expires_in"),
        user_id=installer.get("id") or "",
        user_token=installer.get("access_token"),
        user_scopes=installer.get("scope") or "",
        user_refresh_token=installer.get("refresh_token"),
        user_token_expires_in=installer.get("expires_in"),
        incoming_webhook_url=webhook.get("url"),
        incoming_webhook_channel=webhook.get("channel"),
        incoming_webhook_channel_id=webhook.get("channel_id"),
        incoming_webhook_configuration_url=webhook.get("configuration_url"),
        is_enterprise_install=is_enterprise_install,
        token_type=answer.get("token_type"),
    )


def redirect_uri(request: HttpRequest, prefix: str) -> str:
    """``SLACK["REDIRECT_URI"]``, or this server's redirect path as the browser reached it."""
    configured = conf.SLACK["REDIRECT_URI"]
    if configured:
        return str(configured)
    return request.build_absolute_uri(prefix + str(conf.SLACK["REDIRECT_PATH"]))


def install_path() -> str:
    """The path of control's install view (under the first URL prefix served by Slack)."""
    for prefix, provider in conf.URL_PREFIXES.items():
        if provider == "slack":
            return prefix + str(conf.SLACK["INSTALL_PATH"])
    raise SiloRouterConfigurationError(
        "No SILO_ROUTER['URL_PREFIXES'] entry serves Slack, so there is no install view."
    )


def install_link(organization: OrganizationMapping) -> str:
    """A link (``SLACK["INSTALL_URL"]`` or the install path) that installs the app for ``organization``.

    The grant is signed with ``SECRET_KEY`` and valid for ``STATE_EXPIRATION`` seconds.
    """
    grant = django_signing.dumps(organization.organization_id, salt=ADMIN_GRANT_SALT)
    base = str(conf.SLACK["INSTALL_URL"] or install_path())
    query = urllib.parse.urlencode({"organization": organization.organization_id, "grant": grant})
    return base + ("&" if "?" in base else "?") + query


def failure_page(failure: Failure) -> HttpResponse:
    """The failure page for ``failure`` (its status, a title and a sentence, Slack's error name)."""
    title, message = FAILURES.get(failure.reason, ("Installation failed", "The app was not installed."))
    if failure.status >= 500 or failure.status == 405:
        logger.warning("a Slack install stopped: %s (%s)", failure.reason, failure.status)
    else:
        logger.info("a Slack install stopped: %s (%s)", failure.reason, failure.status)
    context = {
        "reason": failure.reason,
        "title": title,
        "message": message,
        "slack_error": failure.slack_error,
        "status": failure.status,
    }
    response = _page(FAILURE_TEMPLATE, context, status=failure.status)
    if failure.status == 405:
        response["Allow"] = "GET"
    return response


def _page(template: str, context: dict[str, Any], *, status: int) -> HttpResponse:
    response = HttpResponse(render_to_string(template, context), status=status)
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response


def _quoted(value: str) -> str:
    """``value`` percent-encoded for a query string (``AuthorizeUrlGenerator`` does not encode)."""
    return urllib.parse.quote(value, safe="")
