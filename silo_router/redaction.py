"""Keep capabilities and secrets out of logs, spans and error events.

A Slack ``response_url`` lets anyone post as the app for 30 minutes and a
``trigger_id`` opens a modal as the user; bot tokens, signing secrets, the
control-to-region keys and signature headers are secrets. This module replaces them
with :data:`REDACTED` wherever they may be written down:

- :func:`redact_url` for URLs under a capability prefix (``https://hooks.slack.com/``
  and ``SILO_ROUTER['REDACTED_URL_PREFIXES']``);
- :func:`scrub_text` for strings (log lines, reprs, raw bodies, span descriptions):
  capability URLs, ``key=value`` / ``"key": "value"`` pairs of known capability keys,
  token- and trigger-shaped values, and the configured secrets themselves;
- :func:`scrub` for nested data (dicts by key, lists, strings);
- :class:`RedactingFilter` and :func:`install_log_redaction` for the logging module.

It imports nothing from control or region.
"""

from __future__ import annotations

import functools
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from django.conf import settings

from .conf import conf

REDACTED = "[redacted]"
#: What a log record says instead when redaction itself failed.
UNREDACTABLE = "[log record withheld: it could not be checked for secrets]"

#: Keys whose values are capabilities or secrets, compared lower-case with ``-`` as ``_``.
CAPABILITY_KEYS = frozenset(
    {
        "response_url",
        "response_urls",
        "trigger_id",
        "interactivity_pointer",
        "token",
        "bot_token",
        "access_token",
        "refresh_token",
        "client_secret",
        "signing_secret",
        "signing_secrets",
        "signing_keys",
        "signature",
        "x_slack_signature",
        "x_silo_router_signature",
        "http_x_slack_signature",
        "http_x_silo_router_signature",
        "authorization",
        "http_authorization",
    }
)
#: Keys whose values are whole raw request bodies: never written down, whatever they hold.
RAW_BODY_KEYS = frozenset({"body", "raw_body"})
#: Where a URL is itself a capability unless configured otherwise.
DEFAULT_URL_PREFIXES = ("https://hooks.slack.com/",)
#: Secrets shorter than this are not searched for in text (they would match ordinary words).
MIN_SECRET_LENGTH = 8
#: How deep :func:`scrub` follows nested data before replacing what is left.
MAX_DEPTH = 32
#: The shortest trigger id: ``1.1.`` and 32 hex digits.
TRIGGER_ID_MIN_LENGTH = 36

_KEY_NAMES = "|".join(sorted((re.escape(k) for k in CAPABILITY_KEYS), key=len, reverse=True))
#: ``key=value`` (forms, query strings), ``"key": "value"`` (JSON, also with escaped
#: quotes) and ``'key': 'value'`` (reprs); the value runs to the next delimiter.
_KEY_VALUE = re.compile(
    rf"""(?ix)
    (?P<key>(?<![a-z0-9_])(?:{_KEY_NAMES.replace("_", "[_-]")}))
    (?P<sep>(?:%22)?(?:%3A|%3D)(?:%20)*(?:%22)?|\\?["']?\s*[:=]\s*\\?["']?)
    (?P<value>(?:\\/|(?!%22|%2C|%26)[^"'&\s,;}}<>\\])+)
    """
)
#: Value shapes that are capabilities wherever they appear, each with a test that every
#: string it can match passes (so a string that fails it is not searched; the tests are
#: exact, never approximate): a literal each match holds, a trigger id's shortest length,
#: ``hooks.slack.com`` in a case-folded copy (case folding maps every character that
#: ``re.IGNORECASE`` lets match a letter of it to that letter: ``K`` to ``k``, ``ſ`` to ``s``).
_SHAPES: tuple[tuple[Callable[[str], bool], re.Pattern[str]], ...] = (
    (lambda text: "xox" in text, re.compile(r"xox[a-z]-[A-Za-z0-9-]+")),  # Slack tokens (bot, user, app, refresh)
    (lambda text: "xapp-" in text, re.compile(r"xapp-[A-Za-z0-9-]+")),  # app-level tokens
    (lambda text: "v0=" in text, re.compile(r"v0=[0-9a-fA-F]{64}")),  # Slack request signatures
    (lambda text: "v1=" in text, re.compile(r"v1=[0-9a-f]{64}")),  # control-to-region envelope signatures
    (
        lambda text: len(text) >= TRIGGER_ID_MIN_LENGTH and "." in text,
        re.compile(r"\b\d+\.\d+\.[0-9a-fA-F]{32}\b"),  # trigger_ids
    ),
    (
        lambda text: "." in text and "hooks.slack.com" in text.casefold(),
        re.compile(r"https?(?::|%3A)(?:/|%2F|\\/){2}hooks\.slack\.com[^\s\"'<>&,;]*", re.IGNORECASE),
    ),
)
_VALUE_PATTERNS = tuple(pattern for _, pattern in _SHAPES)
#: A part of every capability key (``_`` and ``-`` aside), matched as :data:`_KEY_VALUE` matches keys.
_KEY_STEMS = ("url", "trigger", "pointer", "token", "secret", "keys", "signature", "authorization")
_ANY_KEY_STEM = re.compile("|".join(_KEY_STEMS), re.IGNORECASE)


def url_prefixes() -> tuple[str, ...]:
    """Prefixes under which a URL is a capability (Slack's hooks and the configured ones)."""
    return DEFAULT_URL_PREFIXES + tuple(conf.REDACTED_URL_PREFIXES)


def known_secrets() -> tuple[str, ...]:
    """The configured secrets: bot token, signing secrets, control-to-region keys."""
    raw = getattr(settings, "SILO_ROUTER", None) or {}
    slack = raw.get("SLACK") or {}
    found: list[str] = [str(slack.get("BOT_TOKEN") or "")]
    found.extend(str(s) for s in slack.get("SIGNING_SECRETS") or ())
    found.extend(str(k) for k in (raw.get("SIGNING_KEYS") or {}).values())
    for region in (raw.get("REGIONS") or {}).values():
        if isinstance(region, Mapping):
            found.extend(str(k) for k in (region.get("SIGNING_KEYS") or {}).values())
    return tuple(s for s in found if len(s) >= MIN_SECRET_LENGTH)


@functools.lru_cache(maxsize=64)
def _prefix_patterns(prefix: str) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """A prefix as written, percent-encoded (form bodies) and JSON-escaped, each with its pattern."""
    variants = dict.fromkeys((prefix, urllib.parse.quote(prefix, safe=""), prefix.replace("/", "\\/")))
    return tuple((v, re.compile(re.escape(v) + r"[^\s\"'<>&,;]*")) for v in variants)


def redact_url(url: str) -> str:
    """``url`` with everything after a capability prefix replaced (scheme and host stay)."""
    for prefix in url_prefixes():
        if url.startswith(prefix):
            return prefix + REDACTED
    return url


def is_capability_key(key: Any) -> bool:
    """Whether a mapping key names a capability or secret."""
    return isinstance(key, str) and key.lower().replace("-", "_") in CAPABILITY_KEYS


#: Headers that mark a request whose body is a raw provider body or an envelope.
SIGNED_REQUEST_HEADERS = frozenset({"x_slack_signature", "x_silo_router_signature"})


def is_signed_request(headers: Any) -> bool:
    """Whether request ``headers`` (a mapping, any case) carry a Slack or envelope signature."""
    if not isinstance(headers, Mapping):
        return False
    return any(isinstance(k, str) and k.lower().replace("-", "_") in SIGNED_REQUEST_HEADERS for k in headers)


def scrub_text(text: str) -> str:
    """``text`` with every capability URL, capability value and configured secret redacted."""
    if not text:
        return text
    return Scrubber().text(text)


def scrub(value: Any, *, depth: int = 0) -> Any:
    """A copy of ``value`` with capabilities redacted: by key in mappings, by shape in strings."""
    return Scrubber().value(value, depth)


class Scrubber:
    """:func:`scrub_text` and :func:`scrub` with the configured secrets and URL prefixes read once.

    Build one per event or log record (the settings are read when it is built), so that a
    whole event's strings share one reading of the settings. A string is searched only
    for what it can hold: each regular expression runs only when the string holds a
    literal without which that expression cannot match. A ``key=value`` pair's separator
    holds ``:``, ``=`` or a percent-encoded one (``%3A``, ``%3D``), and its key one of
    :data:`_KEY_STEMS`.
    """

    __slots__ = ("_any_literal", "_prefixes", "_secrets")

    def __init__(self) -> None:
        self._secrets = known_secrets()
        self._prefixes = tuple(variant for prefix in url_prefixes() for variant in _prefix_patterns(prefix))
        self._any_literal = _any_literal(self._secrets + tuple(variant for variant, _ in self._prefixes))

    def text(self, text: str) -> str:
        """``text`` redacted, as :func:`scrub_text` does."""
        if not text or not self._any_literal.search(text):
            return text  # it holds no secret, no prefix, nothing any search below needs: unchanged
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for variant, pattern in self._prefixes:
            if variant in text:
                text = pattern.sub(variant + REDACTED, text)
        for may_match, shape in _SHAPES:
            if may_match(text):
                text = shape.sub(REDACTED, text)
        if (":" in text or "=" in text or "%3" in text) and _ANY_KEY_STEM.search(text):
            text = _KEY_VALUE.sub(_redacted_pair, text)
        return text

    def value(self, value: Any, depth: int = 0) -> Any:
        """A redacted copy of nested ``value``, as :func:`scrub` makes."""
        if depth > MAX_DEPTH:
            return REDACTED
        if isinstance(value, str):
            return self.text(value) if value else value
        if isinstance(value, Mapping):
            return {key: self._item(key, item, depth) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(item, depth + 1) for item in value]
        if isinstance(value, bytes | bytearray):
            return self.text(bytes(value).decode("utf-8", "replace"))
        return value

    def _item(self, key: Any, item: Any, depth: int) -> Any:
        if item is None or item == "":
            return item
        if isinstance(key, str) and _is_withheld_key(key):
            return REDACTED
        return self.value(item, depth + 1)


#: What every string any of the searches of :meth:`Scrubber.text` can change holds one of,
#: besides the configured secrets and prefixes: the literals of :data:`_SHAPES` (the dot
#: stands for a trigger id's and ``hooks.slack.com``'s) and of a ``key=value`` separator.
_SHAPE_LITERALS = ("xox", "xapp-", "v0=", "v1=", ".", ":", "=", "%3")


@functools.lru_cache(maxsize=16)
def _any_literal(literals: tuple[str, ...]) -> re.Pattern[str]:
    """A search for any of ``literals`` or :data:`_SHAPE_LITERALS`, exactly as ``in`` finds them."""
    return re.compile("|".join(re.escape(literal) for literal in (*literals, *_SHAPE_LITERALS)))


def _redacted_pair(match: re.Match[str]) -> str:
    return match.group("key") + match.group("sep") + REDACTED


@functools.lru_cache(maxsize=4096)
def _is_withheld_key(key: str) -> bool:
    """Whether a mapping's value under ``key`` is never written down (a capability key or a raw body key)."""
    return is_capability_key(key) or key.lower() in RAW_BODY_KEYS


class RedactingFilter(logging.Filter):
    """Rewrites a record's message and traceback text with :func:`scrub_text`.

    Usable as a handler filter in ``LOGGING`` (``{"()": "silo_router.redaction.RedactingFilter"}``);
    :func:`install_log_redaction` applies it to every record as it is created.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


def redact_record(record: logging.LogRecord) -> None:
    """Redact ``record`` in place: message (args merged), traceback and stack text.

    A record with nothing to redact is left exactly as it was (its ``args`` too).
    """
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken format string: logging reports it, with msg and args
        record.msg = scrub_text(str(record.msg))
        if isinstance(record.args, tuple):
            record.args = tuple(scrub(list(record.args)))
        elif isinstance(record.args, Mapping):
            record.args = scrub(record.args)
    else:
        scrubbed = scrub_text(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
    if record.exc_info and not record.exc_text:
        traceback_text = logging.Formatter().formatException(record.exc_info)
        if scrub_text(traceback_text) != traceback_text:
            record.exc_text = traceback_text
    if record.exc_text:
        record.exc_text = scrub_text(record.exc_text)
    if record.stack_info:
        record.stack_info = scrub_text(record.stack_info)


_installed = False


def install_log_redaction() -> None:
    """Redact every log record as it is created (idempotent; the apps' ``ready()`` call it).

    A record factory rather than a filter on the ``silo_router`` and ``slack_sdk``
    loggers, because a logger's filters do not apply to its children's records, and
    records must be clean before Sentry's logging integration or any handler sees them.
    """
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            redact_record(record)
        except Exception:  # noqa: BLE001 - logging must not fail, nor write what it could not check
            record.msg, record.args = UNREDACTABLE, None
            record.exc_info = record.exc_text = record.stack_info = None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


def iter_strings(value: Any) -> Iterator[str]:
    """Every string inside nested data (for tests and audits)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from iter_strings(key)
            yield from iter_strings(item)
    elif isinstance(value, Iterable) and not isinstance(value, bytes | bytearray):
        for item in value:
            yield from iter_strings(item)
