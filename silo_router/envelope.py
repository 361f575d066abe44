"""The versioned, signed unit that crosses from control to a region.

An envelope holds the provider's raw body (regions re-parse it with the same
provider code, so nothing is lost in translation), a few selected headers, where
control routed it, the result of any control response, trace propagation headers and
the idempotency key. It serializes to canonical JSON; the signature covers those exact
bytes.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from . import signing
from .conf import conf
from .exceptions import EnvelopeRejected, SiloRouterConfigurationError

VERSION = 1
_NAMESPACE = uuid.UUID("5f0c5d1e-6a55-4b8e-9a53-2f3c1b7e9d11")


@dataclasses.dataclass(frozen=True)
class Envelope:
    """One provider request on its way to one region."""

    id: str
    idempotency_key: str
    provider: str
    kind: str
    region: str
    body: str
    headers: Mapping[str, str]
    strategy: str
    organization_ids: tuple[str, ...] = ()
    integration_id: str | None = None
    control_response: Mapping[str, Any] | None = None
    trace: Mapping[str, str] = dataclasses.field(default_factory=dict)
    created_at: float = dataclasses.field(default_factory=time.time)
    version: int = VERSION

    @staticmethod
    def make_id(idempotency_key: str, region: str) -> str:
        """The envelope id: stable for a given request and region, so retries collapse."""
        return str(uuid.uuid5(_NAMESPACE, f"{idempotency_key}|{region}"))

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        data["organization_ids"] = list(self.organization_ids)
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> Envelope:
        """Parse an envelope; raise ``EnvelopeRejected`` if it is not one we understand."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EnvelopeRejected("The envelope is not valid JSON.", reason="malformed_envelope", status=400) from exc
        if not isinstance(data, dict):
            raise EnvelopeRejected("The envelope is not a JSON object.", reason="malformed_envelope", status=400)
        if data.get("version") != VERSION:
            raise EnvelopeRejected(
                f"Envelope version {data.get('version')!r} is not supported (expected {VERSION}).",
                reason="unsupported_version",
                status=400,
            )
        names = {f.name for f in dataclasses.fields(cls)}
        missing = {"id", "idempotency_key", "provider", "kind", "region", "body", "headers", "strategy"} - data.keys()
        if missing:
            raise EnvelopeRejected(
                f"The envelope lacks {', '.join(sorted(missing))}.", reason="malformed_envelope", status=400
            )
        try:
            fields = {k: v for k, v in data.items() if k in names}
            fields["organization_ids"] = tuple(str(o) for o in fields.get("organization_ids") or ())
            return cls(**fields)
        except TypeError as exc:
            raise EnvelopeRejected(
                "The envelope fields have the wrong shape.", reason="malformed_envelope", status=400
            ) from exc

    def replace(self, **changes: Any) -> Envelope:
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class SealedEnvelope:
    """Serialized envelope bytes and the signature header over them."""

    body: bytes
    signature: str


def seal(envelope: Envelope) -> SealedEnvelope:
    """Serialize and sign with the active control-to-region key."""
    key_id = conf.SIGNING_KEY_ID
    keys = conf.SIGNING_KEYS
    if not key_id or key_id not in keys:
        raise SiloRouterConfigurationError("SILO_ROUTER['SIGNING_KEY_ID'] does not name a key in SIGNING_KEYS.")
    body = envelope.to_json()
    return SealedEnvelope(body=body, signature=signing.sign(body, key_id=key_id, key=keys[key_id]))


def unseal(body: bytes, signature: str | None, *, now: float | None = None) -> Envelope:
    """Verify a sealed envelope with the accepted keys and parse it."""
    signing.verify(body, signature, keys=conf.SIGNING_KEYS, max_age=conf.SIGNATURE_MAX_AGE, now=now)
    return Envelope.from_json(body)
