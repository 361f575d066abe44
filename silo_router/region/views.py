"""The region's HTTP endpoint for the ``http`` transport.

Refusals (signature, region, malformed fields or body) are plain JSON 4xx answers. An
accepted envelope is answered 200 at once with a single space, the *accepted* marker,
so control knows the region is up before the handler starts; the receipt follows as
one line of JSON when the handler is done. Work the handler left for after commit runs once the whole
response has been written.

The batch endpoint (``envelopes/batch/``) takes several envelopes of this region in one
POST, ``{"envelopes": [{"body", "signature", "attempt", "replays"}]}``. Each envelope is
verified alone, as if it had come by itself: a forged or malformed one is refused on its
own line and the others run. Once the batch is read and every envelope verified, the
accepted marker goes out; then one line per envelope, in order, as its handler finishes
(a receipt, or ``{"error", "status", "detail"}`` for a refusal). An envelope's
after-commit work runs once its line has been written, before the next envelope runs.

The request's trace headers and attempt number (the :class:`~silo_router.transports.base.Hop`
the http transport sends) make the region's run the child of the attempt; a refused
envelope's receive span says why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
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
from silo_router.transports.base import ATTEMPT_HEADER, REPLAY_HEADER, Hop
from silo_router.transports.http import BATCH_MAX_BYTES, BATCH_MAX_ENVELOPES

from .receiver import Accepted, HandlerFailed, accept, dispatch, record_rejection

logger = logging.getLogger("silo_router.region")

#: Sent as soon as an envelope is verified; JSON parsers skip it.
ACCEPTED_MARKER = b" "
#: The receipt is one line of JSON: a client has all of it at the newline, whatever the
#: server's framing (HTTP/1.0 servers end a streamed body only by closing the connection).
RECEIPT_END = b"\n"


def _error(status: int, reason: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": reason, "detail": detail}, status=status)


def _read_body(request: HttpRequest, *, limit: int | None = None) -> bytes:
    """The raw envelope (or batch), bounded by ``limit``: by default ``max_envelope_size(MAX_BODY_SIZE)``
    (not Django's upload limit)."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or "")
    except ValueError:
        raise EnvelopeRejected("The envelope needs a Content-Length.", reason="length_required", status=411) from None
    limit = max_envelope_size(conf.MAX_BODY_SIZE) if limit is None else limit
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
        outcome, self._held = _dispatched(accepted)
        return outcome

    def close(self) -> None:
        try:
            after_receipt.run_all(self._held)
        finally:
            super().close()


def _dispatched(accepted: Accepted) -> tuple[dict[str, Any], list[after_receipt.Callback]]:
    """Run an accepted envelope's handler: its receipt (or in-band error) and the after-commit work it held."""
    with after_receipt.holding() as held:
        try:
            return dispatch(accepted).as_dict(), held
        except HandlerFailed as exc:
            return {"error": "handler_failed", "detail": str(exc)}, held
        except Exception:  # the region itself is unwell (its database, say)
            logger.exception("dispatching envelope %s failed", accepted.envelope.id)
            return {"error": "region_error", "detail": "The region could not process the envelope."}, held


class BatchReceiptResponse(StreamingHttpResponse):
    """Streams the accepted marker, then one line per envelope of a batch, running each one's held work after it."""

    def __init__(self, items: Sequence[Accepted | EnvelopeRejected]) -> None:
        self._held: list[after_receipt.Callback] = []
        super().__init__(self._stream(items), content_type="application/json")

    def _stream(self, items: Sequence[Accepted | EnvelopeRejected]) -> Iterator[bytes]:
        yield ACCEPTED_MARKER
        for item in items:
            if isinstance(item, EnvelopeRejected):
                yield _line({"error": item.reason, "status": item.status, "detail": item.detail})
                continue
            outcome, self._held = _dispatched(item)
            yield _line(outcome)
            held, self._held = self._held, []
            after_receipt.run_all(held)

    def close(self) -> None:
        try:
            after_receipt.run_all(self._held)  # the connection ended right after a line
        finally:
            super().close()


def _line(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data).encode() + RECEIPT_END


def _batch_items(body: bytes) -> list[Mapping[str, Any]]:
    """The envelopes of a batch body; ``EnvelopeRejected`` (400) when it is not a batch."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    items = data.get("envelopes") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise EnvelopeRejected('A batch is {"envelopes": [...]}, not empty.', reason="malformed_batch", status=400)
    if len(items) > BATCH_MAX_ENVELOPES:
        raise EnvelopeRejected(
            f"A batch may carry at most {BATCH_MAX_ENVELOPES} envelopes.", reason="batch_too_large", status=413
        )
    for item in items:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("body"), str)
            or not isinstance(item.get("signature"), str)
        ):
            raise EnvelopeRejected(
                'Each envelope of a batch is {"body": str, "signature": str}.', reason="malformed_batch", status=400
            )
    return items


def _verified_item(item: Mapping[str, Any], trace: Mapping[str, str]) -> Accepted | EnvelopeRejected:
    """One envelope of a batch, verified as if it had come alone (its own signature, size, fields)."""
    numbering = {
        name: str(item[key]) for name, key in ((ATTEMPT_HEADER, "attempt"), (REPLAY_HEADER, "replays")) if key in item
    }
    own = item.get("trace")  # the envelope's own attempt context, else the request's
    if isinstance(own, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in own.items()):
        trace = own
    hop = Hop.from_headers({**trace, **numbering})
    body = item["body"].encode("utf-8", "surrogatepass")
    limit = max_envelope_size(conf.MAX_BODY_SIZE)
    if len(body) > limit:
        record_rejection("envelope_too_large", hop=hop)
        return EnvelopeRejected(f"An envelope may be at most {limit} bytes.", reason="envelope_too_large", status=413)
    try:
        return accept(body, item["signature"], hop=hop)
    except EnvelopeRejected as exc:
        return exc


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


@csrf_exempt
@require_POST
@transaction.non_atomic_requests
def envelope_batch(request: HttpRequest) -> HttpResponseBase:
    """POST several sealed envelopes of this region; each one's HMAC signature is its authentication."""
    hop = Hop.from_headers(request.headers)
    try:
        items = _batch_items(_read_body(request, limit=BATCH_MAX_BYTES))
    except EnvelopeRejected as exc:
        record_rejection(exc.reason, hop=hop)
        return _error(exc.status, exc.reason, exc.detail)
    return BatchReceiptResponse([_verified_item(item, hop.trace) for item in items])
