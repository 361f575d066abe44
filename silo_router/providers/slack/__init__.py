"""The Slack provider: signing, request classification and control-silo answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from silo_router.conf import conf
from silo_router.exceptions import SiloRouterConfigurationError
from silo_router.providers.base import Authorization, InboundRequest, Provider, ProviderResponse
from silo_router.providers.slack import responses
from silo_router.providers.slack.authorization import authorizer
from silo_router.providers.slack.parsing import is_self_event, parse_request
from silo_router.providers.slack.verification import parse_timestamp, verify_signature

__all__ = ["SlackProvider"]

TIMESTAMP_HEADER = "x-slack-request-timestamp"
SIGNATURE_HEADER = "x-slack-signature"


class SlackProvider(Provider):
    """Verifies, parses and answers Slack's HTTP requests.

    Header mappings given to this class have lower-case keys (or are
    case-insensitive, like Django's ``request.headers``).
    """

    name = "slack"
    forwarded_headers = ("content-type", "x-slack-request-timestamp", "x-slack-retry-num", "x-slack-retry-reason")
    #: Kinds whose only use is the answer in the HTTP body: not redelivered after a timeout.
    read_only_types = frozenset({"block_suggestion", "dialog_suggestion"})

    def __init__(self, *, signing_secrets: Sequence[str], tolerance: int = 300) -> None:
        """Keep the signing secrets (several during a rotation) and the clock tolerance."""
        if isinstance(signing_secrets, str | bytes):
            raise SiloRouterConfigurationError("Slack signing_secrets must be a list of strings, not one string.")
        if tolerance < 0:
            raise SiloRouterConfigurationError("Slack signature tolerance must not be negative.")
        self.signing_secrets: tuple[str, ...] = tuple(signing_secrets)
        self.tolerance = tolerance

    @classmethod
    def from_settings(cls) -> SlackProvider:
        """Build from ``SILO_ROUTER['SLACK']`` (a region needs no secrets: it only parses)."""
        slack = conf.SLACK
        return cls(signing_secrets=list(slack["SIGNING_SECRETS"]), tolerance=int(slack["TIMESTAMP_TOLERANCE"]))

    def verify(self, *, body: bytes, headers: Mapping[str, str], now: float | None = None) -> None:
        """Raise ``SignatureError`` unless the request is signed by Slack and fresh."""
        verify_signature(
            body=body,
            timestamp=headers.get(TIMESTAMP_HEADER),
            signature=headers.get(SIGNATURE_HEADER),
            secrets=self.signing_secrets,
            now=now,
            tolerance=self.tolerance,
        )

    def parse(self, *, body: bytes, headers: Mapping[str, str]) -> InboundRequest:
        """Classify the request (see ``parsing.parse_request``)."""
        return parse_request(body=body, headers=headers)

    def control_answer(self, inbound: InboundRequest) -> ProviderResponse | None:
        """Answer url_verification, ssl_check and app_rate_limited in the control silo."""
        return responses.control_answer(inbound)

    def fallback_answer(self, inbound: InboundRequest) -> ProviderResponse:
        """The answer when no region answered in time."""
        return responses.fallback_answer(inbound)

    def sent_at(self, headers: Mapping[str, str]) -> float | None:
        """The request timestamp header as Unix seconds, ``None`` if missing or invalid."""
        return parse_timestamp(headers.get(TIMESTAMP_HEADER))

    def authorize(self, inbound: InboundRequest) -> Authorization | None:
        """The installation's credentials from the configured authorizer (``SLACK["AUTHORIZER"]``)."""
        found: Authorization | None = authorizer().authorize(inbound.routing)
        return found

    def is_own_event(self, inbound: InboundRequest) -> bool:
        """An event the installation's own bot caused, unless ``SLACK["IGNORE_SELF_EVENTS"]`` is off."""
        return bool(conf.SLACK["IGNORE_SELF_EVENTS"]) and is_self_event(inbound)
