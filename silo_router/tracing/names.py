"""One naming scheme for spans, attributes, links and metrics.

Spans are ``silo_router.<silo>.<stage>`` (the Sentry op and the OpenTelemetry span
name). Attributes are ``silo_router.<name>``; only the low-cardinality ones in
:data:`TAGS` become Sentry tags, ids stay data.
"""

from __future__ import annotations

#: Every span, attribute and metric of this library starts with this prefix.
PREFIX = "silo_router"

CONTROL = "control"
REGION = "region"
#: The silos a span can belong to (control's workers are the control silo too).
SILOS = frozenset({CONTROL, REGION})

#: The attributes every flow span may carry, short name -> attribute name.
PROVIDER = "provider"
KIND = "kind"
INSTALLATION = "installation"
ENVELOPE_ID = "envelope_id"
ATTEMPT = "attempt"
OUTCOME = "outcome"
NOTIFICATION_ID = "notification_id"
#: Short names whose values are few (a tag each); the rest are span data only.
TAGS = frozenset(
    {PROVIDER, KIND, "region", OUTCOME, "silo", "deadline_missed", "circuit", "stage", "method", "notification_name"}
)

#: The link types this library writes (``sentry.link.type`` / a link attribute).
LINK_CAUSED_BY = "silo_router.caused_by"
LINK_NOTIFICATION = "silo_router.notification"
#: The span data key under which links wait for the event processor (Sentry).
LINKS_DATA_KEY = f"{PREFIX}._links"


#: OpenTelemetry's messaging conventions: the operation types of a message's life.
CREATE, SEND, RECEIVE, PROCESS, SETTLE = "create", "send", "receive", "process", "settle"


def messaging(operation: str, *, destination: str, message_id: str, system: str = PREFIX) -> dict[str, str]:
    """OpenTelemetry messaging attributes for a stage of an envelope's life.

    An envelope is the message, its region the destination: the control request
    creates it (``create``), each attempt sends it (``send``), the region receives it
    (``receive``) and the handler processes it (``process``); the confirmation back to
    control settles it (``settle``).
    """
    return {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.message.id": message_id,
        "messaging.operation.type": operation,
    }


def op(silo: str, stage: str) -> str:
    """The span name of ``stage`` in ``silo``: ``silo_router.<silo>.<stage>``."""
    return f"{PREFIX}.{silo}.{stage}"


def attribute(name: str) -> str:
    """The attribute name of the short name ``name`` (``kind`` -> ``silo_router.kind``)."""
    return name if "." in name else f"{PREFIX}.{name}"


def is_integration_op(value: object) -> bool:
    """Whether a span or transaction op is one of this library's."""
    return isinstance(value, str) and (value == PREFIX or value.startswith(PREFIX + "."))
