"""Slack request signing (``X-Slack-Signature`` / ``X-Slack-Request-Timestamp``).

Slack signs ``"v0:" + timestamp + ":" + raw_body`` with HMAC-SHA256 under the app's
signing secret. Verification runs over the raw body bytes, before any parsing.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from collections.abc import Sequence

from silo_router.exceptions import NotConfigured, SignatureError

#: Slack sends whole Unix seconds; a fractional part is tolerated, nothing else is.
_TIMESTAMP_RE = re.compile(r"[0-9]{1,15}(?:\.[0-9]{1,9})?")
_SIGNATURE_RE = re.compile(r"v0=[0-9a-fA-F]{64}")


def compute_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """Return Slack's ``v0=<hex>`` signature of ``body`` sent at ``timestamp``."""
    basestring = b"v0:" + timestamp.encode("utf-8") + b":" + body
    digest = hmac.new(secret.encode("utf-8"), basestring, hashlib.sha256).hexdigest()
    return f"v0={digest}"


def parse_timestamp(value: str | None) -> float | None:
    """Parse a request timestamp header; ``None`` when absent, non-numeric or non-finite."""
    if value is None or not _TIMESTAMP_RE.fullmatch(value):
        return None
    parsed = float(value)
    return parsed if math.isfinite(parsed) else None


def verify_signature(
    *,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    secrets: Sequence[str],
    now: float | None = None,
    tolerance: int = 300,
) -> None:
    """Raise ``SignatureError`` unless ``signature`` is a fresh, valid signature of ``body``.

    With no secret configured, ``NotConfigured``: the server is at fault, not the caller.

    Every configured secret is tried (rotation), each with a constant-time comparison
    and without stopping at the first match. Error details never contain a secret or
    the expected signature.
    """
    usable_secrets = [secret for secret in secrets if secret]
    if not usable_secrets:
        raise NotConfigured("No Slack signing secret is configured on this server.")
    if not timestamp:
        raise SignatureError("The X-Slack-Request-Timestamp header is missing.", reason="missing_timestamp")
    sent_at = parse_timestamp(timestamp)
    if sent_at is None:
        raise SignatureError("The X-Slack-Request-Timestamp header is not a Unix time.", reason="invalid_timestamp")
    current = time.time() if now is None else now
    if abs(current - sent_at) > tolerance:
        raise SignatureError(
            f"The request timestamp is more than {tolerance} seconds away from the server clock.",
            reason="stale_timestamp",
        )
    if not signature:
        raise SignatureError("The X-Slack-Signature header is missing.", reason="missing_signature")
    if not _SIGNATURE_RE.fullmatch(signature):
        raise SignatureError(
            "The X-Slack-Signature header is not of the form v0=<64 hex digits>.", reason="malformed_signature"
        )
    received = signature.lower().encode("ascii")
    matched = False
    for secret in usable_secrets:
        expected = compute_signature(secret=secret, timestamp=timestamp, body=body).encode("ascii")
        matched |= hmac.compare_digest(expected, received)
    if not matched:
        raise SignatureError("The request signature does not match.", reason="signature_mismatch")
