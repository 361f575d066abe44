"""The control path for one provider request: read, verify, classify, answer or forward.

Order matters and is the point of this module: a forwarded kind is first authorized
(the installation's credentials, from a per-process cache: no query for a busy
installation), then an event the app's own bot caused is answered and dropped, then a
control response (the Loading modal, with the installation's token) runs before any
resolver or storage work; a 2xx for a forwarded kind is returned only after the payload
is committed (and, for a lifecycle event, applied); a synchronous forward spends only
what is left of the provider's deadline. Bad input is a 4xx with a reason, bad data in
storage (a ``DataError``) a 400, a storage outage a 503 (the provider retries); nothing
that talks to Slack on the user's behalf runs on the request thread after the control
response.

Every request is one span, ``silo_router.control.request``, with a child span per stage
(read, verify, classify, authorize, control_response, resolve, store, publish,
forward_sync, unroutable, lifecycle). The request span says how the request ended
(``outcome``: :class:`RequestOutcome`) and how long the provider waited for its answer
against its deadline (``ack_ms``, ``deadline_ms``, ``deadline_missed``, ``in_transit_ms``);
the same figures are metrics. A click on a notification links to the notification's
trace. No capability (``trigger_id``, ``response_url``, a token) is ever an attribute.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

from django.db import DatabaseError, DataError
from django.http import HttpRequest, HttpResponse, JsonResponse

from silo_router import tracing
from silo_router.conf import conf
from silo_router.envelope import Envelope
from silo_router.exceptions import (
    MalformedRequest,
    NotConfigured,
    PayloadTooLarge,
    RequestRejected,
    SiloRouterConfigurationError,
)
from silo_router.plugins import cached, import_by_alias
from silo_router.providers.base import (
    ControlResponse,
    InboundRequest,
    Provider,
    ProviderResponse,
    ReportOutcome,
)
from silo_router.providers.registry import get_provider
from silo_router.tracing import metrics

from . import control_responses, delivery, lifecycle
from .deadline import Deadline
from .models import Payload
from .resolver import Resolution, Resolver
from .routing import Strategy, strategy_for

logger = logging.getLogger("silo_router.control")

#: The shortest ``views.open`` timeout worth trying when the deadline is nearly spent.
MIN_CONTROL_RESPONSE_TIMEOUT = 0.1
#: How much of a chunked body is read per call.
CHUNK_SIZE = 64 * 1024


class RequestOutcome(enum.StrEnum):
    """How one request ended (the request span's ``outcome``)."""

    #: Control answered it itself (``url_verification``, ``ssl_check``).
    ANSWERED = "answered"
    #: Acknowledged and dropped: routed to nothing by configuration, or the app's own event.
    IGNORED = "ignored"
    #: Committed for asynchronous delivery.
    STORED = "stored"
    #: Already stored (a provider retry): acknowledged, nothing stored twice.
    DUPLICATE = "duplicate"
    #: Kept for operators: no route, no installation, no region.
    UNROUTABLE = "unroutable"
    #: Forwarded synchronously; the region's answer is the body.
    FORWARDED = "forwarded"
    #: Forwarded synchronously; the provider got the fallback answer.
    FALLBACK = "fallback"
    REJECTED = "rejected"
    INVALID_FIELD = "invalid_field"
    STORAGE_UNAVAILABLE = "storage_unavailable"
    NOT_CONFIGURED = "not_configured"


@dataclasses.dataclass(frozen=True)
class Arrival:
    """A verified, classified request and what is needed to forward it."""

    provider: Provider
    inbound: InboundRequest
    body: bytes = dataclasses.field(repr=False)
    headers: Mapping[str, str] = dataclasses.field(repr=False)
    deadline: Deadline
    #: The request span, which each step tells how the request ended.
    span: tracing.Span = dataclasses.field(default=tracing.NO_SPAN, repr=False, compare=False)


@cached
def resolver() -> Resolver:
    """The configured resolver, built once."""
    return cast(Resolver, import_by_alias(conf.RESOLVER, aliases={}, setting="RESOLVER")())


def handle(request: HttpRequest, provider_name: str) -> HttpResponse:
    """Answer one provider request (the middleware's whole job for matched paths)."""
    if request.method != "POST":
        response: HttpResponse = _rejection(
            RequestRejected("Only POST is accepted here.", reason="method_not_allowed", status=405)
        )
        response["Allow"] = "POST"
        return response
    try:
        provider = get_provider(provider_name)
    except SiloRouterConfigurationError:
        logger.exception("the provider %r of this URL prefix cannot be built", provider_name)
        return _rejection(NotConfigured(f"The {provider_name} provider is not configured on this server."))
    with tracing.flow(
        "control", "request", f"{provider_name} request", span_kind="server", provider=provider_name
    ) as flow:
        headers = lowercase_headers(request.META)
        deadline = Deadline.start(sent_at=provider.sent_at(headers))
        kind: str | None = None
        try:
            with tracing.stage("control", "read", provider_name) as stage:
                body = read_body(request, limit=conf.MAX_BODY_SIZE)
                stage.set(bytes=len(body))
            with tracing.stage("control", "verify", provider_name):
                provider.verify(body=body, headers=headers)
            with tracing.stage("control", "classify", provider_name) as stage:
                inbound = provider.parse(body=body, headers=headers)
                stage.set(kind=inbound.kind)
        except RequestRejected as exc:
            level = logging.ERROR if exc.status >= 500 else logging.WARNING
            logger.log(level, "rejected a %s request: %s (%s)", provider_name, exc.reason, exc.status)
            flow.set(outcome=RequestOutcome.REJECTED, rejected=exc.reason)
            response = _rejection(exc)
        else:
            kind = inbound.kind
            flow.set(kind=kind)
            inbound = with_valid_notification(inbound)
            if inbound.notification_id is not None:
                flow.link(tracing.links.to_notification(inbound.notification_id))
                flow.set(notification_id=inbound.notification_id)
            response = route(
                Arrival(provider=provider, inbound=inbound, body=body, headers=headers, deadline=deadline, span=flow)
            )
        acknowledged(flow, deadline, provider=provider_name, kind=kind, status=response.status_code)
        return response


def lowercase_headers(meta: Mapping[str, Any]) -> dict[str, str]:
    """The request's headers with lowercase names, read straight from the WSGI environ.

    The same names as ``request.headers`` gives (``HTTP_X_SLACK_SIGNATURE`` is
    ``x-slack-signature``), without building its case-insensitive mapping first.
    """
    return {
        (key[5:] if key.startswith("HTTP_") else key).replace("_", "-").lower(): value
        for key, value in meta.items()
        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")
    }


def acknowledged(span: tracing.Span, deadline: Deadline, *, provider: str, kind: str | None, status: int) -> None:
    """Record on the request span, and as metrics, how long the provider waited for ``status``."""
    elapsed = deadline.elapsed()
    missed = deadline.missed(elapsed)
    span.set(
        status=status,
        ack_ms=round(elapsed * 1000, 1),
        deadline_ms=round(deadline.window * 1000, 1),
        deadline_missed=missed,
        in_transit_ms=round(deadline.in_transit * 1000, 1),
    )
    metrics.distribution(metrics.ACK_TIME, elapsed * 1000, provider=provider, kind=kind, deadline_missed=missed)
    if missed:
        logger.warning("answered a %s %s after %.0f ms, past the provider's deadline", provider, kind, elapsed * 1000)
        metrics.count(metrics.DEADLINE_MISSED, provider=provider, kind=kind)


def with_valid_notification(inbound: InboundRequest) -> InboundRequest:
    """``inbound``, without its notification id unless it is one (any provider may set it)."""
    if inbound.notification_id is None:
        return inbound
    try:
        tracing.links.notification_ids(inbound.notification_id)
    except ValueError:
        logger.info("a %s names a notification id that is not one; ignoring it", inbound.kind)
        return dataclasses.replace(inbound, notification_id=None)
    return inbound


def read_body(request: HttpRequest, *, limit: int) -> bytes:
    """Read the raw body once, refusing more than ``limit`` bytes (413).

    A chunked body (no Content-Length) is read to its end when the server terminates
    ``wsgi.input`` (gunicorn does), else refused with 411; a body shorter than its
    Content-Length, or a client that goes away while sending it, is a 400.
    """
    declared = request.META.get("CONTENT_LENGTH") or ""
    if not declared:
        if not request.META.get("HTTP_TRANSFER_ENCODING"):
            return b""  # no Content-Length and no Transfer-Encoding: HTTP says the body is empty
        if not request.META.get("wsgi.input_terminated"):
            raise RequestRejected("Send the body with a Content-Length header.", reason="length_required", status=411)
        return _read_to_end(request.META["wsgi.input"], limit=limit)
    try:
        length = int(declared)
    except ValueError:
        raise RequestRejected("Content-Length is not a number.", reason="bad_content_length") from None
    if length < 0:
        raise RequestRejected("Content-Length is negative.", reason="bad_content_length")
    if length > limit:
        raise PayloadTooLarge(f"The body is over the {limit}-byte limit.")
    try:
        body = request.read(limit + 1)
    except OSError:  # the client went away mid-body (Django's UnreadablePostError, gunicorn's NoMoreData)
        raise MalformedRequest("The body ended before its Content-Length.", reason="incomplete_body") from None
    if len(body) < length:
        raise MalformedRequest("The body ended before its Content-Length.", reason="incomplete_body")
    return body


def _read_to_end(stream: Any, *, limit: int) -> bytes:
    """Read a terminated stream to its end, refusing more than ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    try:
        while chunk := stream.read(CHUNK_SIZE):
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The body is over the {limit}-byte limit.")
    except (OSError, ValueError):  # a broken chunked encoding, or the client went away
        raise MalformedRequest("The chunked body could not be read to its end.", reason="incomplete_body") from None
    return b"".join(parts)


def route(arrival: Arrival) -> HttpResponse:
    """Apply the strategy the routing table gives the request's kind."""
    inbound = arrival.inbound
    span = arrival.span
    strategy = strategy_for(inbound)
    if strategy is None:
        # A type this library does not know yet: kept for operators, acknowledged.
        reason = f"no route for {inbound.provider}.{inbound.type}: add it to SILO_ROUTER['ROUTES'] to forward it"
        try:
            return unroutable(arrival, Strategy.ASYNC, reason=reason)
        except DatabaseError as exc:
            return _storage_failed(arrival, exc, None)
    span.set(strategy=str(strategy))
    if strategy is Strategy.CONTROL_ONLY:
        span.set(outcome=RequestOutcome.ANSWERED)
        return _http(arrival.provider.control_answer(inbound) or ProviderResponse())
    if strategy is Strategy.IGNORE:
        logger.info("ignoring %s %s as configured", inbound.provider, inbound.kind)
        span.set(outcome=RequestOutcome.IGNORED)
        return HttpResponse(status=200)

    try:
        with tracing.stage("control", "authorize", inbound.kind) as stage:
            inbound = authorize(arrival.provider, inbound)
            own_event = arrival.provider.is_own_event(inbound)
            installation = inbound.authorization.installation_id if inbound.authorization else None
            stage.set(installation=installation, self_event=own_event, found=inbound.authorization is not None)
    except DatabaseError as exc:
        return _storage_failed(arrival, exc, None)
    except SiloRouterConfigurationError:
        logger.exception("the authorizer cannot be built; asking the provider to retry")
        return _not_configured(arrival, "The authorizer is not configured on this server.")
    arrival = dataclasses.replace(arrival, inbound=inbound)
    span.set(installation=installation)
    if own_event:
        logger.info("ignoring %s %s: the app's own bot caused it", inbound.provider, inbound.kind)
        span.set(outcome=RequestOutcome.IGNORED, self_event=True)
        return HttpResponse(status=200)

    answered: ControlResponse | None = None
    if strategy is Strategy.ASYNC:
        handler = control_responses.select(inbound)
        if handler is not None:
            answered = control_response(arrival, handler)

    try:
        with tracing.stage("control", "resolve", inbound.kind) as stage:
            resolution = resolver().resolve(inbound)
            stage.set(
                integration=resolution.integration_id,
                regions=",".join(target.region for target in resolution.targets),
                unresolved=resolution.reason or None,
            )
        envelopes = build_envelopes(arrival, resolution, strategy=strategy, answered=answered)
        if not envelopes:
            control_responses.report_in_background(answered, outcome=ReportOutcome.FAILED)
            response = unroutable(arrival, strategy, reason=resolution.reason or "no installation matched")
            apply_lifecycle(inbound, resolution.integration_id)  # an installation with no organization yet
            return response
        if strategy is Strategy.SYNC:
            return forward_sync(arrival, envelopes[0])
        fresh = delivery.store(envelopes, kind_type=inbound.type)
    except DatabaseError as exc:
        return _storage_failed(arrival, exc, answered)
    except SiloRouterConfigurationError:
        logger.exception("the resolver cannot be built; asking the provider to retry")
        control_responses.report_in_background(answered, outcome=ReportOutcome.FAILED)
        return _not_configured(arrival, "The resolver is not configured on this server.")
    span.set(outcome=RequestOutcome.STORED if fresh else RequestOutcome.DUPLICATE)
    # The rows are committed; the wake-up goes out after the answer, batched, and a lost
    # one costs only the sweeper's delay.
    delivery.publish_new(fresh)
    if not fresh:
        logger.info("%s %s was already stored (a retry); acknowledged", inbound.provider, inbound.kind)
    try:
        apply_lifecycle(inbound, resolution.integration_id)
    except DatabaseError as exc:
        return _storage_failed(arrival, exc, None)  # the payloads are stored: nothing to report as failed
    return HttpResponse(status=200)


def control_response(arrival: Arrival, handler: str) -> ControlResponse:
    """Run the control response ``handler`` now, within what is left of the deadline.

    Its span records the outcome (opened, timeout, failed), the handler's error code,
    how long the call took and how much of the trigger's life was left when it was sent,
    counted from the request's arrival (also a metric).
    """
    inbound = arrival.inbound
    deadline = arrival.deadline
    timeout = max(min(conf.CONTROL_RESPONSE_TIMEOUT, deadline.remaining()), MIN_CONTROL_RESPONSE_TIMEOUT)
    with tracing.stage("control", "control_response", handler, provider=inbound.provider, kind=inbound.kind) as stage:
        before = deadline.elapsed()
        answered = control_responses.run(handler, inbound, timeout=timeout)
        after = deadline.elapsed()
        outcome = control_responses.outcome_of(answered)
        stage.set(
            handler=handler,
            error=control_responses.error_code(answered),
            elapsed_ms=round(answered.elapsed_ms, 1),
            timeout_ms=round(timeout * 1000, 1),
        )
        if answered.elapsed_ms > 0:  # the handler did call its provider
            sent = max(after - answered.elapsed_ms / 1000, before)
            left_ms = (control_responses.TRIGGER_LIFETIME - sent) * 1000
            stage.set(trigger_left_ms=round(left_ms, 1))
            metrics.distribution(
                metrics.TRIGGER_LEFT, left_ms, provider=inbound.provider, kind=inbound.kind, outcome=outcome
            )
        if answered.opened:
            stage.set(outcome=outcome)
        else:
            stage.fail(outcome)
    arrival.span.set(control_response=outcome)
    return answered


def authorize(provider: Provider, inbound: InboundRequest) -> InboundRequest:
    """``inbound`` with the installation's credentials in ``authorization`` (left ``None``: none known).

    Raises ``DatabaseError`` when the installations cannot be read (the caller answers 503).
    """
    authorization = provider.authorize(inbound)
    return inbound if authorization is None else dataclasses.replace(inbound, authorization=authorization)


def apply_lifecycle(inbound: InboundRequest, integration_id: str | None) -> None:
    """Apply an uninstall or a token revocation once its payloads are stored (no-op for other kinds).

    Raises ``DatabaseError`` when it cannot be saved: the provider is answered 503 and
    retries; the retry's store is a no-op (the payloads are kept and delivered once) and
    applying it again is harmless.
    """
    if lifecycle.is_lifecycle_event(inbound):
        with tracing.stage("control", "lifecycle", inbound.kind):
            lifecycle.apply(inbound, integration_id)


def build_envelopes(
    arrival: Arrival, resolution: Resolution, *, strategy: Strategy, answered: ControlResponse | None
) -> list[Envelope]:
    """One envelope per target region."""
    trace = tracing.propagation_headers()
    return [
        envelope_for(
            arrival,
            region=target.region,
            strategy=strategy,
            organization_ids=target.organization_ids,
            integration_id=resolution.integration_id,
            control_response=answered.as_dict() if answered else None,
            trace=trace,
        )
        for target in resolution.targets
    ]


def installation_facts(inbound: InboundRequest) -> dict[str, Any] | None:
    """What a region may know of the installation (never its token)."""
    return inbound.authorization.facts() if inbound.authorization is not None else None


def envelope_for(arrival: Arrival, *, region: str, strategy: Strategy, **fields: Any) -> Envelope:
    """The envelope of ``arrival`` for ``region`` (``""``: nowhere to send it)."""
    inbound = arrival.inbound
    return Envelope(
        id=Envelope.make_id(inbound.idempotency_key, region),
        idempotency_key=inbound.idempotency_key,
        provider=inbound.provider,
        kind=inbound.kind,
        region=region,
        body=arrival.body.decode(),
        headers={k: v for k, v in arrival.headers.items() if k in arrival.provider.forwarded_headers},
        strategy=str(strategy),
        installation=installation_facts(inbound),
        notification_id=inbound.notification_id,
        received_at=arrival.deadline.received_at or None,
        **fields,
    )


def unroutable(arrival: Arrival, strategy: Strategy, *, reason: str) -> HttpResponse:
    """Nowhere to send the request: keep it for operators with ``reason``, answer the provider 2xx.

    A 404 would make Slack count a failure (and eventually disable the app); the
    request is valid, we just have nowhere to send it (no installation, a region not in
    ``REGIONS``, a type with no route).
    """
    inbound = arrival.inbound
    logger.warning("kept %s %s as unroutable: %s", inbound.provider, inbound.kind, reason)
    with tracing.stage("control", "unroutable", inbound.kind, kind=inbound.kind, reason=reason):
        delivery.store(
            [envelope_for(arrival, region="", strategy=strategy)],
            kind_type=inbound.type,
            state=Payload.State.UNROUTABLE,
            last_error=reason,
        )
    arrival.span.set(outcome=RequestOutcome.UNROUTABLE)
    if strategy is Strategy.SYNC:
        return _http(arrival.provider.fallback_answer(inbound))
    return HttpResponse(status=200)


def forward_sync(arrival: Arrival, envelope: Envelope) -> HttpResponse:
    """Forward while the provider waits, through the same attempt logic as the workers.

    The payload is committed first. When the region is slow, down or behind an open
    circuit, the provider gets its fallback answer; a kind that changes state stays
    stored for asynchronous delivery (the region's idempotency record makes a second
    delivery a no-op), and a read-only kind (an options load) is closed as failed.
    """
    inbound = arrival.inbound
    budget = arrival.deadline.remaining()
    with tracing.stage(
        "control",
        "forward_sync",
        f"{inbound.kind} -> {envelope.region}",
        kind=inbound.kind,
        region=envelope.region,
        envelope_id=envelope.id,
    ) as stage:
        started = time.monotonic()
        receipt = delivery.deliver_sync(
            envelope, budget=budget, read_only=inbound.type in arrival.provider.read_only_types
        )
        used = time.monotonic() - started
        answer = receipt.response if receipt is not None else None
        outcome = RequestOutcome.FORWARDED if answer is not None else RequestOutcome.FALLBACK
        stage.set(budget_ms=round(budget * 1000, 1), used_ms=round(used * 1000, 1), outcome=outcome)
    metrics.distribution(
        metrics.FORWARD_SYNC_USED, used * 1000, provider=inbound.provider, kind=inbound.kind, outcome=outcome
    )
    arrival.span.set(outcome=outcome)
    return sync_answer(arrival, answer)


def sync_answer(arrival: Arrival, response: Any) -> HttpResponse:
    """The provider's answer for a synchronous kind the region answered with ``response``.

    No answer (no receipt in time, no handler, or a handler that returned nothing) is
    the provider's fallback, the same answer as for no region: ``{"options": []}`` for
    an options load, an empty 200 otherwise.
    """
    if response is None:
        return _http(arrival.provider.fallback_answer(arrival.inbound))
    return HttpResponse(json.dumps(response), content_type="application/json", status=200)


def _storage_failed(arrival: Arrival, exc: DatabaseError, answered: ControlResponse | None) -> HttpResponse:
    """A database error on the request path: bad data is a 400, an outage a 503 (the provider retries).

    Either way nothing was forwarded, so an open Loading modal is told so, off the
    request thread.
    """
    inbound = arrival.inbound
    control_responses.report_in_background(answered, outcome=ReportOutcome.FAILED)
    if isinstance(exc, DataError):
        logger.warning("a %s request holds data the database refuses: %s", inbound.kind, type(exc).__name__)
        arrival.span.set(outcome=RequestOutcome.INVALID_FIELD)
        return _rejection(MalformedRequest("A field holds a value that cannot be stored.", reason="invalid_field"))
    logger.exception("could not resolve or store a %s payload; asking the provider to retry", inbound.kind)
    arrival.span.fail(RequestOutcome.STORAGE_UNAVAILABLE)
    return _rejection(RequestRejected("Storage is unavailable.", reason="storage_unavailable", status=503))


def _not_configured(arrival: Arrival, detail: str) -> JsonResponse:
    arrival.span.fail(RequestOutcome.NOT_CONFIGURED)
    return _rejection(NotConfigured(detail))


def _http(answer: ProviderResponse) -> HttpResponse:
    return HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)


def _rejection(exc: RequestRejected) -> JsonResponse:
    return JsonResponse({"error": exc.reason, "detail": exc.detail}, status=exc.status)
