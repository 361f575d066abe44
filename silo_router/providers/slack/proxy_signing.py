"""What a region signs for control: its Slack Web API calls and its install grants.

A call carries three headers: ``X-Silo-Router-Region`` (the calling region),
``X-Silo-Router-Installation`` (control's id of the installation whose token the call
needs; absent for a single-token app) and ``X-Silo-Router-Signature`` in the format of
:mod:`silo_router.signing`, computed with the region's own hop key over::

    b"slack-api:v1:" + method + b":" + installation id + b":" + region + b":" + body

The prefix keeps a call signature from ever being taken for an envelope's, and none of
the three names may hold a colon, so the message reads one way only.

An install grant (:func:`sign_install_grant`) is a region's word that an install started
from one of its organizations: ``b"slack-install:v1:" + organization id + b":" + region``,
signed the same way and valid for ``SLACK["STATE_EXPIRATION"]`` seconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from silo_router import signing
from silo_router.exceptions import EnvelopeRejected

REGION_HEADER = "X-Silo-Router-Region"
INSTALLATION_HEADER = "X-Silo-Router-Installation"
SIGNATURE_HEADER = signing.HEADER

#: A Web API method name (``chat.postMessage``).
METHOD_RE = re.compile(r"^[A-Za-z0-9_.]{1,100}$")
#: A region name or an installation id as they may appear in the headers.
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

_PREFIX = b"slack-api:v1:"


def call_message(*, method: str, installation_id: str, region: str, body: bytes) -> bytes:
    """The bytes a region signs for one call (raises ``ValueError`` for names that cannot be signed)."""
    if not METHOD_RE.match(method):
        raise ValueError(f"{method!r} is not a Web API method name.")
    if installation_id and not NAME_RE.match(installation_id):
        raise ValueError("The installation id holds characters a signed call cannot carry.")
    if not NAME_RE.match(region):
        raise ValueError("The region name holds characters a signed call cannot carry.")
    return _PREFIX + f"{method}:{installation_id}:{region}:".encode() + body


def sign_call(
    *,
    method: str,
    installation_id: str,
    region: str,
    body: bytes,
    key_id: str,
    key: str,
    timestamp: float | None = None,
) -> dict[str, str]:
    """The headers of one signed call (the installation header only when there is an id)."""
    message = call_message(method=method, installation_id=installation_id, region=region, body=body)
    headers = {
        REGION_HEADER: region,
        SIGNATURE_HEADER: signing.sign(message, key_id=key_id, key=key, timestamp=timestamp),
    }
    if installation_id:
        headers[INSTALLATION_HEADER] = installation_id
    return headers


def verify_call(
    *,
    method: str,
    installation_id: str,
    region: str,
    body: bytes,
    signature: str | None,
    keys: Mapping[str, str],
    max_age: int,
    now: float | None = None,
) -> str:
    """Check a call's signature with ``keys`` (the region's hop keys); return the key id.

    Raises ``EnvelopeRejected`` (403) with the reasons of :func:`silo_router.signing.verify`
    (``missing_signature``, ``malformed_signature``, ``unknown_key``, ``stale_signature``,
    ``signature_mismatch``).
    """
    try:
        message = call_message(method=method, installation_id=installation_id, region=region, body=body)
    except ValueError as exc:
        raise EnvelopeRejected(str(exc), reason="signature_mismatch") from None
    return signing.verify(message, signature, keys=keys, max_age=max_age, now=now)


#: What an install grant signs: a region vouches that an install is for one of its organizations.
_GRANT_PREFIX = b"slack-install:v1:"


def install_grant_message(*, organization_id: str, region: str) -> bytes:
    """The bytes a region signs to let an install be linked to ``organization_id``."""
    if not NAME_RE.match(organization_id) or not NAME_RE.match(region):
        raise ValueError("An install grant names an organization id and a region without colons.")
    return _GRANT_PREFIX + f"{organization_id}:{region}".encode()


def sign_install_grant(*, organization_id: str, region: str, key_id: str, key: str) -> str:
    """A region's grant for an install linked to ``organization_id`` (format of :mod:`silo_router.signing`)."""
    message = install_grant_message(organization_id=organization_id, region=region)
    return signing.sign(message, key_id=key_id, key=key)


def verify_install_grant(
    *, organization_id: str, region: str, grant: str | None, keys: Mapping[str, str], max_age: int
) -> str:
    """Check a region's install grant with ``keys``; raises ``EnvelopeRejected`` like :func:`verify_call`."""
    try:
        message = install_grant_message(organization_id=organization_id, region=region)
    except ValueError as exc:
        raise EnvelopeRejected(str(exc), reason="signature_mismatch") from None
    return signing.verify(message, grant, keys=keys, max_age=max_age)
