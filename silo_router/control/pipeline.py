"""The control path for one provider request: read, verify, classify, answer or forward.

Order matters and is the point of this module: a control response (the Loading modal)
runs before any database or region work; a 2xx for a forwarded kind is returned only
after the payload is committed; a synchronous forward spends only what is left of the
provider's deadline.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from typing import Any, cast

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse

from silo_router import tracing
from silo_router.conf import conf
from silo_router.envelope import Envelope, seal
from silo_router.exceptions import PayloadTooLarge, RequestRejected
from silo_router.plugins import cached, import_by_alias
from silo_router.providers.base import InboundRequest, Provider, ProviderResponse
from silo_router.providers.registry import get_provider
from silo_router.transports import DeliveryError, DeliveryTimeout, transport_for

from . import control_responses, delivery
from .control_responses import ControlResponse
from .deadline import Deadline
from .models import Payload
from .publishing import publish_within
from .resolver import Resolution, Resolver
from .routing import Strategy, strategy_for

logger = logging.getLogger("silo_router.control")


@dataclasses.dataclass(frozen=True)
class Arrival:
    """A verified, classified request and what is needed to forward it."""

    provider: Provider
    inbound: InboundRequest
    body: bytes
    headers: Mapping[str, str]
    deadline: Deadline


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
    provider = get_provider(provider_name)
    with tracing.flow("silo_router.control", f"{provider_name} request") as flow:
        headers = {key.lower(): value for key, value in request.headers.items()}
        deadline = Deadline.start(sent_at=provider.sent_at(headers))
        try:
            body = read_body(request, limit=conf.MAX_BODY_SIZE)
            with tracing.span("verify", provider_name):
                provider.verify(body=body, headers=headers)
            with tracing.span("classify", provider_name):
                inbound = provider.parse(body=body, headers=headers)
        except RequestRejected as exc:
            logger.warning("rejected a %s request: %s (%s)", provider_name, exc.reason, exc.status)
            tracing.set_data(flow, rejected=exc.reason)
            return _rejection(exc)
        tracing.set_data(flow, kind=inbound.kind)
        response = route(Arrival(provider=provider, inbound=inbound, body=body, headers=headers, deadline=deadline))
        tracing.set_data(flow, ack_ms=round(deadline.elapsed() * 1000, 1), status=response.status_code)
        return response


def read_body(request: HttpRequest, *, limit: int) -> bytes:
    """Read the raw body once, refusing more than ``limit`` bytes (413)."""
    declared = request.META.get("CONTENT_LENGTH")
    try:
        if declared and int(declared) > limit:
            raise PayloadTooLarge(f"The body is over the {limit}-byte limit.")
    except ValueError:
        raise RequestRejected("Content-Length is not a number.", reason="bad_content_length") from None
    body = request.read(limit + 1)
    if len(body) > limit:
        raise PayloadTooLarge(f"The body is over the {limit}-byte limit.")
    return body


def route(arrival: Arrival) -> HttpResponse:
    """Apply the strategy the routing table gives the request's kind."""
    inbound = arrival.inbound
    strategy = strategy_for(inbound)
    if strategy is Strategy.CONTROL_ONLY:
        return _http(arrival.provider.control_answer(inbound) or ProviderResponse())
    if strategy is Strategy.IGNORE:
        logger.info("ignoring %s %s as configured", inbound.provider, inbound.kind)
        return HttpResponse(status=200)

    answered: ControlResponse | None = None
    if strategy is Strategy.ASYNC:
        handler = control_responses.select(inbound)
        if handler is not None:
            timeout = max(min(conf.CONTROL_RESPONSE_TIMEOUT, arrival.deadline.remaining()), 0.1)
            with tracing.span("control_response", handler):
                answered = control_responses.run(handler, inbound, timeout=timeout)

    with tracing.span("resolve", inbound.kind):
        resolution = resolver().resolve(inbound)
    envelopes = build_envelopes(arrival, resolution, strategy=strategy, answered=answered)
    try:
        if not envelopes:
            _report_if_opened(answered)
            return unroutable(arrival, strategy)
        if strategy is Strategy.SYNC:
            return forward_sync(arrival, envelopes[0])
        with tracing.span("store", inbound.kind):
            fresh = delivery.store(envelopes, kind_type=inbound.type)
    except DatabaseError:
        logger.exception("could not store a %s payload; asking the provider to retry", inbound.kind)
        _report_if_opened(answered)
        return _rejection(RequestRejected("Storage is unavailable.", reason="storage_unavailable", status=503))
    targets = [(str(p.pk), p.region) for p in fresh]
    check = str(fresh[0].pk) if fresh and answered is not None and answered.opened else None

    def publish() -> None:
        delivery.enqueue(targets, mark=False, retry=False)
        if check is not None:
            _schedule_loading_check(check)

    # One bounded wait for everything the broker must take, however slow it is.
    publish_within(
        publish,
        wait=max(min(conf.seconds("PUBLISH_TIMEOUT"), arrival.deadline.remaining()), 0.0),
        what=f"{len(targets)} payloads",
    )
    if not fresh:
        logger.info("%s %s was already stored (a retry); acknowledged", inbound.provider, inbound.kind)
    return HttpResponse(status=200)


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
        **fields,
    )


def unroutable(arrival: Arrival, strategy: Strategy) -> HttpResponse:
    """No installation matched: keep the request for operators, answer the provider 2xx.

    A 404 would make Slack count a failure (and eventually disable the app); the
    request is valid, we just have nowhere to send it.
    """
    inbound = arrival.inbound
    logger.warning("no region for %s %s (routing %s)", inbound.provider, inbound.kind, inbound.routing)
    delivery.store(
        [envelope_for(arrival, region="", strategy=strategy)],
        state=Payload.State.UNROUTABLE,
        last_error=f"no installation for {inbound.routing}",
    )
    if strategy is Strategy.SYNC:
        return _http(arrival.provider.fallback_answer(inbound))
    return HttpResponse(status=200)


def forward_sync(arrival: Arrival, envelope: Envelope) -> HttpResponse:
    """Forward while the provider waits; fall back when the region is slow or down.

    The payload is committed first. After a timeout the region may still finish, so a
    kind that changes state is redelivered asynchronously; the region's idempotency
    record makes that a no-op if the first attempt got through. Read-only kinds (options
    loads) are marked failed instead: their answer is useless after the deadline.
    """
    provider, inbound = arrival.provider, arrival.inbound
    with tracing.span("store", inbound.kind):
        delivery.store([envelope], kind_type=inbound.type)
    payload = delivery.claim(envelope.id) or Payload.objects.get(pk=envelope.id)
    budget = arrival.deadline.remaining()
    try:
        if budget <= 0:
            raise DeliveryTimeout("no time left before the provider's deadline")
        with tracing.span("forward_sync", f"{inbound.kind} -> {envelope.region}"):
            receipt = transport_for(envelope.region).deliver(seal(envelope), timeout=budget, wait=True)
    except DeliveryError as exc:
        logger.warning(
            "synchronous %s to %s: %s; answering with the fallback", inbound.kind, envelope.region, exc.reason
        )
        read_only = inbound.type in provider.read_only_types
        retryable = DeliveryError(exc.reason, retryable=True) if isinstance(exc, DeliveryTimeout) else exc
        delivery.record_failure(payload, retryable, retry=not read_only, from_request=True)
        return _http(provider.fallback_answer(inbound))
    delivery.mark_delivered(payload, receipt=receipt)
    if receipt.response is None:
        return HttpResponse(status=200)
    return HttpResponse(json.dumps(receipt.response), content_type="application/json", status=200)


def _report_if_opened(answered: ControlResponse | None) -> None:
    """A Loading modal is open but the work will not be forwarded: say so at once."""
    if answered is not None and answered.opened:
        control_responses.report(answered.as_dict(), outcome="failed")


def _schedule_loading_check(payload_id: str) -> None:
    from .tasks import check_loading_view

    try:
        check_loading_view.apply_async((payload_id,), countdown=conf.LOADING_VIEW_TIMEOUT, retry=False)
    except Exception:  # a broker error must not fail an acknowledged request
        logger.exception("could not schedule the loading-view check for %s", payload_id)


def _http(answer: ProviderResponse) -> HttpResponse:
    return HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)


def _rejection(exc: RequestRejected) -> JsonResponse:
    return JsonResponse({"error": exc.reason, "detail": exc.detail}, status=exc.status)
