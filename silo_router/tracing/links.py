"""Causal links between traces: what a late delivery, a notification or a click came from.

A link names a span of another trace by its ids. It can be read from the propagation
headers an envelope or a message carried (``sentry-trace``, W3C ``traceparent``), or
made from a notification id, whose trace id is derived from it.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from . import names

_SENTRY_TRACE = re.compile(r"^\s*([0-9a-f]{32})-([0-9a-f]{16})(?:-([01]))?\s*$")
_TRACEPARENT = re.compile(r"^\s*[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\s*$")


@dataclasses.dataclass(frozen=True)
class Link:
    """A link to the span ``span_id`` of trace ``trace_id``, of type ``type``."""

    trace_id: str
    span_id: str
    sampled: bool | None = None
    type: str = names.LINK_CAUSED_BY

    def as_sentry(self) -> dict[str, object]:
        """The link in Sentry's span-link format (``contexts.trace.links`` / ``spans[i].links``)."""
        link: dict[str, object] = {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "attributes": {"sentry.link.type": self.type},
        }
        if self.sampled is not None:
            link["sampled"] = self.sampled
        return link


def from_headers(headers: Mapping[str, str] | None, *, type: str = names.LINK_CAUSED_BY) -> dict[str, Link]:
    """Links to the span that wrote ``headers``, per back end (``"sentry"``, ``"otel"``).

    The two back ends keep their own trace ids unless one bridges the other, so each
    gets the link its own header names.
    """
    found: dict[str, Link] = {}
    if not headers:
        return found
    sentry = _SENTRY_TRACE.match(headers.get("sentry-trace", ""))
    if sentry:
        sampled = None if sentry.group(3) is None else sentry.group(3) == "1"
        found["sentry"] = Link(sentry.group(1), sentry.group(2), sampled, type)
    w3c = _TRACEPARENT.match(headers.get("traceparent", ""))
    if w3c:
        found["otel"] = Link(w3c.group(1), w3c.group(2), bool(int(w3c.group(3), 16) & 1), type)
    return found


def trace_id_of(headers: Mapping[str, str] | None) -> str | None:
    """The trace id named by ``headers`` (Sentry's first, then W3C's), or ``None``."""
    for link in from_headers(headers).values():
        return link.trace_id
    return None


def notification_ids(notification_id: str) -> tuple[str, str]:
    """The trace id and root span id of a notification's trace, derived from its id.

    A notification id is 32 hex digits (a UUID's); the trace id is those digits, and the
    root span id the first 16 of them, so anyone holding the id can find and link the trace.
    """
    digits = notification_id.replace("-", "").lower()
    if not re.fullmatch(r"[0-9a-f]{32}", digits) or digits == "0" * 32:
        raise ValueError("A notification id is 32 hex digits, not all zero.")
    span_id = digits[:16] if digits[:16] != "0" * 16 else digits[16:]
    return digits, span_id


def to_notification(notification_id: str) -> Link:
    """A link from a click (or a reply) to the notification's own trace."""
    trace_id, span_id = notification_ids(notification_id)
    return Link(trace_id, span_id, True, names.LINK_NOTIFICATION)
