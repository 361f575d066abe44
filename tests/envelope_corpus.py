"""Validly signed envelopes whose fields are wrong: each must be refused with its reason.

Shared by the region receiver tests and the end-to-end forged-envelope test.
"""

from __future__ import annotations

from typing import Any

DEEP: dict[str, Any] = {"a": None}
for _ in range(200):  # deeper than a control response ever is, shallow enough to serialize
    DEEP = {"a": DEEP}

#: ``(changes to a good envelope's fields, the reason the region gives)``; all are 400.
MALFORMED_FIELDS: list[tuple[dict[str, Any], str]] = [
    ({"id": 5}, "malformed_envelope"),
    ({"id": "not-a-uuid"}, "malformed_envelope"),
    ({"idempotency_key": ["k"]}, "malformed_envelope"),
    ({"idempotency_key": "k\x00"}, "malformed_envelope"),
    ({"kind": "event_callback:\x00"}, "malformed_envelope"),
    ({"provider": {"x": 1}}, "malformed_envelope"),
    ({"provider": "github"}, "unknown_provider"),
    ({"kind": None}, "malformed_envelope"),
    ({"body": {"type": "event_callback"}}, "malformed_envelope"),
    ({"body": "\ud800"}, "malformed_envelope"),
    ({"body": "not json at all"}, "malformed_body"),
    ({"body": "[" * 100000 + "]" * 100000}, "malformed_body"),
    ({"headers": "content-type: application/json"}, "malformed_envelope"),
    ({"headers": {"content-type": 7}}, "malformed_envelope"),
    ({"strategy": 1}, "malformed_envelope"),
    ({"organization_ids": "101"}, "malformed_envelope"),
    ({"organization_ids": [101]}, "malformed_envelope"),
    ({"integration_id": 3}, "malformed_envelope"),
    ({"control_response": "opened"}, "malformed_envelope"),
    ({"control_response": [1]}, "malformed_envelope"),
    ({"control_response": DEEP}, "malformed_envelope"),
    ({"trace": "sentry-trace"}, "malformed_envelope"),
    ({"trace": {"sentry-trace": 1}}, "malformed_envelope"),
    ({"created_at": "yesterday"}, "malformed_envelope"),
    ({"created_at": True}, "malformed_envelope"),
    ({"version": True}, "unsupported_version"),
    ({"version": "1"}, "unsupported_version"),
    ({"version": 1.0}, "unsupported_version"),
    ({"version": 2}, "unsupported_version"),
    ({"region": 1}, "malformed_envelope"),
]

#: Raw bodies that are not JSON objects (validly signed); ``malformed_envelope``.
NOT_OBJECTS: list[bytes] = [
    b"[" * 100000 + b"]" * 100000,
    b'{"a":' * 50000 + b"1" + b"}" * 50000,
    b"\xff\xfe",
    b'"just a string"',
    b"null",
]
