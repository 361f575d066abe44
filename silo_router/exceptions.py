"""Error types.

Request errors subclass Django's ``SuspiciousOperation`` or ``BadRequest`` so that a
bad request can never surface as a 500; configuration errors subclass
``ImproperlyConfigured`` and are never swallowed. Every request error carries an HTTP
status and a short machine-readable ``reason`` that is safe to send back: it names
what was wrong, never a secret or the expected value.
"""

from __future__ import annotations

from django.core.exceptions import BadRequest, ImproperlyConfigured, SuspiciousOperation


class SiloRouterConfigurationError(ImproperlyConfigured):
    """A ``SILO_ROUTER`` setting is missing or invalid."""


class RequestRejected(Exception):
    """Base for every inbound request that is answered with an error status.

    A 4xx blames the request; ``NotConfigured`` (503) is the one server-side case.

    ``reason`` is a stable token (``signature_mismatch``, ``malformed_json``...) and
    ``detail`` a human sentence; both are safe to return to the caller.
    """

    status: int = 400
    reason: str = "bad_request"

    def __init__(self, detail: str, *, reason: str | None = None, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason
        if status is not None:
            self.status = status


class SignatureError(RequestRejected, SuspiciousOperation):
    """A signature is missing, malformed, stale or wrong (401 from a provider)."""

    status = 401
    reason = "invalid_signature"


class MalformedRequest(RequestRejected, BadRequest):
    """The body cannot be parsed into a request of a known kind (400)."""

    status = 400
    reason = "malformed_request"


class PayloadTooLarge(RequestRejected):
    """The body exceeds ``MAX_BODY_SIZE`` (413)."""

    status = 413
    reason = "payload_too_large"


class EnvelopeRejected(RequestRejected, SuspiciousOperation):
    """A control-to-region envelope is forged, stale, or not for this region (403)."""

    status = 403
    reason = "envelope_rejected"


class NotConfigured(RequestRejected):
    """This server cannot check or route the request (no signing secret, an unknown provider).

    A 503 that is logged as an error: the caller did nothing wrong, and Slack retries.
    """

    status = 503
    reason = "not_configured"
