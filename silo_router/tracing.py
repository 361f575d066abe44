"""Tracing: one trace per flow, across control, the queue, the region and the reply.

Everything here is a thin layer over sentry-sdk and is a no-op when sentry-sdk is not
initialized. The control silo starts (or joins) a transaction per provider request;
the envelope carries ``sentry-trace`` and ``baggage``; the control worker and the region
continue that trace, so the flow shares one trace id.
"""

from __future__ import annotations

import contextlib
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import sentry_sdk

from . import redaction
from .conf import conf

#: Transactions and spans of this library start with this op prefix.
OP_PREFIX = "silo_router"
#: Query parameters of the install flow that are credentials: Slack's OAuth code, the
#: state that goes with it, a region's install grant.
INSTALL_FLOW_PARAMS = frozenset({"code", "state", "grant"})


def traces_sampler(sampling_context: Mapping[str, Any]) -> float:
    """A ``traces_sampler`` for ``sentry_sdk.init``.

    Follows the parent's decision when there is one; samples every integration flow
    (ops starting with ``silo_router``) and other requests at
    ``SILO_ROUTER['TRACES_SAMPLE_RATE']``.
    """
    parent = sampling_context.get("parent_sampled")
    if parent is not None:
        return 1.0 if parent else 0.0
    context = sampling_context.get("transaction_context") or {}
    if str(context.get("op") or "").startswith(OP_PREFIX):
        return 1.0
    return conf.TRACES_SAMPLE_RATE


@contextlib.contextmanager
def flow(op: str, name: str, *, headers: Mapping[str, str] | None = None) -> Iterator[Any]:
    """A transaction for one stage of a flow, continuing ``headers`` when given.

    With ``headers`` it starts a transaction that continues that trace (the control
    worker, the region, after-receipt work). Without them it opens a child span inside an
    existing transaction (Django's, Celery's), or a transaction of its own. Without an
    active sentry-sdk client it costs nothing.
    """
    if not sentry_sdk.get_client().is_active():
        yield None
        return
    if headers:
        transaction = sentry_sdk.continue_trace(dict(headers), op=op, name=name)
        with sentry_sdk.start_transaction(transaction) as span:
            yield span
        return
    if sentry_sdk.get_current_span() is not None:
        with sentry_sdk.start_span(op=op, name=name) as span:
            yield span
        return
    with sentry_sdk.start_transaction(op=op, name=name) as span:
        yield span


def span(op: str, name: str) -> Any:
    """A child span of the current transaction (a no-op without an active client)."""
    if not sentry_sdk.get_client().is_active():
        return contextlib.nullcontext()
    return sentry_sdk.start_span(op=f"{OP_PREFIX}.{op}", name=name)


def propagation_headers() -> dict[str, str]:
    """``sentry-trace`` and ``baggage`` of the current span, for the envelope."""
    headers: dict[str, str] = {}
    if not sentry_sdk.get_client().is_active():
        return headers
    traceparent = sentry_sdk.get_traceparent()
    if traceparent:
        headers["sentry-trace"] = traceparent
    baggage = sentry_sdk.get_baggage()
    if baggage:
        headers["baggage"] = baggage
    return headers


def set_data(current: Any, **data: Any) -> None:
    """Attach data and tags to ``current`` (a span or transaction; ``None`` is ignored)."""
    if current is None:
        return
    for key, value in data.items():
        current.set_data(key, value)
        if isinstance(value, str | int | bool):
            current.set_tag(f"{OP_PREFIX}.{key}", value)


def before_send(event: dict[str, Any], hint: Mapping[str, Any]) -> dict[str, Any]:
    """A ``before_send`` for ``sentry_sdk.init``: redacts capabilities and secrets in the event.

    A signed request's body (a Slack request, an envelope) is dropped, and so is the
    query string of an install-flow request (an OAuth code and state, a grant). Every part is
    scrubbed (frame locals, request data and headers, breadcrumbs,
    extra, contexts, tags, messages, span descriptions and data) with
    :func:`silo_router.redaction.scrub`: by key (``response_url``, ``trigger_id``,
    ``token``, signature headers...) and by value shape (Slack's hooks URLs and the
    ``REDACTED_URL_PREFIXES``, tokens, trigger ids, the configured secrets).
    """
    scrubbed: dict[str, Any] = redaction.scrub(event)
    request = scrubbed.get("request")
    if isinstance(request, dict) and redaction.is_signed_request(request.get("headers")):
        request["data"] = redaction.REDACTED  # a raw Slack body or envelope: never sent whole
    if isinstance(request, dict) and _has_install_flow_params(request.get("query_string")):
        request["query_string"] = redaction.REDACTED
    logentry = event.get("logentry")
    if isinstance(logentry, Mapping) and logentry.get("params"):
        scrubbed["logentry"] = {"message": redaction.scrub_text(_formatted(logentry)), "params": []}
    return scrubbed


def _has_install_flow_params(query: Any) -> bool:
    """Whether a request's query string (text or mapping) carries an OAuth code, state or grant."""
    if isinstance(query, str):
        names = {name for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True)}
    elif isinstance(query, Mapping):
        names = {str(name) for name in query}
    else:
        return False
    return not INSTALL_FLOW_PARAMS.isdisjoint(names)


def _formatted(logentry: Mapping[str, Any]) -> str:
    """A log entry's message with its params merged (params alone are not recognisable)."""
    message, params = str(logentry.get("message") or ""), logentry.get("params")
    try:
        return message % (tuple(params) if isinstance(params, list | tuple) else params)
    except (TypeError, ValueError, KeyError):
        return f"{message} {params!r}"


def before_send_transaction(event: dict[str, Any], hint: Mapping[str, Any]) -> dict[str, Any]:
    """A ``before_send_transaction`` for ``sentry_sdk.init``: the same scrubbing as :func:`before_send`.

    It covers the ``http.client`` spans that sentry-sdk records for outgoing requests,
    whose description and data hold the URL (a ``response_url``, say).
    """
    return before_send(event, hint)
