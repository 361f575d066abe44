"""The region's side of the hop: verify an envelope, run its handler once, answer.

Every transport ends here (the HTTP view, the Celery task, the in-process call), so
verification and the effectively-once guarantee live in one place. ``accept`` does
everything that can refuse an envelope (signature, region, fields, body) and
``dispatch`` runs the handler; transports tell control "accepted" in between, so a slow
handler is never mistaken for a region that does not answer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from django.db import IntegrityError, transaction

from silo_router import after_receipt, tracing
from silo_router.conf import conf
from silo_router.envelope import Envelope, Outcome, Receipt, unseal
from silo_router.exceptions import EnvelopeRejected, RequestRejected
from silo_router.providers.base import InboundRequest
from silo_router.providers.registry import get_provider
from silo_router.transports.base import DeliveryError

from .handlers import Registration, registry_for
from .models import ProcessedEnvelope
from .request import HandlerRequest

logger = logging.getLogger("silo_router.region")

#: ``ProcessedEnvelope.kind`` and ``.idempotency_key`` column sizes.
RECORD_FIELD_LENGTH = 200


class HandlerFailed(Exception):
    """A handler raised; its effects were rolled back and the envelope may be retried."""


class _AlreadyProcessed(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Accepted:
    """A verified envelope and its parsed body, ready to dispatch."""

    envelope: Envelope
    inbound: InboundRequest = dataclasses.field(repr=False)


def accept(body: bytes, signature: str | None, *, region: str | None = None, max_age: int | None = None) -> Accepted:
    """Verify and parse; raise ``EnvelopeRejected`` (with a status and reason) otherwise.

    ``region`` is the region the sender addressed; the envelope must agree with it and
    be for a region this silo serves (its ``REGION``; in a monolith also the regions it
    delivers to in-process). ``max_age`` widens the replay window for queued
    transports, whose messages may wait in a broker.
    """
    envelope = unseal(body, signature, max_age=max_age)
    if region is not None and envelope.region != region:
        raise EnvelopeRejected(
            f"The envelope is addressed to region {envelope.region!r}, not {region!r}.", reason="wrong_region"
        )
    if envelope.region not in conf.served_regions:
        raise EnvelopeRejected(f"This silo does not serve region {envelope.region!r}.", reason="wrong_region")
    if envelope.provider not in conf.PROVIDERS:
        raise EnvelopeRejected(
            f"The envelope names an unknown provider {envelope.provider!r}.", reason="unknown_provider", status=400
        )
    try:
        inbound = get_provider(envelope.provider).parse(body=envelope.body.encode(), headers=envelope.headers)
    except RequestRejected as exc:
        raise EnvelopeRejected(
            f"The envelope's body does not parse: {exc.detail}", reason="malformed_body", status=400
        ) from exc
    except (ValueError, LookupError, TypeError, AttributeError, RecursionError) as exc:
        logger.warning("the body of envelope %s does not parse: %s", envelope.id, type(exc).__name__)
        raise EnvelopeRejected(
            f"The envelope's body does not parse ({type(exc).__name__}).", reason="malformed_body", status=400
        ) from exc
    return Accepted(envelope=envelope, inbound=inbound)


def receive(body: bytes, signature: str | None, *, region: str | None = None, max_age: int | None = None) -> Receipt:
    """``accept`` then ``dispatch``. Raises ``EnvelopeRejected`` or ``HandlerFailed``."""
    return dispatch(accept(body, signature, region=region, max_age=max_age))


def dispatch(accepted: Accepted) -> Receipt:
    """Run the envelope's handler at most once (``atomic=False``: at least once); return its answer.

    An envelope with no handler here is answered ``unhandled`` and nothing is recorded,
    so the same envelope runs once a handler is deployed.
    """
    envelope, inbound = accepted.envelope, accepted.inbound
    with tracing.flow(
        "region", "receive", f"{envelope.provider} {envelope.kind}", carrier=envelope.trace, span_kind="consumer"
    ) as flow:
        flow.set(provider=envelope.provider, kind=envelope.kind, region=envelope.region, envelope_id=envelope.id)
        receipt = _dispatch(envelope, inbound)
        flow.set(outcome=str(receipt.outcome))
        return receipt


def _dispatch(envelope: Envelope, inbound: InboundRequest) -> Receipt:
    done = ProcessedEnvelope.objects.filter(pk=envelope.id).first()
    if done is not None:
        return Receipt(outcome=Outcome.DUPLICATE, response=done.response)
    registry = registry_for(envelope.provider)
    registration = registry.find(inbound.type, inbound.name) if registry is not None else None
    if registry is None or registration is None:
        logger.info(
            "no handler for %s %s in region %s; nothing recorded", envelope.provider, envelope.kind, envelope.region
        )
        return Receipt(outcome=Outcome.UNHANDLED)
    request = registry.request_class(envelope=envelope, inbound=inbound)
    try:
        if registration.atomic:
            response = _run_in_transaction(registration, request)
        else:
            response = _run_then_record(registration, request)
    except _AlreadyProcessed:
        done = ProcessedEnvelope.objects.filter(pk=envelope.id).first()
        return Receipt(outcome=Outcome.DUPLICATE, response=done.response if done else None)
    except Exception as exc:
        logger.exception("handler for %s failed", envelope.kind)
        request.on_failure(exc)
        raise HandlerFailed(f"{type(exc).__name__} in the {envelope.kind} handler") from exc
    return Receipt(outcome=Outcome.HANDLED, response=response)


def _record(envelope: Envelope, response: Mapping[str, Any] | None = None) -> ProcessedEnvelope:
    """Insert the idempotency record in a savepoint; ``_AlreadyProcessed`` if it exists."""
    try:
        with transaction.atomic():
            return ProcessedEnvelope.objects.create(
                id=envelope.id,
                kind=envelope.kind[:RECORD_FIELD_LENGTH],
                idempotency_key=envelope.idempotency_key[:RECORD_FIELD_LENGTH],
                outcome=Outcome.HANDLED,
                response=response,
            )
    except IntegrityError as exc:
        raise _AlreadyProcessed from exc


def _run_in_transaction(registration: Registration, request: HandlerRequest) -> Mapping[str, Any] | None:
    """The handler's effects and the idempotency record commit together, or not at all."""
    with transaction.atomic():
        record = _record(request.envelope)
        request.in_transaction = True
        try:
            with tracing.stage("region", "handler", registration.name):
                response = _json_object(registration.handler(request))
        finally:
            request.in_transaction = False
        if response is not None:
            record.response = response
            record.save(update_fields=["response"])
    return response


def _run_then_record(registration: Registration, request: HandlerRequest) -> Mapping[str, Any] | None:
    """``atomic=False``: run outside any transaction, then record (at least once on a crash)."""
    with tracing.stage("region", "handler", registration.name):
        response = _json_object(registration.handler(request))
    _record(request.envelope, response)
    return response


def _json_object(value: Any) -> Mapping[str, Any] | None:
    """A handler's answer: ``None`` or a JSON-serializable dict (checked here, not later)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"a handler must return a dict or None, not {type(value).__name__}")
    json.dumps(value)
    return dict(value)


def local_receiver(
    body: bytes, signature: str | None, *, region: str, on_accept: Callable[[], None]
) -> tuple[Receipt, list[after_receipt.Callback]]:
    """The ``local`` transport's entry: the receipt, and the after-commit work it held back.

    ``on_accept`` is called once the envelope is verified. A handler failure is a
    ``DeliveryError`` that is not the region's fault.
    """
    accepted = accept(body, signature, region=region)
    on_accept()
    with after_receipt.holding() as held:
        try:
            receipt = dispatch(accepted)
        except HandlerFailed as exc:
            raise DeliveryError(str(exc), retryable=True, region_fault=False) from exc
    return receipt, held
