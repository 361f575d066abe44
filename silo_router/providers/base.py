"""The provider-neutral shape of an inbound webhook, and the provider interface.

Provider code is plain Python: it takes raw bytes and a header mapping, never a
Django request, so it can be tested and benchmarked without a request object.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class RoutingKeys:
    """What identifies the installation a request belongs to."""

    team_id: str | None = None
    enterprise_id: str | None = None
    app_id: str | None = None
    user_id: str | None = None
    #: The provider says the request is for an organization-wide install (Slack's
    #: ``authorizations[0].is_enterprise_install``), not for the workspace one.
    is_enterprise_install: bool = False


@dataclasses.dataclass(frozen=True)
class Authorization:
    """An installation's credentials, as control found them for one request.

    ``installation_id`` is the control silo's ``Integration`` id ("" for a
    single-token app). ``token`` never leaves control: :meth:`facts` is what may
    travel (in an envelope, to a region).
    """

    installation_id: str
    token: str = dataclasses.field(repr=False)
    team_id: str | None = None
    enterprise_id: str | None = None
    is_enterprise_install: bool = False
    app_id: str | None = None
    bot_id: str | None = None
    bot_user_id: str | None = None
    scopes: tuple[str, ...] = ()

    def facts(self) -> dict[str, Any]:
        """Everything but the token, JSON-ready."""
        return {
            "installation_id": self.installation_id,
            "team_id": self.team_id,
            "enterprise_id": self.enterprise_id,
            "is_enterprise_install": self.is_enterprise_install,
            "app_id": self.app_id,
            "bot_id": self.bot_id,
            "bot_user_id": self.bot_user_id,
            "scopes": list(self.scopes),
        }


class Authorizer(Protocol):
    """Finds the credentials of the installation a request belongs to (control only)."""

    def authorize(self, routing: RoutingKeys) -> Authorization | None:
        """The installation ``routing`` names, or ``None`` (unknown or deactivated)."""

    def for_installation(self, installation_id: str) -> Authorization | None:
        """The installation with this id, or ``None`` (unknown or deactivated)."""


@dataclasses.dataclass(frozen=True)
class InboundRequest:
    """A verified, parsed and classified provider request.

    ``type`` is the request family (``block_actions``, ``event_callback``...) and
    ``name`` the sub-key that handlers register on (an action id, an event type, a
    command, a callback id); ``kind`` joins them as ``type:name``. The payload and
    the capabilities it carries (``trigger_id``, ``response_url``) stay out of reprs.
    """

    provider: str
    type: str
    name: str
    payload: Mapping[str, Any] = dataclasses.field(repr=False)
    routing: RoutingKeys
    idempotency_key: str
    trigger_id: str | None = dataclasses.field(default=None, repr=False)
    response_url: str | None = dataclasses.field(default=None, repr=False)
    organization_hint: str | None = None
    #: The notification this request answers (a click on a message the region sent with
    #: :mod:`silo_router.region.notifications`), read from the message's metadata or action value.
    notification_id: str | None = None
    #: Set by control once the installation is found (``dataclasses.replace``); never in a region.
    authorization: Authorization | None = dataclasses.field(default=None, repr=False, compare=False)

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

    def authorize(self, inbound: InboundRequest) -> Authorization | None:
        """The credentials of the installation ``inbound`` belongs to (control only); ``None``: none.

        Providers without installations keep this default.
        """
        return None

    def is_own_event(self, inbound: InboundRequest) -> bool:
        """Whether ``inbound`` reports something the app itself did (answered, never forwarded).

        Called with ``inbound.authorization`` set; the default forwards everything.
        """
        return False


class ControlResponseStatus(enum.StrEnum):
    """Whether a control response showed something to the user."""

    OPENED = "opened"
    FAILED = "failed"


class ReportOutcome(enum.StrEnum):
    """How the forwarded work behind a control response ended, as far as control knows."""

    DONE = "done"
    FAILED = "failed"
    TIMED_OUT = "timed_out"


@dataclasses.dataclass(frozen=True)
class ControlResponse:
    """What a control response did; travels to the region inside the envelope."""

    handler: str
    status: ControlResponseStatus
    view_id: str | None = None
    external_id: str | None = None
    hash: str | None = None
    error: str | None = None
    elapsed_ms: float = 0.0
    #: The installation whose token opened it (later reports use the same one).
    installation_id: str | None = None

    @property
    def opened(self) -> bool:
        """Whether something (a Loading modal) is showing that a later report must replace."""
        return self.status is ControlResponseStatus.OPENED

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready form carried in the envelope."""
        return {
            "handler": self.handler,
            "status": str(self.status),
            "view_id": self.view_id,
            "external_id": self.external_id,
            "hash": self.hash,
            "error": self.error,
            "elapsed_ms": self.elapsed_ms,
            "installation_id": self.installation_id,
        }


class ControlResponseHandler(Protocol):
    """Answers in control, and later reports how the forwarded work ended."""

    name: str

    def run(self, inbound: InboundRequest, *, external_id: str, timeout: float) -> ControlResponse:
        """Answer now (before any database or region work)."""

    def report(
        self, response: Mapping[str, Any], *, outcome: ReportOutcome | str, timeout: float | None = None
    ) -> str | None:
        """Tell the user how it ended; return the view's new hash.

        ``timeout`` given: a short call that must not wait out rate limits (used while
        a provider request may still be open); ``None``: the handler's own default.
        """
