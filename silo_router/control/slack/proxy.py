"""The Slack Web API proxy: regions call Slack through control, which holds the tokens.

``POST <WEB_API_PROXY_PATH><method>`` (served by the middleware). A region signs the
call with its own hop key (:mod:`silo_router.providers.slack.proxy_signing`) and names
the installation; control checks, in this order, that the call is a POST for a method
name that may be proxied, from a known region, within the size limit, signed by that
region, for an active installation with an organization in that region; then it adds
the installation's token and forwards the body unchanged to ``SLACK["API_URL"]``. Slack's
status, body, ``Content-Type`` and ``Retry-After`` come back unchanged, so slack_sdk in
the region behaves as if it talked to Slack (429 retries included).

Every refusal is ``{"ok": false, "error": <reason>, "detail": ...}`` with a precise status;
slack_sdk raises ``SlackApiError`` with that error. Log lines name the method, region,
installation and outcome, never a token or a body. The call's span
(``silo_router.control.proxy``) carries the method, region, installation, HTTP status,
whether Slack said ``ok`` and its error name; never the token.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.parse
from dataclasses import dataclass, field

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from slack_sdk.errors import SlackClientError

from silo_router import tracing
from silo_router.conf import conf
from silo_router.exceptions import EnvelopeRejected, RequestRejected, SiloRouterConfigurationError
from silo_router.providers.base import Authorization
from silo_router.providers.slack.authorization import authorizer
from silo_router.providers.slack.proxy_signing import (
    INSTALLATION_HEADER,
    METHOD_RE,
    NAME_RE,
    REGION_HEADER,
    SIGNATURE_HEADER,
    verify_call,
)

from ..models import Integration
from ..pipeline import read_body

logger = logging.getLogger("silo_router.control.proxy")

#: Methods that manage the app's credentials or the installation itself: never on a region's behalf.
NEVER_PROXIED_PREFIXES = ("oauth.", "openid.", "apps.permissions.", "tooling.tokens.")
NEVER_PROXIED = frozenset({"auth.revoke", "apps.uninstall"})
#: Slack's answer headers that come back to the region besides Content-Type.
PASSED_HEADERS = ("Retry-After", "X-Slack-Req-Id", "X-OAuth-Scopes", "X-Accepted-OAuth-Scopes")
#: The caller's trace (sentry-sdk's http.client integration sends it), continued here so a
#: handler's Slack calls show in the handler's trace.
TRACE_HEADERS = ("sentry-trace", "baggage")
#: Longest id a database integer holds (a longer one names no installation).
MAX_ID_DIGITS = 18
#: How much of an answer is parsed to log Slack's error name.
MAX_LOGGED_ANSWER = 4096

_SIGNATURE_DETAILS = {
    "missing_signature": "The call has no X-Silo-Router-Signature header.",
    "malformed_signature": "The call's signature header is malformed.",
    "unknown_key": "The call is signed with a key id this region does not have.",
    "stale_signature": "The call's signature is outside the replay window (check the region's clock).",
    "signature_mismatch": "The call's signature does not match its method, installation, region and body.",
}


@dataclass(frozen=True)
class Call:
    """What a region asked for, as far as it has been read."""

    method: str
    region: str = ""
    installation_id: str = ""
    body: bytes = field(default=b"", repr=False)


class Refused(Exception):
    """A call control will not forward: its status and reason go back to the region."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


def never_proxied(method: str) -> bool:
    """Whether ``method`` manages credentials or the installation (refused for regions)."""
    name = method.lower()
    return name in NEVER_PROXIED or name.startswith(NEVER_PROXIED_PREFIXES)


def handle(request: HttpRequest, method: str) -> HttpResponse:
    """Check one region's call and forward it to Slack with the installation's token."""
    call = Call(method=method if METHOD_RE.match(method) else "(not a method name)")
    trace = {name: value for name in TRACE_HEADERS if (value := request.headers.get(name))}
    with tracing.flow("control", "proxy", f"slack api {call.method}", carrier=trace, span_kind="server") as flow:
        try:
            call = _checked(request, method)
            token = _token_for(call)
        except Refused as refused:
            flow.set(outcome="refused", rejected=refused.reason)
            return _refusal(call, refused)
        response = forward(call, token=token, content_type=request.META.get("CONTENT_TYPE") or "")
        ok, error = slack_answer(response.status_code, response.content)
        flow.set(
            provider="slack",
            method=call.method,
            region=call.region,
            installation=call.installation_id,
            status=response.status_code,
            ok=ok,
            error=error,
            outcome="ok" if ok else "error",
        )
        return response


def _checked(request: HttpRequest, method: str) -> Call:
    """The call, once its verb, method, region, size and signature are right (``Refused`` otherwise)."""
    if request.method != "POST":
        raise Refused(405, "method_not_allowed", "Only POST is accepted here.")
    if not METHOD_RE.match(method):
        raise Refused(400, "invalid_method", "The path does not end in a Web API method name.")
    if never_proxied(method):
        raise Refused(403, "method_not_proxied", f"{method} manages the app's credentials; control does not proxy it.")
    region = request.headers.get(REGION_HEADER) or ""
    if not region:
        raise Refused(403, "unknown_region", f"The call names no region ({REGION_HEADER}).")
    if not NAME_RE.match(region) or region not in conf.REGIONS:
        raise Refused(403, "unknown_region", "The call names a region this control does not know.")
    installation_id = request.headers.get(INSTALLATION_HEADER) or ""
    if installation_id and not NAME_RE.match(installation_id):
        raise Refused(400, "invalid_installation", f"{INSTALLATION_HEADER} is not an installation id.")
    try:
        body = read_body(request, limit=conf.WEB_API_PROXY_MAX_BODY_SIZE)
    except RequestRejected as exc:
        raise Refused(exc.status, exc.reason, exc.detail) from None
    try:
        verify_call(
            method=method,
            installation_id=installation_id,
            region=region,
            body=body,
            signature=request.headers.get(SIGNATURE_HEADER),
            keys=conf.signing_keys_for(region),
            max_age=conf.SIGNATURE_MAX_AGE,
        )
    except EnvelopeRejected as exc:
        raise Refused(403, exc.reason, _SIGNATURE_DETAILS.get(exc.reason, exc.detail)) from None
    return Call(method=method, region=region, installation_id=installation_id, body=body)


def _token_for(call: Call) -> str:
    """The installation's bot token, once it is known to belong to the calling region."""
    try:
        if call.installation_id:
            _check_installation(call)
        elif not conf.SLACK.get("BOT_TOKEN"):
            raise Refused(404, "installation_not_found", f"The call names no installation ({INSTALLATION_HEADER}).")
        authorization: Authorization | None = authorizer().for_installation(call.installation_id)
    except DatabaseError:
        logger.exception("could not look up installation %s for a %s call", call.installation_id, call.method)
        raise Refused(503, "storage_unavailable", "Installations cannot be read right now.") from None
    except SiloRouterConfigurationError:
        logger.exception("the Slack authorizer cannot be built")
        raise Refused(503, "not_configured", "This control cannot find installations' credentials.") from None
    except SlackClientError as exc:
        logger.warning(
            "installation %s: its token could not be refreshed (%s)", call.installation_id, type(exc).__name__
        )
        raise Refused(502, "token_refresh_failed", "The installation's token could not be refreshed.") from None
    if authorization is None or not authorization.token:
        raise Refused(410, "installation_inactive", "The installation has no usable token (uninstalled or revoked).")
    return authorization.token


def _check_installation(call: Call) -> None:
    """The installation exists, is active, and has an organization in the calling region."""
    found = (
        Integration.objects.filter(pk=int(call.installation_id), provider="slack").only("pk", "active").first()
        if call.installation_id.isdigit() and len(call.installation_id) <= MAX_ID_DIGITS
        else None
    )
    if found is None:
        raise Refused(404, "installation_not_found", "No Slack installation has this id.")
    if not found.active:
        raise Refused(410, "installation_inactive", "The installation was uninstalled or its token revoked.")
    if not found.organizations.filter(region=call.region).exists():
        raise Refused(403, "installation_not_in_region", "The installation has no organization in the calling region.")


def forward(call: Call, *, token: str, content_type: str) -> HttpResponse:
    """Send ``call`` to Slack with ``token``; Slack's answer comes back unchanged."""
    target = urllib.parse.urlsplit(str(conf.SLACK["API_URL"]).rstrip("/") + "/" + call.method)
    connection_class = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(target.hostname or "", target.port, timeout=conf.WEB_API_PROXY_TIMEOUT)
    path = target.path + (f"?{target.query}" if target.query else "")
    headers = {
        "Content-Type": content_type or "application/x-www-form-urlencoded",
        "Authorization": f"Bearer {token}",
    }
    try:
        connection.request("POST", path, body=call.body, headers=headers)
        answer = connection.getresponse()
        body = answer.read()
    except TimeoutError:
        timeout = conf.WEB_API_PROXY_TIMEOUT
        return _refusal(call, Refused(504, "slack_timeout", f"Slack did not answer within {timeout} s."))
    except (OSError, http.client.HTTPException) as exc:
        detail = f"Slack's Web API could not be reached ({type(exc).__name__})."
        return _refusal(call, Refused(502, "slack_unreachable", detail))
    finally:
        connection.close()
    response = HttpResponse(body, status=answer.status, content_type=answer.getheader("Content-Type") or "")
    for name in PASSED_HEADERS:
        value = answer.getheader(name)
        if value is not None:
            response[name] = value
    logger.info(
        "slack api %s for installation %s of region %s: %s",
        call.method,
        call.installation_id or "(single token)",
        call.region,
        _outcome(answer.status, body),
    )
    return response


def slack_answer(status: int, body: bytes) -> tuple[bool, str | None]:
    """Whether Slack's answer says ``ok``, and its error name (``None`` when it names none we can read)."""
    error = None
    if len(body) <= MAX_LOGGED_ANSWER:
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict):
            if data.get("ok") is True and status == 200:
                return True, None
            error = data.get("error")
    return False, error if isinstance(error, str) and NAME_RE.match(error) else None


def _outcome(status: int, body: bytes) -> str:
    """``ok``, Slack's error name, or the HTTP status, for a log line."""
    ok, name = slack_answer(status, body)
    if ok:
        return "ok"
    return f"{name or 'error'} (HTTP {status})" if status != 200 or name else f"HTTP {status}"


def _refusal(call: Call, refused: Refused) -> JsonResponse:
    level = logging.ERROR if refused.status >= 500 else logging.WARNING
    logger.log(
        level,
        "refused a slack api %s call for installation %s of region %s: %s (%s)",
        call.method,
        call.installation_id or "-",
        call.region or "-",
        refused.reason,
        refused.status,
    )
    response = JsonResponse({"ok": False, "error": refused.reason, "detail": refused.detail}, status=refused.status)
    if refused.status == 405:
        response["Allow"] = "POST"
    return response
