"""The region's side of the hop: verify an envelope, run its handler once, answer.

Every transport ends here (the HTTP view, the Celery task, the in-process call), so
verification and the effectively-once guarantee live in one place. ``accept`` does
everything that can refuse an envelope (signature, region, fields, body) and
``dispatch`` runs the handler; transports tell control "accepted" in between, so a slow
handler is never mistaken for a region that does not answer.

Tracing: an accepted envelope's run is the span ``silo_router.region.receive``
(messaging ``receive``), the child of the attempt that carried it when the transport
brought the attempt's :class:`~silo_router.transports.base.Hop`, else of the request
that created the envelope (``envelope.trace``). It says what became of the envelope
(``outcome``: handled, duplicate, unhandled, failed; ``dedupe``: first or duplicate)
and which attempt it was. A refused envelope gets a receive span too, with
``outcome=rejected`` and the reason, and nothing read from the envelope. The handler
span ``silo_router.region.handler`` (messaging ``process``) links to the creation context.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from django.db import IntegrityError, transaction

from silo_router import after_receipt, tracing
from silo_router.conf import conf
from silo_router.envelope import Envelope, Outcome, Receipt, unseal
from silo_router.exceptions import EnvelopeRejected, RequestRejected
from silo_router.providers.base import InboundRequest
from silo_router.providers.registry import get_provider
from silo_router.tracing import names
from silo_router.transports.base import DeliveryError, Hop

from . import funnel
from .handlers import Registration, handler_import_errors, registry_for
from .models import ProcessedEnvelope
from .request import HandlerRequest

logger = logging.getLogger("silo_router.region")

#: ``ProcessedEnvelope.kind`` and ``.idempotency_key`` column sizes.
RECORD_FIELD_LENGTH = 200
#: The ``dedupe`` attribute of a receive span: the first run of an envelope, or a repeat.
FIRST, DUPLICATE = "first", "duplicate"
#: The ``outcome`` of a handler span.
HANDLER_OK, HANDLER_RAISED = "ok", "raised"


class HandlerFailed(Exception):
    """A handler raised; its effects were rolled back and the envelope may be retried."""


class _AlreadyProcessed(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Accepted:
    """A verified envelope and its parsed body, ready to dispatch, and the hop that brought it."""

    envelope: Envelope
    inbound: InboundRequest = dataclasses.field(repr=False)
    hop: Hop = dataclasses.field(default_factory=Hop)


def accept(
    body: bytes,
    signature: str | None,
    *,
    region: str | None = None,
    max_age: int | None = None,
    hop: Hop | None = None,
) -> Accepted:
    """Verify and parse; raise ``EnvelopeRejected`` (with a status and reason) otherwise.

    ``region`` is the region the sender addressed; the envelope must agree with it and
    be for a region this silo serves (its ``REGION``; in a monolith also the regions it
    delivers to in-process). ``max_age`` widens the replay window for queued
    transports, whose messages may wait in a broker. ``hop`` is what the transport
    carried besides the envelope (the attempt's trace context and number). A refusal
    is recorded as a receive span with its reason.
    """
    try:
        envelope, inbound = _verified(body, signature, region=region, max_age=max_age)
    except EnvelopeRejected as exc:
        record_rejection(exc.reason, region=region, hop=hop)
        raise
    return Accepted(envelope=envelope, inbound=inbound, hop=hop or Hop())


def _verified(
    body: bytes, signature: str | None, *, region: str | None, max_age: int | None
) -> tuple[Envelope, InboundRequest]:
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
    if handler_import_errors():  # a broken deploy holds envelopes instead of answering "no handler" for good
        raise EnvelopeRejected(
            "This region's SILO_ROUTER['HANDLER_MODULES'] do not all import (see its log and manage.py check).",
            reason="handlers_not_loaded",
            status=503,
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
    return envelope, inbound


def record_rejection(reason: str, *, region: str | None = None, hop: Hop | None = None) -> None:
    """A receive span for an envelope this region refused: its reason, nothing read from the envelope.

    It is the child of the attempt that sent the envelope when the transport carried
    the attempt's trace context (an unverified envelope's own trace is not trusted).
    """
    hop = hop or Hop()
    destination = region or conf.REGION
    with tracing.flow(
        names.REGION,
        "receive",
        f"rejected: {reason}",
        carrier=hop.trace or None,
        span_kind="consumer",
        region=destination,
        reason=reason,
        **hop.span_attributes(),
    ) as span:
        span.set_attributes(_messaging(names.RECEIVE, destination=destination, message_id=None))
        span.fail(str(Outcome.REJECTED))


def receive(
    body: bytes, signature: str | None, *, region: str | None = None, max_age: int | None = None, hop: Hop | None = None
) -> Receipt:
    """``accept`` then ``dispatch``. Raises ``EnvelopeRejected`` or ``HandlerFailed``."""
    return dispatch(accept(body, signature, region=region, max_age=max_age, hop=hop))


@contextlib.contextmanager
def receiving(accepted: Accepted) -> Iterator[tracing.Span]:
    """The receive span of an accepted envelope, current inside the block.

    A transport that answers control later (the Celery task) sends its confirmation
    inside it, so the confirmation joins the same trace.
    """
    envelope, hop = accepted.envelope, accepted.hop
    with tracing.flow(
        names.REGION,
        "receive",
        f"{envelope.provider} {envelope.kind}",
        carrier=hop.trace or envelope.trace,
        span_kind="consumer",
        provider=envelope.provider,
        kind=envelope.kind,
        region=envelope.region,
        envelope_id=envelope.id,
        installation=installation_of(envelope),
        notification_id=envelope.notification_id,
        **hop.span_attributes(),
    ) as span:
        span.set_attributes(_messaging(names.RECEIVE, destination=envelope.region, message_id=envelope.id))
        yield span


def dispatch(accepted: Accepted, *, span: tracing.Span | None = None) -> Receipt:
    """Run the envelope's handler at most once (``atomic=False``: at least once); return its answer.

    An envelope with no handler here is answered ``unhandled`` and nothing is recorded,
    so the same envelope runs once a handler is deployed. ``span`` is the envelope's
    receive span when the caller opened it (:func:`receiving`); else one is opened here.
    """
    if span is None:
        with receiving(accepted) as opened:
            return dispatch(accepted, span=opened)
    try:
        receipt = _dispatch(accepted.envelope, accepted.inbound, span)
    except Exception as exc:
        if not isinstance(exc, HandlerFailed):
            span.set(error=type(exc).__name__)
        span.fail(str(Outcome.FAILED))
        raise
    span.set(outcome=str(receipt.outcome))
    return receipt


def _dispatch(envelope: Envelope, inbound: InboundRequest, span: tracing.Span) -> Receipt:
    done = ProcessedEnvelope.objects.filter(pk=envelope.id).first()
    if done is not None:
        span.set(dedupe=DUPLICATE)
        return Receipt(outcome=Outcome.DUPLICATE, response=done.response)
    span.set(dedupe=FIRST)
    _tell_funnel(funnel.on_acted, envelope)
    registry = registry_for(envelope.provider)
    registration = registry.find(inbound.type, inbound.name) if registry is not None else None
    if registry is None or registration is None:
        logger.info(
            "no handler for %s %s in region %s; nothing recorded", envelope.provider, envelope.kind, envelope.region
        )
        return Receipt(outcome=Outcome.UNHANDLED)
    span.set(handler=registration.name)
    request = registry.request_class(envelope=envelope, inbound=inbound)
    try:
        if registration.atomic:
            response = _run_in_transaction(registration, request)
        else:
            response = _run_then_record(registration, request)
    except _AlreadyProcessed:
        span.set(dedupe=DUPLICATE)
        done = ProcessedEnvelope.objects.filter(pk=envelope.id).first()
        return Receipt(outcome=Outcome.DUPLICATE, response=done.response if done else None)
    except Exception as exc:
        logger.exception("handler for %s failed", envelope.kind)
        request.on_failure(exc)
        span.set(error=type(exc).__name__)
        _tell_funnel(funnel.on_handled, envelope, ok=False, error=type(exc).__name__)
        raise HandlerFailed(f"{type(exc).__name__} in the {envelope.kind} handler") from exc
    _tell_funnel(funnel.on_handled, envelope, ok=True)
    return Receipt(outcome=Outcome.HANDLED, response=response)


def _tell_funnel(hook: Callable[..., None], envelope: Envelope, **facts: Any) -> None:
    """Record a funnel stage of a click on a notification; a hook that fails never fails the delivery."""
    if not envelope.notification_id:
        return
    try:
        hook(envelope, **facts)
    except Exception:
        logger.exception("the notification funnel's %s failed for envelope %s", hook.__name__, envelope.id)


def installation_of(envelope: Envelope) -> str | None:
    """The installation an envelope belongs to (control's integration id), if control named one."""
    found = (envelope.installation or {}).get("installation_id")
    return found if isinstance(found, str) and found else envelope.integration_id or None


def _messaging(operation: str, *, destination: str | None, message_id: str | None) -> dict[str, str | None]:
    """OpenTelemetry's messaging attributes; a refused envelope has no message id worth trusting."""
    attributes: dict[str, str | None] = dict(
        names.messaging(operation, destination=destination or "", message_id=message_id or "")
    )
    attributes["messaging.destination.name"] = destination or None
    attributes["messaging.message.id"] = message_id or None
    return attributes


@contextlib.contextmanager
def _handler_span(registration: Registration, envelope: Envelope) -> Iterator[None]:
    """The handler's span: messaging ``process``, linked to the context that created the envelope."""
    with tracing.stage(
        names.REGION,
        "handler",
        registration.name,
        span_kind="consumer",
        links=[tracing.links.from_headers(envelope.trace)],
        handler=registration.name,
        provider=envelope.provider,
        kind=envelope.kind,
        region=envelope.region,
        envelope_id=envelope.id,
        notification_id=envelope.notification_id,
    ) as span:
        span.set_attributes(_messaging(names.PROCESS, destination=envelope.region, message_id=envelope.id))
        try:
            yield
        except Exception as exc:
            span.set(error=type(exc).__name__)
            span.fail(HANDLER_RAISED)
            raise
        span.set(outcome=HANDLER_OK)


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
            with _handler_span(registration, request.envelope):
                response = _json_object(registration.handler(request))
        finally:
            request.in_transaction = False
        if response is not None:
            record.response = response
            record.save(update_fields=["response"])
    return response


def _run_then_record(registration: Registration, request: HandlerRequest) -> Mapping[str, Any] | None:
    """``atomic=False``: run outside any transaction, then record (at least once on a crash)."""
    with _handler_span(registration, request.envelope):
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
    body: bytes, signature: str | None, *, region: str, on_accept: Callable[[], None], hop: Hop | None = None
) -> tuple[Receipt, list[after_receipt.Callback]]:
    """The ``local`` transport's entry: the receipt, and the after-commit work it held back.

    ``on_accept`` is called once the envelope is verified; ``hop`` is the attempt's,
    taken on the caller's thread. A handler failure is a ``DeliveryError`` that is not
    the region's fault.
    """
    accepted = accept(body, signature, region=region, hop=hop)
    on_accept()
    with after_receipt.holding() as held:
        try:
            receipt = dispatch(accepted)
        except HandlerFailed as exc:
            raise DeliveryError(str(exc), retryable=True, region_fault=False) from exc
    return receipt, held
