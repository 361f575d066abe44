"""Tokens at rest: Fernet with a key list, re-encryption to a new key, and clear failures."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from silo_router.control.models import SlackInstallation
from silo_router.control.slack import encryption
from silo_router.control.slack.store import DjangoInstallationStore
from silo_router.exceptions import SiloRouterConfigurationError

from .builders import rotating_install

pytestmark = pytest.mark.django_db

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def use_keys(settings: Any, keys: list[str]) -> None:
    settings.SILO_ROUTER = {**settings.SILO_ROUTER, "TOKEN_ENCRYPTION_KEYS": keys}


def test_round_trip_and_a_fresh_ciphertext_each_time() -> None:
    first, second = encryption.encrypt("xoxb-secret"), encryption.encrypt("xoxb-secret")
    assert first != second and "xoxb-secret" not in first
    assert encryption.decrypt(first) == encryption.decrypt(second) == "xoxb-secret"


def test_rotating_the_encryption_key(settings: Any, store: DjangoInstallationStore) -> None:
    use_keys(settings, [OLD_KEY])
    store.save(rotating_install())
    before = SlackInstallation.objects.values_list("encrypted_bot_token", flat=True).get()
    Fernet(OLD_KEY.encode()).decrypt(before.encode())  # written with the old key

    # 1. A new key first: the old ciphertexts still decrypt, new writes use the new key.
    use_keys(settings, [NEW_KEY, OLD_KEY])
    assert SlackInstallation.objects.get().bot_token == "xoxe.xoxb-T0ROT0001-first"
    # 2. Re-encrypt everything with the new key (bot, refresh, user token, webhook URL).
    assert encryption.reencrypt_all() == 4
    after = SlackInstallation.objects.values_list("encrypted_bot_token", flat=True).get()
    assert after != before
    Fernet(NEW_KEY.encode()).decrypt(after.encode())
    # 3. Drop the old key: everything still reads.
    use_keys(settings, [NEW_KEY])
    record = SlackInstallation.objects.get()
    assert record.bot_token == "xoxe.xoxb-T0ROT0001-first"
    assert record.bot_refresh_token == "xoxe-1-T0ROT0001-refresh-first"
    assert record.incoming_webhook_url is not None


def test_the_management_command_reports_how_many(settings: Any, store: DjangoInstallationStore, capsys: Any) -> None:
    use_keys(settings, [OLD_KEY])
    store.save(rotating_install("T0ROT0001"))
    store.save(rotating_install("T0ROT0002"))
    use_keys(settings, [NEW_KEY, OLD_KEY])
    call_command("silo_router_rotate_encryption_key")
    assert "Re-encrypted 8 stored secrets" in capsys.readouterr().out
    use_keys(settings, [NEW_KEY])
    assert {r.bot_token for r in SlackInstallation.objects.all()} == {
        "xoxe.xoxb-T0ROT0001-first",
        "xoxe.xoxb-T0ROT0002-first",
    }


def test_a_removed_key_fails_clearly_without_showing_a_key(settings: Any, store: DjangoInstallationStore) -> None:
    use_keys(settings, [OLD_KEY])
    store.save(rotating_install())
    use_keys(settings, [NEW_KEY])
    with pytest.raises(encryption.TokenDecryptionError, match="TOKEN_ENCRYPTION_KEYS") as caught:
        SlackInstallation.objects.get().bot_token  # noqa: B018
    assert NEW_KEY not in str(caught.value) and OLD_KEY not in str(caught.value)
    assert isinstance(caught.value, SiloRouterConfigurationError)
    with pytest.raises(encryption.TokenDecryptionError):
        encryption.reencrypt_all()


def test_without_keys_one_is_derived_from_secret_key(settings: Any) -> None:
    use_keys(settings, [])
    token = encryption.encrypt("xoxb-secret")
    Fernet(encryption.derived_key(settings.SECRET_KEY).encode()).decrypt(token.encode())
    settings.SECRET_KEY = "another-secret-key"
    with pytest.raises(encryption.TokenDecryptionError, match="SECRET_KEY"):
        encryption.decrypt(token)


def test_an_invalid_key_is_named_by_its_position(settings: Any) -> None:
    use_keys(settings, [NEW_KEY, "not-a-fernet-key"])
    with pytest.raises(SiloRouterConfigurationError, match=r"TOKEN_ENCRYPTION_KEYS'\]\[1\]") as caught:
        encryption.encrypt("x")
    assert "not-a-fernet-key" not in str(caught.value)
