"""The region's HTTP endpoint for the ``http`` transport.

Refusals (signature, region, malformed fields or body) are plain JSON 4xx answers. An
accepted envelope is answered 200 at once with a single space, the *accepted* marker,
so control knows the region is up before the handler starts; the receipt follows as
one line of JSON when the handler is done. Work the handler left for after commit runs once the whole
response has been written.

The request's trace headers and attempt number (the :class:`~silo_router.transports.base.Hop`
the http transport sends) make the region's run the child of the attempt; a refused
envelope's receive span says why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from django.db import transaction
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from silo_router import after_receipt, signing
from silo_router.conf import conf
from silo_router.envelope import max_envelope_size
from silo_router.exceptions import EnvelopeRejected
from silo_router.transports.base import Hop

from .receiver import Accepted, HandlerFailed, accept, dispatch, record_rejection

logger = logging.getLogger("silo_router.region")

#: Sent as soon as an envelope is verified; JSON parsers skip it.
ACCEPTED_MARKER = b" "
#: The receipt is one line of JSON: a client has all of it at the newline, whatever the
#: server's framing (HTTP/1.0 servers end a streamed body only by closing the connection).
RECEIPT_END = b"\n"


def _error(status: int, reason: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": reason, "detail": detail}, status=status)


def _read_body(request: HttpRequest) -> bytes:
    """The raw envelope, bounded by ``max_envelope_size(MAX_BODY_SIZE)`` (not Django's upload limit)."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        raise EnvelopeRejected("The envelope needs a Content-Length.", reason="length_required", status=411) from None
    limit = max_envelope_size(conf.MAX_BODY_SIZE)
    if length < 0 or length > limit:
        raise EnvelopeRejected(f"An envelope may be at most {limit} bytes.", reason="envelope_too_large", status=413)
    try:
        body = request.read(length)
    except OSError:
        body = b""
    if len(body) != length:
        raise EnvelopeRejected("The envelope body ended early.", reason="incomplete_body", status=400)
    return body


class ReceiptResponse(StreamingHttpResponse):
    """Streams the accepted marker, then the receipt; runs held after-commit work on close."""

    def __init__(self, accepted: Accepted) -> None:
        self._held: list[after_receipt.Callback] = []
        super().__init__(self._stream(accepted), content_type="application/json")

    def _stream(self, accepted: Accepted) -> Iterator[bytes]:
        yield ACCEPTED_MARKER
        yield json.dumps(self._outcome(accepted)).encode() + RECEIPT_END

    def _outcome(self, accepted: Accepted) -> dict[str, Any]:
        with after_receipt.holding() as held:
            try:
                return dispatch(accepted).as_dict()
            except HandlerFailed as exc:
                return {"error": "handler_failed", "detail": str(exc)}
            except Exception:  # the region itself is unwell (its database, say)
                logger.exception("dispatching envelope %s failed", accepted.envelope.id)
                return {"error": "region_error", "detail": "The region could not process the envelope."}
            finally:
                self._held = list(held)

    def close(self) -> None:
        try:
            after_receipt.run_all(self._held)
        finally:
            super().close()


@csrf_exempt
@require_POST
@transaction.non_atomic_requests
def envelopes(request: HttpRequest) -> HttpResponseBase:
    """POST a sealed envelope; the HMAC signature is the authentication."""
    hop = Hop.from_headers(request.headers)
    try:
        body = _read_body(request)
    except EnvelopeRejected as exc:
        record_rejection(exc.reason, hop=hop)
        return _error(exc.status, exc.reason, exc.detail)
    try:
        accepted = accept(body, request.headers.get(signing.HEADER), hop=hop)
    except EnvelopeRejected as exc:
        return _error(exc.status, exc.reason, exc.detail)
    return ReceiptResponse(accepted)
