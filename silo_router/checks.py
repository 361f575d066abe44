"""System checks for ``SILO_ROUTER``. Ids are stable: ``silo_router.E001`` and on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning

from .conf import DEFAULTS, MODES, RESPONSE_URL_LEDGER_ALIASES, SLACK_DEFAULTS, TRANSPORT_ALIASES, conf
from .exceptions import SiloRouterConfigurationError
from .plugins import did_you_mean, import_by_alias
from .routing import Fanout, Strategy

MIDDLEWARE_PATH = "silo_router.control.middleware.SiloRouterMiddleware"
POSITIVE_NUMBERS = (
    "SIGNATURE_MAX_AGE",
    "MAX_BODY_SIZE",
    "RESPONSE_DEADLINE",
    "DELIVERY_TIMEOUT",
    "DELIVERY_MAX_ATTEMPTS",
    "DELIVERY_BACKOFF",
    "CONTROL_RESPONSE_TIMEOUT",
    "LOADING_VIEW_TIMEOUT",
    "OPTIONS_REFRESH_INTERVAL",
    "QUEUED_SIGNATURE_MAX_AGE",
    "DELIVERY_MAX_BACKOFF",
    "SLOW_RETRY_FACTOR",
    "RETRY_AFTER_MAX",
    "LEASE_MARGIN",
    "SWEEP_GRACE",
    "SWEEP_BATCH",
    "CIRCUIT_FAILURE_THRESHOLD",
    "CIRCUIT_OPEN_SECONDS",
    "CIRCUIT_MAX_OPEN_SECONDS",
    "QUEUED_CONFIRM_TIMEOUT",
    "PUBLISH_TIMEOUT",
    "ATTEMPT_RETENTION",
    "RUNNER_THREADS",
    "SWEEP_INTERVAL",
)
NON_NEGATIVE_NUMBERS = (
    "RESOLVER_CACHE_SECONDS",
    "SYNC_SAFETY_MARGIN",
    "MAX_CLOCK_ALLOWANCE",
    "TRACES_SAMPLE_RATE",
    "RETRY_JITTER",
    "PRUNE_INTERVAL",
    "TOKEN_ROTATION_INTERVAL",
)


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every check, in id order; later checks are skipped when the basics are wrong."""
    raw = getattr(settings, "SILO_ROUTER", None)
    if not isinstance(raw, Mapping):
        return [
            Error(
                "SILO_ROUTER must be a dict.", hint="Add SILO_ROUTER = {...} to your settings.", id="silo_router.E001"
            )
        ]
    errors: list[CheckMessage] = []
    for key in raw:
        if key not in DEFAULTS:
            errors.append(
                Error(
                    f"SILO_ROUTER has an unknown key {key!r}.",
                    hint="Remove it or fix its spelling." + did_you_mean(key, DEFAULTS),
                    id="silo_router.E002",
                )
            )
    if conf.MODE not in MODES:
        errors.append(
            Error(
                f"SILO_ROUTER['MODE'] is {conf.MODE!r}.", hint=f"Use one of {', '.join(MODES)}.", id="silo_router.E003"
            )
        )
        return errors
    errors += _check_nested_keys()
    errors += _check_numbers()
    errors += _check_resolver_cache()
    errors += _check_signing_keys()
    errors += _check_regions()
    errors += _check_redacted_url_prefixes()
    errors += _check_tracing()
    errors += _check_response_url_ledger()
    errors += _check_installations()
    if conf.is_control:
        errors += _check_control()
        errors += _check_sync_fanout()
        errors += _check_oauth_credentials()
    if conf.is_region:
        errors += _check_region()
    errors += _check_control_url()
    errors += _check_retention()
    return errors


#: The keys a region entry takes with each built-in transport (a dotted-path transport may take its own).
REGION_KEYS = frozenset({"TRANSPORT", "SIGNING_KEYS", "SIGNING_KEY_ID", "DELIVERY_QUEUE"})
TRANSPORT_KEYS: dict[str, frozenset[str]] = {
    "http": frozenset({"URL", "CONNECT_TIMEOUT", "BATCH_SIZE"}),
    "local": frozenset({"ACCEPT_TIMEOUT"}),
    "celery": frozenset({"QUEUE"}),
}


def _check_nested_keys() -> list[CheckMessage]:
    """Unknown keys inside ``SLACK`` and inside each built-in transport's region entry (E034), as at the top level."""
    errors: list[CheckMessage] = []
    slack = conf.get("SLACK")
    if not isinstance(slack, Mapping):
        errors.append(
            Error(
                f"SILO_ROUTER['SLACK'] must be a dict, not {type(slack).__name__}.",
                hint="e.g. {'SIGNING_SECRETS': [os.environ['SLACK_SIGNING_SECRET']]}.",
                id="silo_router.E034",
            )
        )
    else:
        errors += _unknown_keys(slack, SLACK_DEFAULTS, "SILO_ROUTER['SLACK']")
    regions = conf.get("REGIONS")
    for name, options in regions.items() if isinstance(regions, Mapping) else ():
        if not isinstance(options, Mapping):
            continue  # E007
        transport = str(options.get("TRANSPORT", "http"))
        if transport in TRANSPORT_KEYS:
            known = REGION_KEYS | TRANSPORT_KEYS[transport]
            errors += _unknown_keys(options, known, f"SILO_ROUTER['REGIONS'][{name!r}]", note=f"({transport})")
    return errors


def _unknown_keys(given: Mapping[str, Any], known: Iterable[str], where: str, *, note: str = "") -> list[CheckMessage]:
    known = sorted(known)
    return [
        Error(
            f"{where} has an unknown key {key!r}{' ' + note if note else ''}.",
            hint="Remove it or fix its spelling." + did_you_mean(str(key), known) + f" It takes: {', '.join(known)}.",
            id="silo_router.E034",
        )
        for key in given
        if key not in known
    ]


def _check_numbers() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    for name in POSITIVE_NUMBERS + NON_NEGATIVE_NUMBERS:
        value = conf.get(name)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok and (value <= 0 if name in POSITIVE_NUMBERS else value < 0):
            ok = False
        if not ok:
            kind = "a positive number" if name in POSITIVE_NUMBERS else "a number >= 0"
            errors.append(
                Error(
                    f"SILO_ROUTER[{name!r}] must be {kind}, not {value!r}.",
                    hint=f"The default is {DEFAULTS[name]!r}.",
                    id="silo_router.E004",
                )
            )
    if not errors and (conf.RETRY_JITTER >= 1 or conf.TRACES_SAMPLE_RATE > 1):
        errors.append(
            Error(
                "RETRY_JITTER must be below 1 and TRACES_SAMPLE_RATE at most 1.",
                hint="They are fractions: 0.25 means +-25 %.",
                id="silo_router.E004",
            )
        )
    if not errors and conf.SYNC_SAFETY_MARGIN >= conf.RESPONSE_DEADLINE:
        errors.append(
            Error(
                "SYNC_SAFETY_MARGIN leaves no time for synchronous forwards.",
                hint="Keep it well under RESPONSE_DEADLINE (3 s for Slack).",
                id="silo_router.E004",
            )
        )
    return errors


def _check_resolver_cache() -> list[CheckMessage]:
    size = conf.get("RESOLVER_CACHE_SIZE")
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return []
    return [
        Error(
            f"SILO_ROUTER['RESOLVER_CACHE_SIZE'] must be a positive whole number, not {size!r}.",
            hint=f"It bounds the resolver's per-process memory; the default is {DEFAULTS['RESOLVER_CACHE_SIZE']!r}.",
            id="silo_router.E022",
        )
    ]


def _valid_keys(keys: Any) -> bool:
    return (
        isinstance(keys, Mapping)
        and bool(keys)
        and all(isinstance(k, str) and isinstance(v, str) and v for k, v in keys.items())
    )


def _regions_on_shared_keys() -> list[str]:
    """Regions that control signs for with the top-level ``SIGNING_KEYS`` (no keys of their own)."""
    regions = conf.REGIONS if isinstance(conf.REGIONS, Mapping) else {}
    return [
        name for name, options in regions.items() if not (isinstance(options, Mapping) and options.get("SIGNING_KEYS"))
    ]


def _check_signing_keys() -> list[CheckMessage]:
    keys = conf.SIGNING_KEYS
    needs_top_level = conf.MODE == "region" or (conf.is_control and bool(_regions_on_shared_keys()))
    if (needs_top_level or keys) and not _valid_keys(keys):
        return [
            Error(
                "SILO_ROUTER['SIGNING_KEYS'] must map key ids to non-empty secrets.",
                hint="A region silo lists its own hop keys here, e.g. {'us-2026-11': os.environ['SILO_ROUTER_KEY']}; "
                "control gives each region REGIONS[name]['SIGNING_KEYS'] (this is the fallback).",
                id="silo_router.E005",
            )
        ]
    errors: list[CheckMessage] = []
    if conf.is_control and _regions_on_shared_keys() and conf.SIGNING_KEY_ID not in keys:
        errors.append(
            Error(
                "SILO_ROUTER['SIGNING_KEY_ID'] does not name a key in SIGNING_KEYS.",
                hint="Set it to the id of the key control signs with; keep old ids listed while regions rotate.",
                id="silo_router.E006",
            )
        )
    if conf.is_control:
        errors += _check_region_keys()
    all_keys = dict(keys) if _valid_keys(keys) else {}
    if conf.is_control and isinstance(conf.REGIONS, Mapping):
        for options in conf.REGIONS.values():
            if isinstance(options, Mapping) and _valid_keys(options.get("SIGNING_KEYS")):
                all_keys.update(options["SIGNING_KEYS"])
    short = [k for k, v in all_keys.items() if len(v) < 32]
    if short:
        errors.append(
            Warning(
                f"Signing keys {', '.join(sorted(short))} are shorter than 32 characters.",
                hint="Use at least 32 random characters, e.g. secrets.token_urlsafe(32).",
                id="silo_router.W001",
            )
        )
    return errors


def _check_region_keys() -> list[CheckMessage]:
    """Each region's own hop keys (E021), and regions that could forge for each other (W004)."""
    errors: list[CheckMessage] = []
    if not isinstance(conf.REGIONS, Mapping):
        return errors
    holders: dict[str, list[str]] = {}
    for name, options in conf.REGIONS.items():
        if not isinstance(options, Mapping):
            continue
        if "SIGNING_KEYS" in options or "SIGNING_KEY_ID" in options:
            region_keys = options.get("SIGNING_KEYS")
            if not _valid_keys(region_keys):
                errors.append(
                    Error(
                        f"SILO_ROUTER['REGIONS'][{name!r}]['SIGNING_KEYS'] must map key ids to non-empty secrets.",
                        hint="List the keys region silo accepts, the same as its own SIGNING_KEYS.",
                        id="silo_router.E021",
                    )
                )
                continue
            if conf.signing_key_id_for(name) not in cast("Mapping[str, str]", region_keys):
                errors.append(
                    Error(
                        f"SILO_ROUTER['REGIONS'][{name!r}]['SIGNING_KEY_ID'] does not name one of its SIGNING_KEYS.",
                        hint="Name the key control signs this region's envelopes with (needed with more than one key).",
                        id="silo_router.E021",
                    )
                )
        if options.get("TRANSPORT", "http") == "local":
            continue  # served in this very process: nothing to isolate
        for secret in conf.signing_keys_for(name).values():
            holders.setdefault(secret, []).append(name)
    shared = sorted({region for names in holders.values() if len(set(names)) > 1 for region in names})
    if shared:
        errors.append(
            Warning(
                f"Regions {', '.join(shared)} share a hop signing key: any of them can mint envelopes "
                "the others accept, and confirm their payloads.",
                hint="Give each region its own key: REGIONS[name]['SIGNING_KEYS'] in control, and only that "
                "region's keys in its own SIGNING_KEYS.",
                id="silo_router.W004",
            )
        )
    return errors


def _check_regions() -> list[CheckMessage]:
    regions = conf.REGIONS
    errors: list[CheckMessage] = []
    if not isinstance(regions, Mapping):
        return [
            Error(
                "SILO_ROUTER['REGIONS'] must be a dict of region name to options.",
                hint="e.g. {'us': {'TRANSPORT': 'http', 'URL': 'https://us.example.com/silo-router/envelopes/'}}.",
                id="silo_router.E007",
            )
        ]
    if conf.is_control and not regions:
        errors.append(
            Error(
                "SILO_ROUTER['REGIONS'] is empty: control has nowhere to forward.",
                hint="List every region and its transport.",
                id="silo_router.E007",
            )
        )
    for name, options in regions.items():
        if not isinstance(options, Mapping):
            errors.append(
                Error(
                    f"SILO_ROUTER['REGIONS'][{name!r}] must be a dict.",
                    hint="e.g. {'TRANSPORT': 'http', 'URL': ...}.",
                    id="silo_router.E007",
                )
            )
            continue
        transport = str(options.get("TRANSPORT", "http"))
        try:
            import_by_alias(transport, aliases=TRANSPORT_ALIASES, setting=f"REGIONS][{name!r}][TRANSPORT")
        except SiloRouterConfigurationError as exc:
            errors.append(
                Error(
                    str(exc),
                    hint=f"Use {', '.join(TRANSPORT_ALIASES)} or a dotted path to a Transport subclass.",
                    id="silo_router.E008",
                )
            )
        if transport == "http" and not options.get("URL"):
            errors.append(
                Error(
                    f"Region {name!r} uses the http transport but has no URL.",
                    hint="Set 'URL' to the region's silo_router envelope endpoint.",
                    id="silo_router.E009",
                )
            )
    return errors


def _check_control() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if MIDDLEWARE_PATH not in getattr(settings, "MIDDLEWARE", []):
        errors.append(
            Warning(
                "SiloRouterMiddleware is not in MIDDLEWARE: no provider request will be answered.",
                hint=f"Add {MIDDLEWARE_PATH!r} first in MIDDLEWARE.",
                id="silo_router.W002",
            )
        )
    prefixes = conf.URL_PREFIXES
    providers = conf.PROVIDERS
    for prefix, provider in prefixes.items() if isinstance(prefixes, Mapping) else []:
        if not (isinstance(prefix, str) and prefix.startswith("/") and prefix.endswith("/")):
            errors.append(
                Error(
                    f"URL prefix {prefix!r} must start and end with '/'.",
                    hint="e.g. '/extensions/slack/'.",
                    id="silo_router.E010",
                )
            )
        if provider not in providers:
            errors.append(
                Error(
                    f"URL prefix {prefix!r} names unknown provider {provider!r}.",
                    hint="Known: " + ", ".join(providers) + "." + did_you_mean(str(provider), providers),
                    id="silo_router.E011",
                )
            )
    for name, path in providers.items():
        try:
            import_by_alias(path, aliases={}, setting=f"PROVIDERS][{name!r}")
        except SiloRouterConfigurationError as exc:
            errors.append(
                Error(
                    str(exc), hint="Point it at a silo_router.providers.base.Provider subclass.", id="silo_router.E012"
                )
            )
    strategies = {s.value for s in Strategy}
    for key, value in conf.ROUTES.items():
        if value not in strategies:
            errors.append(
                Error(
                    f"SILO_ROUTER['ROUTES'][{key!r}] is {value!r}.",
                    hint=f"Use one of {', '.join(sorted(strategies))}.",
                    id="silo_router.E013",
                )
            )
    for key, value in conf.ORDERING.items():
        if value not in ("strict", "unordered"):
            errors.append(
                Error(
                    f"SILO_ROUTER['ORDERING'][{key!r}] is {value!r}.",
                    hint="Use 'strict' (one at a time per region and installation) or 'unordered'.",
                    id="silo_router.E019",
                )
            )
    fanouts = {f.value for f in Fanout}
    for key, value in conf.FANOUT.items():
        if value not in fanouts:
            errors.append(
                Error(
                    f"SILO_ROUTER['FANOUT'][{key!r}] is {value!r}.",
                    hint=f"Use one of {', '.join(sorted(fanouts))}.",
                    id="silo_router.E014",
                )
            )
    for setting, paths in (
        ("RESOLVER", {"": conf.RESOLVER}),
        ("CONTROL_RESPONSE_HANDLERS", conf.CONTROL_RESPONSE_HANDLERS),
    ):
        for path in paths.values():
            try:
                import_by_alias(str(path), aliases={}, setting=setting)
            except SiloRouterConfigurationError as exc:
                errors.append(Error(str(exc), hint="Use a dotted path to an importable class.", id="silo_router.E015"))
    slack = conf.SLACK
    if "slack" in set(prefixes.values()):
        errors += _check_signing_secrets(slack.get("SIGNING_SECRETS"))
    custom_authorizer = slack.get("AUTHORIZER") != SLACK_DEFAULTS["AUTHORIZER"]
    if not (slack.get("BOT_TOKEN") or slack.get("CLIENT_ID") or custom_authorizer):
        errors.append(
            Warning(
                "SILO_ROUTER['SLACK'] holds no credentials (no CLIENT_ID, no BOT_TOKEN): workspaces can only be "
                "installed by hand, and control responses cannot open modals until they are.",
                hint="Set CLIENT_ID, CLIENT_SECRET and SCOPES to install workspaces through OAuth, or BOT_TOKEN "
                "for a single-workspace app.",
                id="silo_router.W003",
            )
        )
    return errors


def _check_signing_secrets(secrets: Any) -> list[CheckMessage]:
    """E016: Slack's signing secrets missing, of the wrong type (named as such), or holding empty entries."""
    where = "SILO_ROUTER['SLACK']['SIGNING_SECRETS']"
    if secrets is None or (isinstance(secrets, list | tuple) and not secrets):
        message, hint = (
            f"{where} is missing: every Slack request will be refused (401).",
            "Set it to [your app's signing secret]; list the old one too while rotating.",
        )
    elif not isinstance(secrets, list | tuple):
        message, hint = (
            f"{where} must be a list of signing secrets, not {type(secrets).__name__}.",
            "Wrap it in a list: [os.environ['SLACK_SIGNING_SECRET']]; list the old one too while rotating.",
        )
    elif not all(isinstance(secret, str) and secret for secret in secrets):
        message, hint = (
            f"{where} must hold non-empty strings only.",
            "Each entry is a signing secret from your Slack app's Basic Information page.",
        )
    else:
        return []
    return [Error(message, hint=hint, id="silo_router.E016")]


def _check_sync_fanout() -> list[CheckMessage]:
    """A synchronous kind has one answer, so it cannot fan out to every region."""
    routes, fanouts = conf.ROUTES, conf.FANOUT
    if not isinstance(routes, Mapping) or not isinstance(fanouts, Mapping):
        return []
    errors: list[CheckMessage] = []
    for key in sorted(set(routes) | set(fanouts)):
        general = str(key).partition(":")[0]
        strategy = routes.get(key) or routes.get(general)
        fanout = fanouts.get(key) or fanouts.get(general)
        if strategy == Strategy.SYNC and fanout == Fanout.ALL:
            errors.append(
                Error(
                    f"{key!r} is routed 'sync' but fans out to 'all' regions: only one region can answer "
                    "while the provider waits, so the other regions would never get it.",
                    hint=f"Set SILO_ROUTER['FANOUT'][{key!r}] = 'one', or route it 'async'.",
                    id="silo_router.E020",
                )
            )
    return errors


def _check_region() -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    if conf.MODE == "region" and not conf.REGION:
        errors.append(
            Error(
                "SILO_ROUTER['REGION'] is required in region mode.",
                hint="Set it to this silo's region name, as control's REGIONS names it.",
                id="silo_router.E017",
            )
        )
    modules = conf.get("HANDLER_MODULES")
    if not isinstance(modules, list | tuple):
        errors.append(
            Error(
                f"SILO_ROUTER['HANDLER_MODULES'] must be a list of module paths, not {type(modules).__name__}"
                + (f": write [{modules!r}]." if isinstance(modules, str) else "."),
                hint="e.g. ['myapp.slack_handlers'].",
                id="silo_router.E018",
            )
        )
    return errors


def _check_redacted_url_prefixes() -> list[CheckMessage]:
    prefixes = conf.get("REDACTED_URL_PREFIXES")
    valid = isinstance(prefixes, list | tuple) and all(
        isinstance(p, str) and p.startswith(("https://", "http://")) and p.count("/") >= 3 for p in prefixes
    )
    if valid:
        return []
    return [
        Error(
            "SILO_ROUTER['REDACTED_URL_PREFIXES'] must be a list of URL prefixes with a path.",
            hint="List prefixes such as 'https://proxy.example.com/response/'; what follows one is redacted.",
            id="silo_router.E023",
        )
    ]


def _check_tracing() -> list[CheckMessage]:
    """``TRACE_URL`` (E029) and ``OPENTELEMETRY`` (E030)."""
    errors: list[CheckMessage] = []
    url = conf.get("TRACE_URL")
    if url is not None and not (
        isinstance(url, str) and url.startswith(("https://", "http://")) and "{trace_id}" in url
    ):
        errors.append(
            Error(
                "SILO_ROUTER['TRACE_URL'] must be None or an http(s) URL with {trace_id} where the id goes.",
                hint="For example 'https://sentry.example.com/organizations/acme/traces/{trace_id}/'.",
                id="silo_router.E029",
            )
        )
    if conf.get("OPENTELEMETRY") not in (None, True, False):
        errors.append(
            Error(
                "SILO_ROUTER['OPENTELEMETRY'] must be None, True or False.",
                hint="None (the default): spans go to OpenTelemetry when opentelemetry-api is installed.",
                id="silo_router.E030",
            )
        )
    return errors


def _check_response_url_ledger() -> list[CheckMessage]:
    if not conf.is_region:
        return []
    try:
        import_by_alias(
            str(conf.SLACK["RESPONSE_URL_LEDGER"]),
            aliases=RESPONSE_URL_LEDGER_ALIASES,
            setting="SLACK.RESPONSE_URL_LEDGER",
        )
    except SiloRouterConfigurationError as exc:
        return [
            Error(str(exc), hint="Use 'database' or a dotted path to a ResponseUrlLedger class.", id="silo_router.E024")
        ]
    return []


def _check_oauth_credentials() -> list[CheckMessage]:
    """The install flow needs both app credentials and something to ask for (E028)."""
    slack = conf.SLACK
    client_id, client_secret = slack.get("CLIENT_ID"), slack.get("CLIENT_SECRET")
    if bool(client_id) != bool(client_secret):
        missing = "CLIENT_SECRET" if client_id else "CLIENT_ID"
        return [
            Error(
                f"SILO_ROUTER['SLACK'] sets only one of CLIENT_ID and CLIENT_SECRET: {missing} is missing, "
                "so no install can finish.",
                hint="Copy both from your app's Basic Information page (keep the secret in the environment), "
                "or remove both for a single-workspace app.",
                id="silo_router.E028",
            )
        ]
    if client_id and not slack.get("SCOPES"):
        return [
            Error(
                "SILO_ROUTER['SLACK']['CLIENT_ID'] is set but SCOPES is empty: installs would get no bot token.",
                hint="List the bot scopes the app needs, e.g. ['chat:write', 'commands']; handlers call Slack "
                "with the bot token.",
                id="silo_router.E028",
            )
        ]
    return []


def _check_control_url() -> list[CheckMessage]:
    """A region silo calls Slack through control's proxy, at CONTROL_URL (W006)."""
    if conf.MODE != "region" or conf.CONTROL_URL:
        return []
    return [
        Warning(
            "SILO_ROUTER['CONTROL_URL'] is not set in region mode: handlers cannot call Slack "
            "(request.client raises NoInstallation).",
            hint="Set it to control's internal base URL, e.g. 'http://control.internal:8000'; calls go to "
            "CONTROL_URL + WEB_API_PROXY_PATH.",
            id="silo_router.W006",
        )
    ]


def _check_installations() -> list[CheckMessage]:
    """Token encryption keys (E025, W005) and where Slack credentials may live (E026, E027)."""
    from cryptography.fernet import Fernet

    errors: list[CheckMessage] = []
    keys = conf.get("TOKEN_ENCRYPTION_KEYS")
    slack = conf.SLACK
    if not isinstance(keys, list | tuple):
        errors.append(
            Error(
                "SILO_ROUTER['TOKEN_ENCRYPTION_KEYS'] must be a list of Fernet keys.",
                hint="e.g. [os.environ['SILO_ROUTER_TOKEN_KEY']]; make one with Fernet.generate_key().",
                id="silo_router.E025",
            )
        )
        keys = None
    for index, key in enumerate(keys or ()):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            errors.append(
                Error(
                    f"SILO_ROUTER['TOKEN_ENCRYPTION_KEYS'][{index}] is not a valid Fernet key.",
                    hint="A key is 32 url-safe base64-encoded bytes: cryptography.fernet.Fernet.generate_key().",
                    id="silo_router.E025",
                )
            )
    if conf.is_control and keys is not None and not keys and not slack.get("BOT_TOKEN"):
        errors.append(
            Warning(
                "SILO_ROUTER['TOKEN_ENCRYPTION_KEYS'] is empty: stored Slack tokens are encrypted with a key "
                "derived from SECRET_KEY, so rotating SECRET_KEY makes them unreadable.",
                hint="Set TOKEN_ENCRYPTION_KEYS = [Fernet.generate_key()...] from your secrets store, then run "
                "manage.py silo_router_rotate_encryption_key.",
                id="silo_router.W005",
            )
        )
    if conf.MODE == "region":
        held = [name for name in ("BOT_TOKEN", "CLIENT_SECRET") if slack.get(name)]
        if held:
            errors.append(
                Error(
                    f"SILO_ROUTER['SLACK'] sets {' and '.join(held)} in region mode: regions hold no Slack token.",
                    hint="Remove them from the region's settings; regions call Slack through control's Web API "
                    "proxy (CONTROL_URL).",
                    id="silo_router.E026",
                )
            )
    if slack.get("BOT_TOKEN") and slack.get("CLIENT_ID"):
        errors.append(
            Error(
                "SILO_ROUTER['SLACK'] sets both BOT_TOKEN and CLIENT_ID: choose single-workspace or OAuth.",
                hint="Keep BOT_TOKEN for one workspace (every request uses it), or remove it and install "
                "workspaces through OAuth with CLIENT_ID and CLIENT_SECRET.",
                id="silo_router.E027",
            )
        )
    return errors


#: The largest ``PRUNE_BATCH``: a batch's ids are bound as one statement's parameters.
PRUNE_BATCH_MAX = 10_000


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_retention() -> list[CheckMessage]:
    """Retention periods (E031), ``PRUNE_BATCH`` (E032), ``BODY_RETENTION`` (E033), failures kept
    less long than successes (W007)."""
    errors: list[CheckMessage] = []
    periods_ok = True
    for name in ("DELIVERED_RETENTION", "FAILED_RETENTION"):
        value = conf.get(name)
        if not (_is_number(value) and value > 0):
            periods_ok = False
            errors.append(
                Error(
                    f"SILO_ROUTER[{name!r}] must be a positive number of seconds, not {value!r}.",
                    hint=f"The default is {DEFAULTS[name]!r} ({DEFAULTS[name] // 86400} days).",
                    id="silo_router.E031",
                )
            )
    batch = conf.get("PRUNE_BATCH")
    if not (isinstance(batch, int) and not isinstance(batch, bool) and 0 < batch <= PRUNE_BATCH_MAX):
        errors.append(
            Error(
                f"SILO_ROUTER['PRUNE_BATCH'] must be a whole number from 1 to {PRUNE_BATCH_MAX}, not {batch!r}.",
                hint=f"Rows deleted per short transaction; the default is {DEFAULTS['PRUNE_BATCH']!r}.",
                id="silo_router.E032",
            )
        )
    body = conf.get("BODY_RETENTION")
    if body is not None and not (_is_number(body) and body > 0):
        errors.append(
            Error(
                f"SILO_ROUTER['BODY_RETENTION'] must be None or a positive number of seconds, not {body!r}.",
                hint="None (the default) keeps a delivered payload's body as long as the row.",
                id="silo_router.E033",
            )
        )
    elif body is not None and periods_ok and body >= conf.DELIVERED_RETENTION:
        errors.append(
            Error(
                f"SILO_ROUTER['BODY_RETENTION'] ({body!r} s) is not below DELIVERED_RETENTION "
                f"({conf.get('DELIVERED_RETENTION')!r} s): the row would be deleted before its body is dropped.",
                hint="Set it below DELIVERED_RETENTION, or to None to keep bodies as long as the rows.",
                id="silo_router.E033",
            )
        )
    if periods_ok and conf.FAILED_RETENTION < conf.DELIVERED_RETENTION:
        errors.append(
            Warning(
                "SILO_ROUTER['FAILED_RETENTION'] is shorter than DELIVERED_RETENTION: failed and unroutable "
                "payloads, the ones an operator may still replay, are deleted before delivered ones.",
                hint="Keep failures at least as long as deliveries (defaults: 30 days and 7 days).",
                id="silo_router.W007",
            )
        )
    return errors
