"""HMAC signatures for the control-to-region hop.

A signature header reads ``t=<unix seconds>,kid=<key id>,v1=<hex>`` where ``v1`` is
HMAC-SHA256 over ``"v1:" + t + ":" + kid + ":"`` followed by the exact body bytes. The
body is the serialized envelope, so the envelope id is covered too. Several keys may
be accepted at once (rotation); one signs. Signatures older or newer than
``max_age`` seconds are refused (replay window); replays inside the window carry the
same envelope id and are absorbed by the region's idempotency record.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections.abc import Mapping

from .exceptions import EnvelopeRejected

HEADER = "X-Silo-Router-Signature"
_HEADER_RE = re.compile(r"^t=(?P<t>\d{1,12}),kid=(?P<kid>[A-Za-z0-9._-]{1,64}),v1=(?P<mac>[0-9a-f]{64})$")


def _mac(key: str, timestamp: str, key_id: str, body: bytes) -> str:
    message = f"v1:{timestamp}:{key_id}:".encode() + body
    return hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def sign(body: bytes, *, key_id: str, key: str, timestamp: float | None = None) -> str:
    """Return the signature header value for ``body``."""
    ts = str(int(time.time() if timestamp is None else timestamp))
    return f"t={ts},kid={key_id},v1={_mac(key, ts, key_id, body)}"


def parse_header(header: str | None) -> tuple[str, str, str]:
    """``(timestamp, key id, mac)`` of a signature header; ``missing_signature`` or ``malformed_signature``."""
    if not header:
        raise EnvelopeRejected("The envelope has no signature header.", reason="missing_signature")
    match = _HEADER_RE.match(header.strip())
    if match is None:
        raise EnvelopeRejected("The envelope signature header is malformed.", reason="malformed_signature")
    return match["t"], match["kid"], match["mac"]


def verify(
    body: bytes,
    header: str | None,
    *,
    keys: Mapping[str, str],
    max_age: int,
    now: float | None = None,
) -> str:
    """Check ``header`` against ``body``; return the key id that signed it.

    Raises ``EnvelopeRejected`` (403) with reason ``missing_signature``,
    ``malformed_signature``, ``unknown_key``, ``stale_signature`` or
    ``signature_mismatch``.
    """
    timestamp, key_id, mac = parse_header(header)
    key = keys.get(key_id)
    if key is None:
        raise EnvelopeRejected(f"The envelope is signed with an unknown key id {key_id!r}.", reason="unknown_key")
    current = time.time() if now is None else now
    skew = abs(current - int(timestamp))
    if not math.isfinite(skew) or skew > max_age:
        raise EnvelopeRejected(
            f"The envelope signature is outside the {max_age} s replay window.", reason="stale_signature"
        )
    if not hmac.compare_digest(_mac(key, timestamp, key_id, body), mac):
        raise EnvelopeRejected("The envelope signature does not match its body.", reason="signature_mismatch")
    return key_id


#: Reasons a region gives when the hop itself is misconfigured (keys, clocks, addressing,
#: handler modules that do not import), not the one envelope: control holds the region's
#: traffic instead of failing it.
FLEET_FAULT_REASONS = frozenset(
    {
        "missing_signature",
        "malformed_signature",
        "unknown_key",
        "stale_signature",
        "signature_mismatch",
        "wrong_region",
        "unsupported_version",
        "handlers_not_loaded",
    }
)


def confirmation_message(envelope_id: str, outcome: str, reason: str) -> bytes:
    """What a region signs when it confirms a queued envelope back to control."""
    return f"confirm:{envelope_id}:{outcome}:{reason}".encode()
