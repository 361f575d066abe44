"""The signed bytes of an envelope, and the dicts that go into it, name every field and nothing else.

They are written out field by field (no ``dataclasses.asdict``, which copies every nested
value); each is checked against what ``asdict`` gives, so a field added to the dataclass
and forgotten in the dict fails here, and the signed bytes stay what they were.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from silo_router.envelope import Envelope, seal
from silo_router.providers.base import Authorization, ControlResponse, ControlResponseStatus
from tests.envelope_corpus import MALFORMED_FIELDS


def reference_json(envelope: Envelope) -> bytes:
    """The signed bytes as they were first written: ``asdict``, ``organization_ids`` as a list."""
    data = dataclasses.asdict(envelope)
    data["organization_ids"] = list(envelope.organization_ids)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def envelope(**changes: Any) -> Envelope:
    fields: dict[str, Any] = {
        "id": Envelope.make_id("slack:body:abc", "us"),
        "idempotency_key": "slack:body:abc",
        "provider": "slack",
        "kind": "block_actions:approve",
        "region": "us",
        "body": 'payload=%7B%22type%22%3A%22block_actions%22%7D "caf\u00e9" \u2603',
        "headers": {"content-type": "application/x-www-form-urlencoded", "x-slack-retry-num": "1"},
        "strategy": "async",
        "organization_ids": ("101", "102"),
        "integration_id": "7",
        "control_response": {"handler": "loading_modal", "status": "opened", "nested": {"list": [1, (2, 3)]}},
        "installation": Authorization(installation_id="7", token="xoxb-secret", scopes=("chat:write",)).facts(),
        "trace": {"sentry-trace": "a" * 32 + "-" + "b" * 16 + "-1", "baggage": "sentry-environment=test"},
        "notification_id": "5b2f0c1e9d8a4b7c8e6f1a2b3c4d5e6f",
        "received_at": 1700000000.25,
        "created_at": 1700000001.5,
    }
    fields.update(changes)
    return Envelope(**fields)


def test_as_dict_names_every_field() -> None:
    assert list(envelope().as_dict()) == [field.name for field in dataclasses.fields(Envelope)]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"control_response": None, "installation": None, "trace": {}, "notification_id": None, "received_at": None},
        {"organization_ids": (), "integration_id": None, "body": ""},
        {"body": '\x00\x1f\u2028 \\ "', "headers": {}},
        *(changes for changes, _ in MALFORMED_FIELDS if "body" not in changes or isinstance(changes["body"], str)),
    ],
    ids=lambda changes: ",".join(changes) or "full",
)
def test_to_json_is_byte_for_byte_what_asdict_gave(changes: dict[str, Any]) -> None:
    try:
        expected = reference_json(envelope(**changes))
    except UnicodeEncodeError:  # a lone surrogate: neither serializes it
        with pytest.raises(UnicodeEncodeError):
            envelope(**changes).to_json()
        return
    assert envelope(**changes).to_json() == expected


def test_the_sealed_body_is_the_canonical_json() -> None:
    sealed = seal(envelope())
    assert sealed.body == reference_json(envelope())


def test_facts_are_every_field_but_the_token() -> None:
    authorization = Authorization(
        installation_id="7",
        token="xoxb-secret-token",
        team_id="T1",
        enterprise_id="E1",
        is_enterprise_install=True,
        app_id="A1",
        bot_id="B1",
        bot_user_id="U1",
        scopes=("chat:write", "commands"),
    )
    expected = dataclasses.asdict(authorization)
    del expected["token"]
    expected["scopes"] = ["chat:write", "commands"]
    facts = authorization.facts()
    assert facts == expected
    assert list(facts) == [field.name for field in dataclasses.fields(Authorization) if field.name != "token"]
    assert "xoxb-secret-token" not in json.dumps(facts)


def test_a_control_response_dict_is_every_field_with_the_status_as_text() -> None:
    answered = ControlResponse(
        handler="loading_modal",
        status=ControlResponseStatus.OPENED,
        view_id="V1",
        external_id="e1",
        hash="h1",
        error=None,
        elapsed_ms=12.5,
        installation_id="7",
    )
    expected = {**dataclasses.asdict(answered), "status": "opened"}
    assert answered.as_dict() == expected
    assert list(answered.as_dict()) == list(expected)
    assert type(answered.as_dict()["status"]) is str
