"""One settings object over the ``SILO_ROUTER`` dict.

Every property reads ``settings.SILO_ROUTER`` on each access and falls back to a
default, so ``override_settings`` works in tests with nothing to reset. Objects built
from dotted paths (providers, the resolver, transports) are cached by
:mod:`silo_router.plugins` and that cache is dropped on Django's
``setting_changed`` signal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from django.conf import settings

MODES = ("control", "region", "monolith")

DEFAULT_PROVIDERS: dict[str, str] = {"slack": "silo_router.providers.slack.SlackProvider"}
DEFAULT_URL_PREFIXES: dict[str, str] = {"/extensions/slack/": "slack"}

#: Strategy by request ``type`` or ``type:name`` (the most specific key wins).
DEFAULT_ROUTES: dict[str, str] = {
    "slack.url_verification": "control_only",
    "slack.ssl_check": "control_only",
    "slack.app_rate_limited": "control_only",
    "slack.event_callback": "async",
    "slack.command": "async",
    "slack.block_actions": "async",
    "slack.interactive_message": "async",
    "slack.shortcut": "async",
    "slack.message_action": "async",
    "slack.view_closed": "async",
    "slack.dialog_cancellation": "async",
    "slack.workflow_step_edit": "async",
    "slack.view_submission": "sync",
    "slack.dialog_submission": "sync",
    "slack.block_suggestion": "sync",
    "slack.dialog_suggestion": "sync",
}

#: Fan-out by request type: ``all`` regions the installation spans, or ``one``.
DEFAULT_FANOUT: dict[str, str] = {"slack.event_callback": "all"}

DEFAULTS: dict[str, Any] = {
    "MODE": "monolith",
    "REGION": None,
    "SIGNING_KEYS": {},
    "SIGNING_KEY_ID": None,
    "SIGNATURE_MAX_AGE": 300,
    "REGIONS": {},
    "PROVIDERS": DEFAULT_PROVIDERS,
    "URL_PREFIXES": DEFAULT_URL_PREFIXES,
    "MAX_BODY_SIZE": 1024 * 1024,
    "ROUTES": {},
    "FANOUT": {},
    "RESOLVER": "silo_router.control.resolver.ModelResolver",
    "RESOLVER_CACHE_SECONDS": 5.0,
    "RESOLVER_CACHE_SIZE": 4096,
    "RESPONSE_DEADLINE": 3.0,
    "SYNC_SAFETY_MARGIN": 0.4,
    "MAX_CLOCK_ALLOWANCE": 1.0,
    "DELIVERY_TIMEOUT": 10.0,
    "DELIVERY_MAX_ATTEMPTS": 12,
    "DELIVERY_BACKOFF": 2.0,
    "DELIVERY_MAX_BACKOFF": 900.0,
    "RETRY_JITTER": 0.25,
    "SLOW_RETRY_FACTOR": 3.0,
    "RETRY_AFTER_MAX": 600.0,
    "LEASE_MARGIN": 30.0,
    "SWEEP_GRACE": 30.0,
    "SWEEP_BATCH": 200,
    "CIRCUIT_FAILURE_THRESHOLD": 5,
    "CIRCUIT_OPEN_SECONDS": 15.0,
    "CIRCUIT_MAX_OPEN_SECONDS": 600.0,
    "ORDERING": {},
    "QUEUED_CONFIRM_TIMEOUT": 600.0,
    "PUBLISH_TIMEOUT": 0.5,
    "RUNNER": None,
    "RUNNER_THREADS": 4,
    "SWEEP_INTERVAL": 5.0,
    "PRUNE_INTERVAL": 3600.0,
    "TOKEN_ROTATION_INTERVAL": 600.0,
    "CONTROL_QUEUE": "celery",
    "CONTROL_RESPONSE_TIMEOUT": 1.5,
    "LOADING_VIEW_TIMEOUT": 10.0,
    "CONTROL_RESPONSE_HANDLERS": {
        "slack.loading_modal": "silo_router.providers.slack.control_responses.LoadingModal",
    },
    "OPTIONS_REFRESH_INTERVAL": 1.0,
    "HANDLER_MODULES": [],
    "TRACES_SAMPLE_RATE": 0.01,
    #: A link to one trace in your tracing UI, with ``{trace_id}`` in it (the payload admin links it); None: no link.
    "TRACE_URL": None,
    #: Seconds a payload's attempts are kept for its timeline in the admin.
    "ATTEMPT_RETENTION": 14 * 24 * 3600,
    #: Seconds a delivered payload is kept after its delivery (the retention task deletes it then).
    "DELIVERED_RETENTION": 7 * 24 * 3600,
    #: Seconds a failed or unroutable payload is kept (from its creation and its last attempt) unless replayed.
    "FAILED_RETENTION": 30 * 24 * 3600,
    #: Seconds after delivery when a payload's body and headers are dropped (a stub keeps the rest);
    #: None: the body stays as long as the row. Below DELIVERED_RETENTION.
    "BODY_RETENTION": None,
    #: Rows the retention task deletes (or bodies it drops) per transaction.
    "PRUNE_BATCH": 1000,
    #: Spans through the OpenTelemetry API too; None: when opentelemetry-api is installed.
    "OPENTELEMETRY": None,
    "QUEUED_SIGNATURE_MAX_AGE": 86400,
    "SLACK": {},
    #: URL prefixes (besides https://hooks.slack.com/) under which a URL is a capability.
    "REDACTED_URL_PREFIXES": [],
    #: Fernet keys that encrypt stored tokens (the first encrypts, all decrypt); empty:
    #: one key derived from SECRET_KEY (a system check warns).
    "TOKEN_ENCRYPTION_KEYS": [],
    #: Region silos: control's base URL for the Slack Web API proxy (internal address).
    "CONTROL_URL": None,
    #: Control: the path the middleware serves the Web API proxy at; regions append it to CONTROL_URL.
    "WEB_API_PROXY_PATH": "/silo-router/slack-api/",
    "WEB_API_PROXY_TIMEOUT": 30.0,
    "WEB_API_PROXY_MAX_BODY_SIZE": 16 * 1024 * 1024,
}

#: ``SLACK["RESPONSE_URL_LEDGER"]`` aliases.
#: Transport aliases for ``REGIONS[name]["TRANSPORT"]``.
TRANSPORT_ALIASES: dict[str, str] = {
    "local": "silo_router.transports.local.LocalTransport",
    "http": "silo_router.transports.http.HttpTransport",
    "celery": "silo_router.transports.celery.CeleryTransport",
}
RESPONSE_URL_LEDGER_ALIASES: dict[str, str] = {"database": "silo_router.region.response_urls.DatabaseLedger"}

SLACK_DEFAULTS: dict[str, Any] = {
    "SIGNING_SECRETS": [],
    "TIMESTAMP_TOLERANCE": 300,
    "BOT_TOKEN": None,
    "API_URL": "https://slack.com/api/",
    "RATE_LIMIT_RETRIES": 2,
    #: Counts response_url uses across attempts (alias ``database`` or a dotted path).
    "RESPONSE_URL_LEDGER": "database",
    #: OAuth (control): the app's credentials and what an install asks for.
    "CLIENT_ID": None,
    "CLIENT_SECRET": None,
    "SCOPES": [],
    "USER_SCOPES": [],
    #: The redirect URL registered with Slack; None: built from the request and REDIRECT_PATH.
    "REDIRECT_URI": None,
    "AUTHORIZE_URL": "https://slack.com/oauth/v2/authorize",
    #: Paths under the Slack URL prefix that serve the install flow (Bolt's names).
    "INSTALL_PATH": "install/",
    "REDIRECT_PATH": "oauth_redirect/",
    #: Seconds an OAuth state is valid.
    "STATE_EXPIRATION": 600,
    #: Tokens that expire within this many seconds are refreshed before use.
    "TOKEN_ROTATION_MARGIN": 7200,
    #: Finds an installation's credentials (control only); unused when BOT_TOKEN is set.
    "AUTHORIZER": "silo_router.control.slack.authorizer.InstallationAuthorizer",
    #: Drop events the app's own bot caused (no reply loops), as Bolt does.
    "IGNORE_SELF_EVENTS": True,
    #: Region silos: control's public install URL (``.../extensions/slack/install/``) for install links.
    "INSTALL_URL": None,
}


class SiloRouterSettings:
    """Typed, lazily read view of ``settings.SILO_ROUTER``."""

    @property
    def _raw(self) -> Mapping[str, Any]:
        return getattr(settings, "SILO_ROUTER", {}) or {}

    def get(self, name: str) -> Any:
        """Return one setting or its default."""
        return self._raw.get(name, DEFAULTS[name])

    @property
    def MODE(self) -> str:
        return str(self.get("MODE"))

    @property
    def is_control(self) -> bool:
        return self.MODE in ("control", "monolith")

    @property
    def is_region(self) -> bool:
        return self.MODE in ("region", "monolith")

    @property
    def REGION(self) -> str | None:
        return cast("str | None", self.get("REGION"))

    @property
    def SIGNING_KEYS(self) -> Mapping[str, str]:
        return cast("Mapping[str, str]", self.get("SIGNING_KEYS"))

    @property
    def SIGNING_KEY_ID(self) -> str | None:
        key_id = self.get("SIGNING_KEY_ID")
        if key_id is None and len(self.SIGNING_KEYS) == 1:
            return next(iter(self.SIGNING_KEYS))
        return cast("str | None", key_id)

    def signing_keys_for(self, region: str) -> Mapping[str, str]:
        """The hop keys for ``region``.

        A region silo holds only its own keys (top-level ``SIGNING_KEYS``). Control and
        a monolith use ``REGIONS[region]['SIGNING_KEYS']``, falling back to the shared
        top-level ``SIGNING_KEYS`` (a system check warns about that).
        """
        options = self.REGIONS.get(region) if self.MODE != "region" and isinstance(self.REGIONS, Mapping) else None
        if isinstance(options, Mapping) and options.get("SIGNING_KEYS"):
            return cast("Mapping[str, str]", options["SIGNING_KEYS"])
        return self.SIGNING_KEYS

    def signing_key_id_for(self, region: str) -> str | None:
        """The id of the key that signs for ``region`` (the only key when there is one)."""
        options = self.REGIONS.get(region) if self.MODE != "region" and isinstance(self.REGIONS, Mapping) else None
        if isinstance(options, Mapping) and options.get("SIGNING_KEYS"):
            keys = options["SIGNING_KEYS"]
            key_id = options.get("SIGNING_KEY_ID")
            if key_id is None and isinstance(keys, Mapping) and len(keys) == 1:
                return str(next(iter(keys)))
            return cast("str | None", key_id)
        return self.SIGNING_KEY_ID

    @property
    def served_regions(self) -> frozenset[str]:
        """Regions whose envelopes this silo handles: its ``REGION``, and in a monolith
        every region it delivers to in-process (``local`` transport)."""
        served = {self.REGION} if self.REGION else set()
        if self.MODE == "monolith" and isinstance(self.REGIONS, Mapping):
            served |= {
                name
                for name, options in self.REGIONS.items()
                if isinstance(options, Mapping) and options.get("TRANSPORT", "http") == "local"
            }
        return frozenset(served)

    @property
    def SIGNATURE_MAX_AGE(self) -> int:
        return int(self.get("SIGNATURE_MAX_AGE"))

    @property
    def REGIONS(self) -> Mapping[str, Mapping[str, Any]]:
        return cast("Mapping[str, Mapping[str, Any]]", self.get("REGIONS"))

    @property
    def PROVIDERS(self) -> Mapping[str, str]:
        return {**DEFAULT_PROVIDERS, **self._raw.get("PROVIDERS", {})}

    @property
    def URL_PREFIXES(self) -> Mapping[str, str]:
        return cast("Mapping[str, str]", self.get("URL_PREFIXES"))

    @property
    def MAX_BODY_SIZE(self) -> int:
        return int(self.get("MAX_BODY_SIZE"))

    @property
    def ROUTES(self) -> Mapping[str, str]:
        return {**DEFAULT_ROUTES, **self.get("ROUTES")}

    @property
    def FANOUT(self) -> Mapping[str, str]:
        return {**DEFAULT_FANOUT, **self.get("FANOUT")}

    @property
    def RESOLVER(self) -> str:
        return str(self.get("RESOLVER"))

    @property
    def RESOLVER_CACHE_SIZE(self) -> int:
        """Most installations the resolver remembers per process (least recently used go first)."""
        return int(self.get("RESOLVER_CACHE_SIZE"))

    @property
    def RESPONSE_DEADLINE(self) -> float:
        return float(self.get("RESPONSE_DEADLINE"))

    @property
    def SYNC_SAFETY_MARGIN(self) -> float:
        return float(self.get("SYNC_SAFETY_MARGIN"))

    @property
    def MAX_CLOCK_ALLOWANCE(self) -> float:
        return float(self.get("MAX_CLOCK_ALLOWANCE"))

    @property
    def DELIVERY_TIMEOUT(self) -> float:
        return float(self.get("DELIVERY_TIMEOUT"))

    @property
    def DELIVERY_MAX_ATTEMPTS(self) -> int:
        return int(self.get("DELIVERY_MAX_ATTEMPTS"))

    @property
    def DELIVERY_BACKOFF(self) -> float:
        return float(self.get("DELIVERY_BACKOFF"))

    @property
    def DELIVERY_MAX_BACKOFF(self) -> float:
        return float(self.get("DELIVERY_MAX_BACKOFF"))

    @property
    def RETRY_JITTER(self) -> float:
        return float(self.get("RETRY_JITTER"))

    @property
    def SLOW_RETRY_FACTOR(self) -> float:
        return float(self.get("SLOW_RETRY_FACTOR"))

    @property
    def RETRY_AFTER_MAX(self) -> float:
        return float(self.get("RETRY_AFTER_MAX"))

    @property
    def LEASE_MARGIN(self) -> float:
        return float(self.get("LEASE_MARGIN"))

    @property
    def SWEEP_GRACE(self) -> float:
        return float(self.get("SWEEP_GRACE"))

    @property
    def SWEEP_BATCH(self) -> int:
        return int(self.get("SWEEP_BATCH"))

    @property
    def CIRCUIT_FAILURE_THRESHOLD(self) -> int:
        return int(self.get("CIRCUIT_FAILURE_THRESHOLD"))

    @property
    def CIRCUIT_OPEN_SECONDS(self) -> float:
        return float(self.get("CIRCUIT_OPEN_SECONDS"))

    @property
    def CIRCUIT_MAX_OPEN_SECONDS(self) -> float:
        return float(self.get("CIRCUIT_MAX_OPEN_SECONDS"))

    @property
    def QUEUED_CONFIRM_TIMEOUT(self) -> float:
        return float(self.get("QUEUED_CONFIRM_TIMEOUT"))

    @property
    def PUBLISH_TIMEOUT(self) -> float:
        return float(self.get("PUBLISH_TIMEOUT"))

    @property
    def RUNNER(self) -> str | None:
        """``"celery"``, ``"embedded"``, or ``None`` (chosen by whether a broker is configured: see
        :func:`silo_router.control.runner.active_runner`)."""
        value = self.get("RUNNER")
        return str(value) if value else None

    @property
    def RUNNER_THREADS(self) -> int:
        return int(self.get("RUNNER_THREADS"))

    @property
    def SWEEP_INTERVAL(self) -> float:
        return float(self.get("SWEEP_INTERVAL"))

    @property
    def PRUNE_INTERVAL(self) -> float:
        return float(self.get("PRUNE_INTERVAL"))

    @property
    def TOKEN_ROTATION_INTERVAL(self) -> float:
        return float(self.get("TOKEN_ROTATION_INTERVAL"))

    @property
    def QUEUED_SIGNATURE_MAX_AGE(self) -> int:
        return int(self.get("QUEUED_SIGNATURE_MAX_AGE"))

    @property
    def TRACES_SAMPLE_RATE(self) -> float:
        return float(self.get("TRACES_SAMPLE_RATE"))

    @property
    def TRACE_URL(self) -> str | None:
        value = self.get("TRACE_URL")
        return str(value) if value else None

    @property
    def ATTEMPT_RETENTION(self) -> float:
        return float(self.get("ATTEMPT_RETENTION"))

    @property
    def DELIVERED_RETENTION(self) -> float:
        return float(self.get("DELIVERED_RETENTION"))

    @property
    def FAILED_RETENTION(self) -> float:
        return float(self.get("FAILED_RETENTION"))

    @property
    def BODY_RETENTION(self) -> float | None:
        value = self.get("BODY_RETENTION")
        return None if value is None else float(value)

    @property
    def PRUNE_BATCH(self) -> int:
        return int(self.get("PRUNE_BATCH"))

    @property
    def OPENTELEMETRY(self) -> bool | None:
        value = self.get("OPENTELEMETRY")
        return None if value is None else bool(value)

    @property
    def RESOLVER_CACHE_SECONDS(self) -> float:
        return float(self.get("RESOLVER_CACHE_SECONDS"))

    @property
    def CONTROL_QUEUE(self) -> str:
        return str(self.get("CONTROL_QUEUE"))

    @property
    def ORDERING(self) -> Mapping[str, str]:
        return cast("Mapping[str, str]", self.get("ORDERING"))

    @property
    def CONTROL_RESPONSE_TIMEOUT(self) -> float:
        return float(self.get("CONTROL_RESPONSE_TIMEOUT"))

    @property
    def LOADING_VIEW_TIMEOUT(self) -> float:
        return float(self.get("LOADING_VIEW_TIMEOUT"))

    @property
    def CONTROL_RESPONSE_HANDLERS(self) -> Mapping[str, str]:
        return {**DEFAULTS["CONTROL_RESPONSE_HANDLERS"], **self._raw.get("CONTROL_RESPONSE_HANDLERS", {})}

    @property
    def OPTIONS_REFRESH_INTERVAL(self) -> float:
        return float(self.get("OPTIONS_REFRESH_INTERVAL"))

    @property
    def HANDLER_MODULES(self) -> Sequence[str]:
        return list(self.get("HANDLER_MODULES"))

    @property
    def REDACTED_URL_PREFIXES(self) -> Sequence[str]:
        return [str(prefix) for prefix in self.get("REDACTED_URL_PREFIXES") or ()]

    @property
    def TOKEN_ENCRYPTION_KEYS(self) -> Sequence[str]:
        return [str(key) for key in self.get("TOKEN_ENCRYPTION_KEYS") or ()]

    @property
    def CONTROL_URL(self) -> str | None:
        value = self.get("CONTROL_URL")
        return str(value) if value else None

    @property
    def WEB_API_PROXY_PATH(self) -> str:
        return str(self.get("WEB_API_PROXY_PATH"))

    @property
    def WEB_API_PROXY_TIMEOUT(self) -> float:
        return float(self.get("WEB_API_PROXY_TIMEOUT"))

    @property
    def WEB_API_PROXY_MAX_BODY_SIZE(self) -> int:
        return int(self.get("WEB_API_PROXY_MAX_BODY_SIZE"))

    @property
    def web_api_proxy_url(self) -> str | None:
        """Region silos: where Slack Web API calls go (control's proxy), or ``None`` without ``CONTROL_URL``."""
        if not self.CONTROL_URL:
            return None
        return self.CONTROL_URL.rstrip("/") + "/" + self.WEB_API_PROXY_PATH.lstrip("/")

    @property
    def SLACK(self) -> Mapping[str, Any]:
        return {**SLACK_DEFAULTS, **self.get("SLACK")}


conf = SiloRouterSettings()
