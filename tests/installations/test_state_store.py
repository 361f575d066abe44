"""OAuth states: signed, naming the organization, single-use, expiring."""

from __future__ import annotations

import hashlib
import time

import pytest
from django.core import signing

from silo_router.control.models import OAuthState, OrganizationMapping
from silo_router.control.slack.store import STATE_SALT, DjangoOAuthStateStore, StateOutcome

pytestmark = pytest.mark.django_db


def test_a_state_is_good_once_and_names_its_organization(acme: OrganizationMapping) -> None:
    states = DjangoOAuthStateStore()
    state = states.issue(organization=acme)

    first = states.check_and_consume(state)
    assert first.outcome == "ok" and first.organization == acme
    assert states.check_and_consume(state).outcome is StateOutcome.USED
    assert not states.consume(state)


def test_only_a_hash_of_the_state_is_stored() -> None:
    states = DjangoOAuthStateStore()
    state = states.issue()
    row = OAuthState.objects.get()
    assert row.state_hash == hashlib.sha256(state.encode()).hexdigest()
    assert row.organization is None and row.consumed_at is None
    assert states.consume(state)  # slack_sdk's interface
    assert OAuthState.objects.get().consumed_at is not None


@pytest.mark.parametrize(
    "forged",
    [
        "",
        "not-a-state",
        signing.dumps({"n": "x", "o": None}, salt="another.salt"),
        # Signed correctly but never issued (no row): refused too.
        signing.dumps({"n": "never-issued", "o": None}, salt=STATE_SALT),
    ],
)
def test_states_we_did_not_issue_are_invalid(forged: str) -> None:
    assert DjangoOAuthStateStore().check_and_consume(forged).outcome is StateOutcome.INVALID


def test_a_tampered_state_is_invalid(acme: OrganizationMapping) -> None:
    state = DjangoOAuthStateStore().issue(organization=acme)
    value, _, signature = state.rpartition(":")
    tampered = f"{value}:{signature[:-1]}{'A' if signature[-1] != 'A' else 'B'}"
    assert DjangoOAuthStateStore().check_and_consume(tampered).outcome is StateOutcome.INVALID
    assert DjangoOAuthStateStore().check_and_consume(state).outcome is StateOutcome.OK


def test_a_state_expires() -> None:
    states = DjangoOAuthStateStore(expiration_seconds=1)
    state = states.issue()
    time.sleep(2.05)
    assert states.check_and_consume(state).outcome is StateOutcome.EXPIRED
    # A state past its row's expiry is refused even if the signature is still young.
    fresh = DjangoOAuthStateStore().issue()
    OAuthState.objects.filter(state_hash=hashlib.sha256(fresh.encode()).hexdigest()).update(
        expires_at=OAuthState.objects.get(state_hash=hashlib.sha256(state.encode()).hexdigest()).expires_at
    )
    assert DjangoOAuthStateStore().check_and_consume(fresh).outcome is StateOutcome.EXPIRED


def test_issuing_prunes_long_expired_rows() -> None:
    states = DjangoOAuthStateStore(expiration_seconds=1)
    states.issue()
    time.sleep(2.05)
    states.issue()
    assert OAuthState.objects.count() == 1
