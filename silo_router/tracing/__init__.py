"""Tracing: every flow is one trace, across control, the queue, the region and the reply.

Spans are written once (:func:`stage`, :func:`flow`) and go to every active back end:
sentry-sdk when it is initialised, OpenTelemetry through its API when the ``[otel]``
extra is installed. Both cost one check when neither is on. Names follow one scheme
(``silo_router.<silo>.<stage>``, :mod:`.names`); links to other traces follow Sentry's
span-link format and OpenTelemetry's links (:mod:`.links`); the deadline figures are
also metrics (:mod:`.metrics`). :func:`traces_sampler` keeps every integration flow;
:func:`before_send` and :func:`before_send_transaction` keep capabilities out of events.
"""

from __future__ import annotations

from . import links, metrics, names
from .links import Link
from .sampling import is_integration_flow, sampler, traces_sampler
from .scrubbing import INSTALL_FLOW_PARAMS, before_send, before_send_transaction
from .spans import NO_SPAN, Span, active, current_trace_id, flow, propagation_headers, stage

__all__ = [
    "INSTALL_FLOW_PARAMS",
    "NO_SPAN",
    "Link",
    "Span",
    "active",
    "before_send",
    "before_send_transaction",
    "current_trace_id",
    "flow",
    "is_integration_flow",
    "links",
    "metrics",
    "names",
    "propagation_headers",
    "sampler",
    "stage",
    "traces_sampler",
]
