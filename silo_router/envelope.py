"""The versioned, signed unit that crosses from control to a region.

An envelope holds the provider's raw body (regions re-parse it with the same
provider code, so nothing is lost in translation), a few selected headers, where
control routed it, the result of any control response, trace propagation headers and
the idempotency key. It serializes to canonical UTF-8 JSON; the signature covers
those exact bytes. Parsing is strict, field by field: a signed envelope whose fields
have the wrong types is refused with a reason, never half-read.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from . import signing
from .conf import conf
from .exceptions import EnvelopeRejected, SiloRouterConfigurationError

#: The version this code writes.
VERSION = 1
#: Every version this code can read (a region accepts all of them during a rolling upgrade).
SUPPORTED_VERSIONS: tuple[int, ...] = (1,)
#: How deep ``control_response`` may nest: it is a small dict written by control.
MAX_CONTROL_RESPONSE_DEPTH = 16
#: JSON escapes a character as at most ``\\u`` and four hex digits: six bytes for one byte of body.
MAX_ESCAPE_FACTOR = 6
#: Room for everything in an envelope besides the body (ids, headers, trace, control response).
ENVELOPE_OVERHEAD = 64 * 1024
#: The encoder of the signed bytes: sorted keys, no spaces, non-ASCII characters as themselves.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_NAMESPACE = uuid.UUID("5f0c5d1e-6a55-4b8e-9a53-2f3c1b7e9d11")
_REQUIRED = ("id", "idempotency_key", "provider", "kind", "region", "body", "headers", "strategy")
#: Fields that end up in database id columns: no NUL (PostgreSQL cannot store it).
_ID_FIELDS = ("idempotency_key", "provider", "kind", "region", "strategy")


class Outcome(enum.StrEnum):
    """What became of one envelope at its region."""

    HANDLED = "handled"
    DUPLICATE = "duplicate"
    UNHANDLED = "unhandled"
    QUEUED = "queued"
    FAILED = "failed"
    REJECTED = "rejected"


@dataclasses.dataclass(frozen=True)
class Receipt:
    """The region's answer to one envelope.

    ``handled``; ``duplicate`` (already handled; ``response`` is the first answer);
    ``unhandled`` (no handler registered here: nothing was recorded, so the envelope
    can run once a handler exists); ``queued`` (accepted by a transport that confirms
    later).
    """

    outcome: Outcome
    response: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"outcome": str(self.outcome), "response": self.response}


def max_envelope_size(max_body_size: int) -> int:
    """The largest serialized envelope that can carry a body of ``max_body_size`` bytes."""
    return max_body_size * MAX_ESCAPE_FACTOR + ENVELOPE_OVERHEAD


@dataclasses.dataclass(frozen=True)
class Envelope:
    """One provider request on its way to one region."""

    id: str
    idempotency_key: str
    provider: str
    kind: str
    region: str
    body: str = dataclasses.field(repr=False)
    headers: Mapping[str, str] = dataclasses.field(repr=False)
    strategy: str
    organization_ids: tuple[str, ...] = ()
    integration_id: str | None = None
    control_response: Mapping[str, Any] | None = dataclasses.field(default=None, repr=False)
    #: What control knows of the installation, never its token (``Authorization.facts()``).
    installation: Mapping[str, Any] | None = None
    trace: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: The notification the request answers (``InboundRequest.notification_id``).
    notification_id: str | None = None
    #: When control received the request (epoch seconds), for the notification funnel.
    received_at: float | None = None
    created_at: float = dataclasses.field(default_factory=time.time)
    version: int = VERSION

    @staticmethod
    def make_id(idempotency_key: str, region: str) -> str:
        """The envelope id: stable for a given request and region, so retries collapse."""
        return str(uuid.uuid5(_NAMESPACE, f"{idempotency_key}|{region}"))

    def to_json(self) -> bytes:
        """Canonical UTF-8 JSON (non-ASCII characters as themselves, not ``\\u`` escapes)."""
        return _CANONICAL.encode(self.as_dict()).encode()

    def as_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready; mappings are shared with the envelope, not copied."""
        return {
            "id": self.id,
            "idempotency_key": self.idempotency_key,
            "provider": self.provider,
            "kind": self.kind,
            "region": self.region,
            "body": self.body,
            "headers": self.headers,
            "strategy": self.strategy,
            "organization_ids": list(self.organization_ids),
            "integration_id": self.integration_id,
            "control_response": self.control_response,
            "installation": self.installation,
            "trace": self.trace,
            "notification_id": self.notification_id,
            "received_at": self.received_at,
            "created_at": self.created_at,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, raw: bytes | str) -> Envelope:
        """Parse an envelope; raise ``EnvelopeRejected`` if it is not one we understand."""
        return cls.from_data(load_json(raw))

    @classmethod
    def from_data(cls, data: Any) -> Envelope:
        """Build an envelope from decoded JSON, checking every field's type."""
        if not isinstance(data, dict):
            raise _malformed("The envelope is not a JSON object.")
        version = data.get("version")
        if type(version) is not int or version not in SUPPORTED_VERSIONS:
            raise EnvelopeRejected(
                f"Envelope version {_short(version)} is not supported (this region reads "
                f"{', '.join(map(str, SUPPORTED_VERSIONS))}).",
                reason="unsupported_version",
                status=400,
            )
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise _malformed(f"The envelope lacks {', '.join(missing)}.")
        for name in (*_REQUIRED, "integration_id"):
            if name == "headers" or (name == "integration_id" and data.get(name) is None):
                continue
            _text(data, name)
        for name in _ID_FIELDS:
            if "\x00" in data[name]:
                raise _malformed(f"The envelope field {name} contains a NUL character.")
        try:
            uuid.UUID(data["id"])
        except ValueError as exc:
            raise _malformed("The envelope id is not a UUID.") from exc
        organization_ids = data.get("organization_ids", [])
        if not isinstance(organization_ids, list) or not all(isinstance(o, str) for o in organization_ids):
            raise _malformed("The envelope field organization_ids must be a list of strings.")
        control_response = data.get("control_response")
        if control_response is not None and not (
            isinstance(control_response, dict) and _depth(control_response) <= MAX_CONTROL_RESPONSE_DEPTH
        ):
            raise _malformed("The envelope field control_response must be a small JSON object.")
        installation = data.get("installation")
        if installation is not None and not (
            isinstance(installation, dict) and _depth(installation) <= MAX_CONTROL_RESPONSE_DEPTH
        ):
            raise _malformed("The envelope field installation must be a small JSON object.")
        notification_id = data.get("notification_id")
        if notification_id is not None and not (isinstance(notification_id, str) and len(notification_id) <= 64):
            raise _malformed("The envelope field notification_id must be a short string.")
        received_at = data.get("received_at")
        if received_at is not None and (type(received_at) not in (int, float) or not math.isfinite(received_at)):
            raise _malformed("The envelope field received_at must be a number.")
        created_at = data.get("created_at", time.time())
        if type(created_at) not in (int, float) or not math.isfinite(created_at):
            raise _malformed("The envelope field created_at must be a number.")
        return cls(
            id=data["id"],
            idempotency_key=data["idempotency_key"],
            provider=data["provider"],
            kind=data["kind"],
            region=data["region"],
            body=data["body"],
            headers=_text_map(data, "headers"),
            strategy=data["strategy"],
            organization_ids=tuple(organization_ids),
            integration_id=data.get("integration_id"),
            control_response=control_response,
            installation=installation,
            trace=_text_map(data, "trace") if "trace" in data else {},
            notification_id=notification_id,
            received_at=None if received_at is None else float(received_at),
            created_at=float(created_at),
            version=version,
        )

    def replace(self, **changes: Any) -> Envelope:
        return dataclasses.replace(self, **changes)


def load_json(raw: bytes | str) -> Any:
    """Decode envelope JSON; bad bytes, bad JSON and absurd nesting are ``malformed_envelope``."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise _malformed("The envelope is not valid JSON.") from exc


def _malformed(detail: str) -> EnvelopeRejected:
    return EnvelopeRejected(detail, reason="malformed_envelope", status=400)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 20 else text[:20] + "..."


def _utf8(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:  # a lone surrogate from a \\ud800 escape
        return False
    return True


def _text(data: Mapping[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not _utf8(value):
        raise _malformed(f"The envelope field {name} must be a string.")
    return value


def _text_map(data: Mapping[str, Any], name: str) -> dict[str, str]:
    value = data[name]
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and _utf8(k) and _utf8(v) for k, v in value.items()
    ):
        raise _malformed(f"The envelope field {name} must be an object of strings.")
    return dict(value)


def _depth(value: Any, limit: int = MAX_CONTROL_RESPONSE_DEPTH) -> int:
    """Nesting depth of decoded JSON, counting no further than ``limit + 1``."""
    if limit < 0 or not isinstance(value, dict | list):
        return 0
    children = value.values() if isinstance(value, dict) else value
    return 1 + max((_depth(child, limit - 1) for child in children), default=0)


@dataclasses.dataclass(frozen=True)
class SealedEnvelope:
    """Serialized envelope bytes and the signature header over them."""

    body: bytes = dataclasses.field(repr=False)
    signature: str = dataclasses.field(repr=False)


def sign_for_region(region: str, message: bytes) -> str:
    """Sign ``message`` with the active hop key of ``region`` (see ``conf.signing_keys_for``)."""
    key_id = conf.signing_key_id_for(region)
    keys = conf.signing_keys_for(region)
    if not key_id or key_id not in keys:
        raise SiloRouterConfigurationError(f"No SIGNING_KEY_ID names a signing key for region {region!r}.")
    return signing.sign(message, key_id=key_id, key=keys[key_id])


def seal(envelope: Envelope) -> SealedEnvelope:
    """Serialize and sign with the key of ``envelope.region``."""
    body = envelope.to_json()
    return SealedEnvelope(body=body, signature=sign_for_region(envelope.region, body))


def unseal(body: bytes, signature: str | None, *, now: float | None = None, max_age: int | None = None) -> Envelope:
    """Verify a sealed envelope with the keys of the region it names, then parse it."""
    signing.parse_header(signature)
    data = load_json(body)
    region = data.get("region") if isinstance(data, dict) else None
    if not isinstance(region, str):
        raise _malformed("The envelope names no region.")
    signing.verify(
        body,
        signature,
        keys=conf.signing_keys_for(region),
        max_age=conf.SIGNATURE_MAX_AGE if max_age is None else max_age,
        now=now,
    )
    return Envelope.from_data(data)


#: Context string of the key that encrypts envelopes on a broker (derived from the hop key).
_QUEUE_KEY_INFO = b"silo-router queued envelope v1"
#: Prefix of an encrypted envelope in a broker message (a plaintext one starts with "{").
QUEUE_TOKEN_PREFIX = "f1:"


def _queue_cipher(region: str, key_id: str) -> Fernet:
    keys = conf.signing_keys_for(region)
    if key_id not in keys:
        raise EnvelopeRejected(f"The envelope is sealed with an unknown key id {key_id!r}.", reason="unknown_key")
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_QUEUE_KEY_INFO).derive(keys[key_id].encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def encrypt_for_queue(sealed: SealedEnvelope, *, region: str) -> str:
    """The sealed body encrypted with a key derived from ``region``'s hop key, for a broker.

    A broker (and a result backend) is shared infrastructure: the envelope's body holds
    capabilities (``response_url``, ``trigger_id``) that must not sit there in clear.
    """
    _, key_id, _ = signing.parse_header(sealed.signature)
    return QUEUE_TOKEN_PREFIX + _queue_cipher(region, key_id).encrypt(sealed.body).decode("ascii")


def decrypt_from_queue(token: str, signature: str | None, *, region: str) -> bytes:
    """The sealed body of a broker message; ``EnvelopeRejected`` when it cannot be opened."""
    if not token.startswith(QUEUE_TOKEN_PREFIX):
        raise EnvelopeRejected("The queued envelope is not encrypted.", reason="malformed_envelope", status=400)
    _, key_id, _ = signing.parse_header(signature)
    try:
        return _queue_cipher(region, key_id).decrypt(token[len(QUEUE_TOKEN_PREFIX) :].encode("ascii"))
    except (InvalidToken, UnicodeEncodeError) as exc:
        raise EnvelopeRejected("The queued envelope does not decrypt.", reason="signature_mismatch") from exc
