"""The provider-neutral shape of an inbound webhook, and the provider interface.

Provider code is plain Python: it takes raw bytes and a header mapping, never a
Django request, so it can be tested and benchmarked without a request object.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any


@dataclasses.dataclass(frozen=True)
class RoutingKeys:
    """What identifies the installation a request belongs to."""

    team_id: str | None = None
    enterprise_id: str | None = None
    app_id: str | None = None
    user_id: str | None = None


@dataclasses.dataclass(frozen=True)
class InboundRequest:
    """A verified, parsed and classified provider request.

    ``type`` is the request family (``block_actions``, ``event_callback``...) and
    ``name`` the sub-key that handlers register on (an action id, an event type, a
    command, a callback id); ``kind`` joins them as ``type:name``.
    """

    provider: str
    type: str
    name: str
    payload: Mapping[str, Any]
    routing: RoutingKeys
    idempotency_key: str
    encoding: str  # "json" or "form"
    trigger_id: str | None = None
    response_url: str | None = None
    organization_hint: str | None = None
    event_id: str | None = None

    @property
    def kind(self) -> str:
        return f"{self.type}:{self.name}" if self.name else self.type


@dataclasses.dataclass(frozen=True)
class ProviderResponse:
    """An answer the control silo gives the provider itself, as plain data."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"


class Provider(abc.ABC):
    """Verifies, parses and answers one third-party platform's webhooks."""

    #: Short name used in settings, envelopes and handler registries.
    name: str

    #: Request headers (lower-case) that are copied into the envelope.
    forwarded_headers: Sequence[str] = ()

    #: Request types whose answer is only useful within the deadline (options loads).
    read_only_types: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls) -> Provider:
        """Build the provider from ``SILO_ROUTER`` settings."""
        return cls()

    @abc.abstractmethod
    def verify(self, *, body: bytes, headers: Mapping[str, str], now: float | None = None) -> None:
        """Raise ``SignatureError`` unless the request is authentic and fresh."""

    @abc.abstractmethod
    def parse(self, *, body: bytes, headers: Mapping[str, str]) -> InboundRequest:
        """Classify the request; raise ``MalformedRequest`` for anything unparseable."""

    @abc.abstractmethod
    def control_answer(self, inbound: InboundRequest) -> ProviderResponse | None:
        """The answer for kinds that control answers alone (``None`` for others)."""

    @abc.abstractmethod
    def fallback_answer(self, inbound: InboundRequest) -> ProviderResponse:
        """The answer when a synchronous forward runs out of time or has no region."""

    @abc.abstractmethod
    def sent_at(self, headers: Mapping[str, str]) -> float | None:
        """When the provider says it sent the request (for deadline budgeting)."""
