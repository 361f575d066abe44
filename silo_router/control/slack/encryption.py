"""Tokens at rest: Fernet encryption with a list of keys, the first of which encrypts.

``SILO_ROUTER["TOKEN_ENCRYPTION_KEYS"]`` lists Fernet keys (``Fernet.generate_key()``).
Every key decrypts, so a new key can be put first while old ciphertexts are still
readable; :func:`reencrypt_all` then moves every stored secret to the first key, and
the old keys can be dropped. With no keys configured one key is derived from
``SECRET_KEY`` (HKDF-SHA256), which ties the stored tokens to ``SECRET_KEY``.
"""

from __future__ import annotations

import base64
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

from silo_router.conf import conf
from silo_router.exceptions import SiloRouterConfigurationError

SETTING = "SILO_ROUTER['TOKEN_ENCRYPTION_KEYS']"
DERIVATION_SALT = b"silo_router.token_encryption"
DERIVATION_INFO = b"silo_router: Fernet key for stored Slack tokens"
#: Rows re-encrypted per statement batch by :func:`reencrypt_all`.
REENCRYPT_BATCH = 100


class TokenDecryptionError(SiloRouterConfigurationError):
    """A stored secret cannot be decrypted with any configured key."""


def derived_key(secret_key: str) -> str:
    """The Fernet key derived from ``secret_key`` (used when no keys are configured)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=DERIVATION_SALT, info=DERIVATION_INFO)
    return base64.urlsafe_b64encode(hkdf.derive(secret_key.encode())).decode()


def invalid_key_indexes(keys: list[str] | tuple[str, ...]) -> list[int]:
    """Positions in ``keys`` that are not valid Fernet keys."""
    bad = []
    for index, key in enumerate(keys):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            bad.append(index)
    return bad


@functools.lru_cache(maxsize=8)
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    bad = invalid_key_indexes(keys)
    if bad:
        raise SiloRouterConfigurationError(
            f"{SETTING}[{bad[0]}] is not a valid Fernet key (32 url-safe base64-encoded bytes); "
            "generate one with cryptography.fernet.Fernet.generate_key()."
        )
    return MultiFernet([Fernet(key) for key in keys])


def configured_keys() -> tuple[str, ...]:
    """The keys in use: the configured ones, or the one derived from ``SECRET_KEY``."""
    keys = tuple(conf.TOKEN_ENCRYPTION_KEYS)
    return keys or (derived_key(str(settings.SECRET_KEY)),)


def fernet() -> MultiFernet:
    """The ``MultiFernet`` over :func:`configured_keys` (built once per key list)."""
    return _fernet(configured_keys())


def encrypt(text: str) -> str:
    """``text`` encrypted with the first key, as a Fernet token string."""
    return fernet().encrypt(text.encode()).decode()


def decrypt(text: str) -> str:
    """The plaintext of a Fernet token made with any configured key."""
    try:
        return fernet().decrypt(text.encode()).decode()
    except InvalidToken:
        raise TokenDecryptionError(
            f"A stored token cannot be decrypted with any key in {SETTING}: the key that encrypted it was "
            "removed (or SECRET_KEY changed while no keys are configured). Put that key back in the list."
        ) from None


def rotate(text: str) -> str:
    """``text`` (a Fernet token of any configured key) re-encrypted with the first key."""
    try:
        return fernet().rotate(text.encode()).decode()
    except InvalidToken:
        raise TokenDecryptionError(
            f"A stored token cannot be re-encrypted: no key in {SETTING} decrypts it. "
            "Put the key that encrypted it back in the list."
        ) from None


def reencrypt_all() -> int:
    """Re-encrypt every stored secret with the first key; return how many were re-encrypted.

    Rows are read in batches of :data:`REENCRYPT_BATCH`, and each row is written with a
    conditional update (only if its ciphertexts are still the ones read), so no lock is
    held for long and a token refreshed meanwhile is left alone (it is already on the
    first key).
    """
    from ..models import SlackInstallation

    fields = SlackInstallation.ENCRYPTED_FIELDS
    count = 0
    last_pk = 0
    while True:
        rows = list(
            SlackInstallation.objects.filter(pk__gt=last_pk).order_by("pk").values("pk", *fields)[:REENCRYPT_BATCH]
        )
        if not rows:
            return count
        for row in rows:
            current = {name: row[name] for name in fields if row[name]}
            if current:
                rotated = {name: rotate(value) for name, value in current.items()}
                if SlackInstallation.objects.filter(pk=row["pk"], **current).update(**rotated):
                    count += len(rotated)
        last_pk = rows[-1]["pk"]
