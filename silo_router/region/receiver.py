"""The region's side of the hop: verify an envelope, run its handler once, answer.

Every transport ends here (the HTTP view, the Celery task, the in-process call), so
verification and the effectively-once guarantee live in one place.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from django.db import IntegrityError, transaction

from silo_router import tracing
from silo_router.conf import conf
from silo_router.envelope import Envelope
from silo_router.exceptions import EnvelopeRejected, MalformedRequest
from silo_router.providers.registry import get_provider
from silo_router.transports.base import Receipt

from .handlers import registry_for
from .models import ProcessedEnvelope

logger = logging.getLogger("silo_router.region")


class HandlerFailed(Exception):
    """A handler raised; its effects were rolled back and the envelope may be retried."""


class _AlreadyProcessed(Exception):
    pass


def receive(body: bytes, signature: str | None, *, region: str | None = None, max_age: int | None = None) -> Receipt:
    """Verify, then dispatch. Raises ``EnvelopeRejected`` or ``HandlerFailed``.

    ``region`` is the region the sender addressed; the envelope must agree with it and,
    in region mode, with this silo's own ``REGION``. ``max_age`` widens the replay
    window for queued transports, whose messages may wait in a broker.
    """
    from silo_router import signing

    signing.verify(
        body,
        signature,
        keys=conf.SIGNING_KEYS,
        max_age=conf.SIGNATURE_MAX_AGE if max_age is None else max_age,
    )
    envelope = Envelope.from_json(body)
    own = conf.REGION if conf.MODE == "region" else None
    for expected in (own, region):
        if expected and envelope.region != expected:
            raise EnvelopeRejected(
                f"The envelope is addressed to region {envelope.region!r}, not {expected!r}.", reason="wrong_region"
            )
    return dispatch(envelope)


def dispatch(envelope: Envelope) -> Receipt:
    """Run the envelope's handler at most once; return what it answered."""
    with tracing.flow("silo_router.region", f"{envelope.provider} {envelope.kind}", headers=envelope.trace) as flow:
        tracing.set_data(flow, envelope_id=envelope.id, region=envelope.region, kind=envelope.kind)
        done = ProcessedEnvelope.objects.filter(pk=envelope.id).first()
        if done is not None:
            return Receipt(outcome="duplicate", response=done.response)
        try:
            inbound = get_provider(envelope.provider).parse(body=envelope.body.encode(), headers=envelope.headers)
        except MalformedRequest as exc:
            raise EnvelopeRejected(
                f"The envelope's body does not parse: {exc.detail}", reason="malformed_body", status=400
            ) from exc
        registry = registry_for(envelope.provider)
        handler = registry.find(inbound.type, inbound.name) if registry is not None else None
        request = registry.request_class(envelope=envelope, inbound=inbound) if registry is not None else None
        try:
            with transaction.atomic():
                try:
                    with transaction.atomic():
                        record = ProcessedEnvelope.objects.create(
                            id=envelope.id,
                            kind=envelope.kind[:200],
                            idempotency_key=envelope.idempotency_key[:200],
                            outcome="handled" if handler else "unhandled",
                        )
                except IntegrityError as exc:
                    raise _AlreadyProcessed from exc
                if handler is None:
                    logger.info("no handler for %s %s; acknowledged", envelope.provider, envelope.kind)
                    return Receipt(outcome="unhandled")
                with tracing.span("handler", f"{handler.__module__}.{handler.__qualname__}"):
                    response = _json_object(handler(request))
                if response is not None:
                    record.response = response
                    record.save(update_fields=["response"])
        except _AlreadyProcessed:
            done = ProcessedEnvelope.objects.filter(pk=envelope.id).first()
            return Receipt(outcome="duplicate", response=done.response if done else None)
        except Exception as exc:
            logger.exception("handler for %s failed", envelope.kind)
            if request is not None:
                request.on_failure(exc)
            raise HandlerFailed(f"{type(exc).__name__} in the {envelope.kind} handler") from exc
        return Receipt(outcome="handled", response=response)


def _json_object(value: Any) -> Mapping[str, Any] | None:
    """A handler's answer: ``None`` or a JSON-serializable dict (checked here, not later)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"a handler must return a dict or None, not {type(value).__name__}")
    json.dumps(value)
    return dict(value)
