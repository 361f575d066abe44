"""Bad input through real gunicorn: no 5xx, nothing acknowledged that was not stored, chunked and slow bodies.

The malformed corpus is generated here from a few valid Slack requests: wrong types in
every id field, huge and tiny values, bad UTF-8, surrogates, NUL, deep JSON, duplicate
keys, wrong content types, missing headers, chunked bodies, wrong methods. Each is sent
signed and unsigned, through control's public port (the buffering proxy) and to
gunicorn directly.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from example_project.cluster import Cluster

from .conftest import started
from .helpers import FORM, JSON, US_TEAM, query

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A cluster of this module's own: the corpus stores hundreds of payloads that find no
    handler and are retried, which must not slow the other end-to-end tests' deliveries."""
    running = started(tmp_path_factory.mktemp("bad-input-cluster") / "var")
    try:
        yield running
    finally:
        running.stop()


SLACK_PATH = "/extensions/slack/"
#: Seconds a normal request may take to be answered while slow clients hold connections.
ANSWER_DEADLINE = 5.0
#: Connections that send their body slowly (gunicorn serves control with 1 worker x 2 threads).
SLOW_CLIENTS = 3
#: Deeper than any parser limit, and than Python's recursion limit.
VERY_DEEP = 5000
#: A depth just past the library's limit.
PAST_THE_LIMIT = 65
CONTROL_ONLY = {"url_verification", "ssl_check", "app_rate_limited"}
WRONG_VALUES: list[Any] = [
    None,
    0,
    -1,
    2**70,
    1.5,
    True,
    [],
    {},
    "",
    "x" * 100_000,
    "\ud800",
    "\udfff tail",
    "nul\x00inside",
    "\u202e\ufeff",
    {"id": "\ud800"},
    ["T0US00001"],
]


@dataclass
class Attempt:
    """One request of the corpus."""

    label: str
    body: bytes
    content_type: str | None = FORM
    method: str = "POST"
    signed: bool = True
    chunked: bool = False
    headers: dict[str, str] = field(default_factory=dict)


def block_actions(**extra: Any) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "team": {"id": US_TEAM, "domain": "acme"},
        "user": {"id": "U0USER001", "team_id": US_TEAM},
        "api_app_id": "A0APP0001",
        "trigger_id": "1.2.bad-input",
        "channel": {"id": "C0CHAN001"},
        "actions": [{"type": "button", "action_id": "noop_button", "block_id": "b1", "value": "v"}],
        **extra,
    }


def event(**extra: Any) -> dict[str, Any]:
    return {
        "type": "event_callback",
        "team_id": US_TEAM,
        "api_app_id": "A0APP0001",
        "event_id": "EvBADINPUT",
        "event": {"type": "reaction_added", "user": "U0USER001", "item": {"channel": "C0CHAN001"}},
        **extra,
    }


def command(**extra: str) -> dict[str, str]:
    return {"command": "/noop", "team_id": US_TEAM, "user_id": "U0USER001", "channel_id": "C1", "text": "hi", **extra}


DEEP = "__deep__"


def deep_json(data: dict[str, Any], depth: int) -> str:
    """``data`` as JSON with its ``DEEP`` value replaced by ``depth`` nested arrays (built as text)."""
    return json.dumps(data).replace(json.dumps(DEEP), "[" * depth + "1" + "]" * depth)


def with_path(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``data`` with ``path`` (dotted; ``0`` indexes a list) set to ``value``."""
    copy = json.loads(json.dumps(data))
    target: Any = copy
    *parents, leaf = path.split(".")
    for key in parents:
        target = target[int(key)] if isinstance(target, list) else target.setdefault(key, {})
    if isinstance(target, list):
        target[int(leaf)] = value
    else:
        target[leaf] = value
    return copy


def interactive(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def corpus() -> Iterator[Attempt]:
    """The generated corpus (signed variants; unsigned copies are added by the test)."""
    interactive_paths = [
        "type", "team", "team.id", "user", "user.id", "user.team_id", "api_app_id", "trigger_id", "channel",
        "channel.id", "actions", "actions.0", "actions.0.action_id", "actions.0.value", "enterprise",
        "enterprise.id", "is_enterprise_install", "authorizations", "view", "view.private_metadata",
        "response_url", "container",
    ]  # fmt: skip
    for path in interactive_paths:
        for index, value in enumerate(WRONG_VALUES):
            yield Attempt(f"block_actions {path} #{index}", interactive(with_path(block_actions(), path, value)))
    event_paths = [
        "type", "team_id", "api_app_id", "event_id", "event", "event.type", "event.user", "event.channel",
        "event.team", "authorizations", "authorizations.0", "enterprise_id", "is_enterprise_install",
    ]  # fmt: skip
    for path in event_paths:
        for index, value in enumerate(WRONG_VALUES):
            # Each its own event_id: one id sent twice is a retry, acknowledged without a second row.
            mutated = with_path(event(event_id=f"EvBad-{path}-{index}"), path, value)
            yield Attempt(f"event {path} #{index}", json.dumps(mutated).encode(), JSON)
    for key in ("command", "team_id", "user_id", "channel_id", "enterprise_id", "is_enterprise_install"):
        for label, value in (("empty", ""), ("nul", "\x00"), ("huge", "x" * 50_000), ("spaces", " / ")):
            yield Attempt(f"command {key} {label}", urlencode(command(**{key: value})).encode())
    valid_event = json.dumps(event(event_id="EvBADINPUTOK")).encode()
    yield from [
        Attempt("valid event", valid_event, JSON),
        Attempt("valid event chunked", json.dumps(event(event_id="EvBADCHUNK1")).encode(), JSON, chunked=True),
        Attempt("valid action chunked", interactive(block_actions(trigger_id="1.2.chunked")), chunked=True),
        Attempt("deep event past the limit", deep_json(event(x=DEEP), PAST_THE_LIMIT).encode(), JSON),
        Attempt("very deep event", deep_json(event(x=DEEP), VERY_DEEP).encode(), JSON),
        Attempt("very deep raw", b"[" * VERY_DEEP + b"]" * VERY_DEEP, JSON),
        Attempt("deep payload", urlencode({"payload": deep_json(block_actions(x=DEEP), VERY_DEEP)}).encode()),
        Attempt("duplicate type keys", b'{"type":"event_callback","type":"url_verification","challenge":"c"}', JSON),
        Attempt("duplicate event_id", valid_event[:-1] + b',"event_id":"EvOTHER"}', JSON),
        Attempt("duplicate payload fields", interactive(block_actions()) + b"&" + interactive(event())),
        Attempt("bad utf-8", b'{"type":"event_callback","team_id":"\xff\xfe"}', JSON),
        Attempt("overlong utf-8", b'{"type":"event_callback","x":"\xc0\xaf"}', JSON),
        Attempt("encoded surrogate bytes", b'{"type":"event_callback","x":"\xed\xa0\x80"}', JSON),
        Attempt("bom", b"\xef\xbb\xbf" + valid_event, JSON),
        Attempt("empty body", b"", JSON),
        Attempt("empty form", b"", FORM),
        Attempt("null", b"null", JSON),
        Attempt("array", b"[1,2,3]", JSON),
        Attempt("string", b'"event_callback"', JSON),
        Attempt("json as form", valid_event, FORM),
        Attempt("form as json", interactive(block_actions()), JSON),
        Attempt("text/plain json", valid_event, "text/plain"),
        Attempt(
            "multipart",
            b"--x\r\nContent-Disposition: form-data; name=payload\r\n\r\n{}\r\n--x--",
            "multipart/form-data; boundary=x",
        ),
        Attempt("no content type", valid_event, None),
        Attempt("bad percent escape", b"payload=%zz%7B", FORM),
        Attempt("percent-encoded surrogate", b"command=%2Fx&team_id=%ED%A0%80", FORM),
        Attempt("percent-encoded nul", b"command=%2Fx&team_id=T%00", FORM),
        Attempt("too many fields", "&".join(f"f{i}=1" for i in range(1500)).encode(), FORM),
        Attempt("payload not json", b"payload=%7Boops", FORM),
        Attempt("payload empty", b"payload=", FORM),
        Attempt("unknown json type", json.dumps({"type": "brand_new", "team_id": US_TEAM}).encode(), JSON),
        Attempt("unknown payload type", interactive({"type": "brand_new", "team": {"id": US_TEAM}})),
        Attempt("event without event_id", json.dumps({**event(), "event_id": None}).encode(), JSON),
        Attempt("url_verification", json.dumps({"type": "url_verification", "challenge": "c"}).encode(), JSON),
        Attempt(
            "url_verification bad challenge", json.dumps({"type": "url_verification", "challenge": {}}).encode(), JSON
        ),
        Attempt("ssl_check", b"ssl_check=1&token=x", FORM),
        Attempt("unknown team", interactive(block_actions(team={"id": "T0NOBODY9"}))),
        Attempt(
            "options load", interactive({**block_actions(), "type": "block_suggestion", "action_id": "pick_issue"})
        ),
        Attempt(
            "view submission", interactive({**block_actions(), "type": "view_submission", "view": {"callback_id": "x"}})
        ),
        Attempt("over the size limit", b"x" * (1024 * 1024 + 1), FORM),
        Attempt("missing timestamp", valid_event, JSON, headers={"X-Slack-Request-Timestamp": ""}),
        Attempt("timestamp not a number", valid_event, JSON, headers={"X-Slack-Request-Timestamp": "abc"}),
        Attempt("timestamp huge", valid_event, JSON, headers={"X-Slack-Request-Timestamp": "9" * 40}),
        Attempt("timestamp negative", valid_event, JSON, headers={"X-Slack-Request-Timestamp": "-5"}),
        Attempt("signature garbage", valid_event, JSON, headers={"X-Slack-Signature": "v0=zz"}),
        Attempt("signature huge", valid_event, JSON, headers={"X-Slack-Signature": "v0=" + "a" * 10_000}),
        Attempt("content-length not a number", valid_event, JSON, headers={"Content-Length": "ten"}),
    ]
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"):
        yield Attempt(f"method {method}", valid_event, JSON, method=method)


def signed_headers(secret: str, body: bytes) -> dict[str, str]:
    timestamp = str(int(time.time()))
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}"}


def send(base_url: str, attempt: Attempt, *, secret: str) -> tuple[int, bytes]:
    """Send ``attempt`` and return the status and body of the answer."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    headers = signed_headers(secret, attempt.body) if attempt.signed else {}
    if attempt.content_type is not None:
        headers["Content-Type"] = attempt.content_type
    headers.update(attempt.headers)
    try:
        if attempt.chunked:
            chunks = [attempt.body[i : i + 100] for i in range(0, len(attempt.body), 100)]
            connection.request(attempt.method, SLACK_PATH, body=iter(chunks), headers=headers, encode_chunked=True)
        else:
            connection.putrequest(attempt.method, SLACK_PATH, skip_accept_encoding=True)
            if "Content-Length" not in headers:
                headers["Content-Length"] = str(len(attempt.body))
            for name, value in headers.items():
                if value:
                    connection.putheader(name, value)
            connection.endheaders(attempt.body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def stored_bodies(cluster: Cluster) -> set[str]:
    rows = query(cluster.control_db, "SELECT envelope FROM silo_router_control_payload")
    return {json.loads(envelope)["body"] for (envelope,) in rows}


def control_only(body: bytes) -> bool:
    """Whether control answers ``body`` itself (nothing is stored for it)."""
    try:
        text = body.decode()
        data = json.loads(text) if text.lstrip().startswith("{") else {}
    except ValueError:
        return b"ssl_check=1" in body
    return (isinstance(data, dict) and data.get("type") in CONTROL_ONLY) or b"ssl_check=1" in body


@pytest.mark.parametrize("entry", ["proxy", "gunicorn"])
def test_the_malformed_corpus_gets_no_5xx_and_every_2xx_is_stored(cluster: Cluster, entry: str) -> None:
    base_url = cluster.control_url if entry == "proxy" else cluster.control_app_url
    attempts = [Attempt(**{**a.__dict__, "signed": signed}) for a in corpus() for signed in (True, False)]
    server_errors: list[str] = []
    acknowledged: list[Attempt] = []
    statuses: dict[int, int] = {}
    for attempt in attempts:
        status, body = send(base_url, attempt, secret=cluster.signing_secret)
        statuses[status] = statuses.get(status, 0) + 1
        if status >= 500:
            server_errors.append(f"{attempt.label} (signed={attempt.signed}): {status} {body[:200]!r}")
        elif 200 <= status < 300 and attempt.method == "POST" and not control_only(attempt.body):
            acknowledged.append(attempt)
            assert attempt.signed, f"{attempt.label}: acknowledged without a signature"
    assert server_errors == [], f"{len(server_errors)} of {len(attempts)} answered 5xx"
    stored = stored_bodies(cluster)
    lost = [a.label for a in acknowledged if a.body.decode() not in stored]
    assert lost == [], "acknowledged but not stored"
    assert acknowledged, "the corpus has valid requests: some must be acknowledged"
    assert statuses.get(401, 0) >= len(attempts) // 3  # unsigned ones are refused


def raw_request(base_url: str, head: bytes, body: bytes = b"", *, shutdown: bool = False) -> tuple[int, bytes]:
    """Send bytes as they are; ``shutdown``: close our side after them (a client that went away)."""
    address = urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        sock.sendall(head + body)
        if shutdown:
            sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1]) if answer else 0
    return status, answer


def signed_head(cluster: Cluster, body: bytes, *, length: int | None, chunked: bool = False) -> bytes:
    headers = signed_headers(cluster.signing_secret, body)
    lines = [f"POST {SLACK_PATH} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {JSON}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def chunked(body: bytes, size: int = 7) -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


@pytest.mark.parametrize("entry", ["proxy", "gunicorn"])
def test_a_chunked_body_is_read_whole_not_as_empty(cluster: Cluster, entry: str) -> None:
    base_url = cluster.control_url if entry == "proxy" else cluster.control_app_url
    body = json.dumps(event(event_id=f"EvCHUNKED{entry.upper()}")).encode()
    status, answer = raw_request(base_url, signed_head(cluster, body, length=None, chunked=True), chunked(body))
    assert status == 200, answer[:300]
    assert body.decode() in stored_bodies(cluster)


def test_a_client_that_goes_away_mid_body_is_a_400_not_a_500(cluster: Cluster) -> None:
    body = json.dumps(event(event_id="EvHALFBODY")).encode()
    head = signed_head(cluster, body, length=len(body))
    status, answer = raw_request(cluster.control_app_url, head, body[: len(body) // 2], shutdown=True)
    assert status == 400, answer[:300]
    assert b"incomplete_body" in answer


def test_three_slow_bodies_do_not_stop_a_normal_request(cluster: Cluster) -> None:
    """Slow clients hold the proxy's sockets, never gunicorn's threads."""
    address = urlsplit(cluster.control_url)
    slow: list[socket.socket] = []
    try:
        for number in range(SLOW_CLIENTS):
            body = json.dumps(event(event_id=f"EvSLOW{number}")).encode()
            sock = socket.create_connection((address.hostname, address.port), timeout=30)
            sock.sendall(signed_head(cluster, body, length=len(body)) + body[:10])  # and then nothing
            slow.append(sock)
        body = json.dumps(event(event_id="EvNOTSLOW")).encode()
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=ANSWER_DEADLINE)
        try:
            headers = {**signed_headers(cluster.signing_secret, body), "Content-Type": JSON}
            connection.request("POST", SLACK_PATH, body=body, headers=headers)
            assert connection.getresponse().status == 200
        finally:
            connection.close()
    finally:
        for sock in slow:
            sock.close()


def test_a_request_without_content_length_or_body_is_not_a_5xx(cluster: Cluster) -> None:
    head = signed_head(cluster, b"", length=None)
    status, _ = raw_request(cluster.control_app_url, head)
    assert 400 <= status < 500
