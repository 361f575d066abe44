"""Forged and malformed envelopes posted straight to real region silos under gunicorn.

Whatever reaches a region's envelope endpoint, signed or not, gets a 4xx with a reason
(never a 5xx), and nothing but a correctly signed envelope for that region runs.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
import requests

from example_project.cluster import Cluster
from silo_router import signing

from ..envelope_corpus import MALFORMED_FIELDS, NOT_OBJECTS
from .helpers import US_TEAM, processed

pytestmark = pytest.mark.e2e

ENVELOPES = "/silo-router/envelopes/"
REGIONS = ("us", "eu")


#: An event the example project has no handler for: a genuine envelope runs nothing and
#: records nothing, so the shared cluster keeps only records of payloads control stored.
UNHANDLED_EVENT = "reaction_added"


def good_fields(region: str, event_id: str) -> dict[str, Any]:
    key = f"slack:event:{event_id}"
    event = {"type": "event_callback", "team_id": US_TEAM, "event_id": event_id, "event": {"type": UNHANDLED_EVENT}}
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{key}|{region}")),
        "idempotency_key": key,
        "provider": "slack",
        "kind": f"event_callback:{UNHANDLED_EVENT}",
        "region": region,
        "body": json.dumps(event),
        "headers": {"content-type": "application/json"},
        "strategy": "async",
        "organization_ids": ["101"],
        "integration_id": None,
        "control_response": None,
        "trace": {},
        "created_at": time.time(),
        "version": 1,
    }


def post(cluster: Cluster, region: str, body: bytes, signature: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers[signing.HEADER] = signature
    return requests.post(cluster.region_url(region) + ENVELOPES, data=body, headers=headers, timeout=30)


def forgeries(cluster: Cluster, region: str) -> list[tuple[str, bytes, str | None]]:
    """``(what, body, signature)`` of envelopes region ``region`` must refuse."""
    own_id, own_key = cluster.hop_key(region)
    other = next(r for r in REGIONS if r != region)
    other_id, other_key = cluster.hop_key(other)
    body = json.dumps(good_fields(region, f"EvForged{region}")).encode()
    for_other = json.dumps(good_fields(other, f"EvMisaddressed{region}")).encode()
    for_nobody = json.dumps(good_fields("", f"EvNobody{region}")).encode()
    cases: list[tuple[str, bytes, str | None]] = [
        ("unsigned", body, None),
        ("malformed header", body, "t=1,kid=x,v1=zz"),
        ("a made-up key", body, signing.sign(body, key_id=own_id, key="attacker-" + "x" * 40)),
        ("another region's key", body, signing.sign(body, key_id=other_id, key=other_key)),
        ("another region's key under this key id", body, signing.sign(body, key_id=own_id, key=other_key)),
        ("stale", body, signing.sign(body, key_id=own_id, key=own_key, timestamp=time.time() - 3600)),
        ("from the future", body, signing.sign(body, key_id=own_id, key=own_key, timestamp=time.time() + 3600)),
        ("for another region", for_other, signing.sign(for_other, key_id=own_id, key=own_key)),
        ("for no region", for_nobody, signing.sign(for_nobody, key_id=own_id, key=own_key)),
        ("tampered after signing", body.replace(b'"async"', b'"sync"'), signing.sign(body, key_id=own_id, key=own_key)),
    ]
    for n, (change, reason) in enumerate(MALFORMED_FIELDS):
        fields = {**good_fields(region, f"EvMalformed{region}{n}"), **change}
        raw = json.dumps(fields).encode()
        cases.append((f"signed, {reason}: {sorted(change)}", raw, signing.sign(raw, key_id=own_id, key=own_key)))
    for n, raw in enumerate(NOT_OBJECTS):
        cases.append((f"signed, not an object #{n}", raw, signing.sign(raw, key_id=own_id, key=own_key)))
    return cases


@pytest.mark.parametrize("region", REGIONS)
def test_forged_and_malformed_envelopes_get_a_4xx_and_run_nothing(cluster: Cluster, region: str) -> None:
    before = processed(cluster, region)
    server_errors: list[str] = []
    accepted: list[str] = []
    for what, body, signature in forgeries(cluster, region):
        response = post(cluster, region, body, signature)
        if response.status_code >= 500:
            server_errors.append(f"{what}: {response.status_code}")
        elif response.status_code < 400:
            accepted.append(f"{what}: {response.status_code} {response.text[:80]}")
        else:
            assert response.json()["error"], what  # a reason, always
    assert server_errors == []
    assert accepted == []
    assert processed(cluster, region) == before


@pytest.mark.parametrize("region", REGIONS)
def test_a_correctly_signed_envelope_is_still_accepted(cluster: Cluster, region: str) -> None:
    key_id, key = cluster.hop_key(region)
    body = json.dumps(good_fields(region, f"EvGenuine{region}{uuid.uuid4().hex[:8]}")).encode()
    response = post(cluster, region, body, signing.sign(body, key_id=key_id, key=key))
    assert response.status_code == 200
    assert response.content[:1] == b" "  # accepted before the handler ran
    assert json.loads(response.content)["outcome"] == "unhandled"


def test_an_envelope_too_large_for_any_body_is_413(cluster: Cluster) -> None:
    key_id, key = cluster.hop_key("us")
    body = b'{"padding": "' + b"x" * (8 * 1024 * 1024) + b'"}'
    response = post(cluster, "us", body, signing.sign(body, key_id=key_id, key=key))
    assert response.status_code == 413
    assert response.json()["error"] == "envelope_too_large"
