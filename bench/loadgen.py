"""HTTP/1.1 keep-alive load generators for signed Slack requests: closed loop, and wrk.

Closed loop (``Segment``): each connection sends its next request when the previous
answer arrives; that measures throughput at saturation. ``run_wrk`` drives Debian's
``wrk`` with the same pre-signed bodies, fed by ``bench/wrk/signed_bodies.lua``: a C load
generator that costs far less CPU than this one. Requests at a fixed rate, whatever the
answers do (open loop), are bench/openloop.py's, built on this module's bodies and
connections.

A ``Client`` is a separate process (``multiprocessing``, spawn) that runs one segment
at a time on command: it builds and signs every request of the segment first (signing
is not measured), opens its keep-alive connections, then at an agreed instant sends a
warm-up for ``warmup`` seconds and measures for at most ``duration`` seconds or until
its share of ``max_requests`` is used, one request in flight per connection. Each
request is a unique ``block_actions`` body (fresh ``action_ts``, ``value`` and
``trigger_id``) signed with Slack's v0 scheme by ``slack_sdk``'s own signer.

Responses are parsed here (status line, headers, ``Content-Length`` or chunked body)
on raw sockets, which costs the client far less CPU than ``http.client`` or
``requests`` would on a machine it shares with the servers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import multiprocessing.connection
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

from slack_sdk.signature import SignatureVerifier

TEAM_ID = "T0US00001"
ACTION_ID = "resolve_dialog"
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "signed_bodies.lua"


@dataclasses.dataclass(frozen=True)
class Segment:
    """One measured run against one server, as each client process receives it."""

    label: str
    port: int
    path: str
    secret: str
    connections: int
    warmup: float
    duration: float
    #: This process's share of the request bound for the measured part (and the warm-up).
    max_requests: int
    max_warmup_requests: int
    #: Makes every body of the whole benchmark unique.
    tag: str


@dataclasses.dataclass
class SegmentResult:
    label: str
    started: float
    ended: float
    measured: int
    warmup_sent: int
    #: Status counts of the measured requests, and of the warm-up requests.
    statuses: dict[int, int]
    warmup_statuses: dict[int, int]
    errors: int
    samples: list[str]
    latencies: list[float]

    @property
    def sent(self) -> int:
        """Requests that reached the server (warm-up included): what a store must hold."""
        return self.measured + self.warmup_sent + self.errors


def block_actions_payload(*, trigger_id: str, value: str, action_ts: str, response_url: str) -> dict[str, Any]:
    """A realistic Slack block_actions payload (the shape Slack sends for a message button)."""
    return {
        "type": "block_actions",
        "user": {"id": "U0USER001", "username": "wile", "name": "wile", "team_id": TEAM_ID},
        "api_app_id": "A0APP0001",
        "token": "legacy-unused",
        "container": {
            "type": "message",
            "message_ts": "1700000000.000100",
            "channel_id": "C0CHAN001",
            "is_ephemeral": False,
        },
        "trigger_id": trigger_id,
        "team": {"id": TEAM_ID, "domain": "acme"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": "C0CHAN001", "name": "incidents"},
        "message": {
            "type": "message",
            "subtype": "bot_message",
            "text": "Issue ISSUE-1234: database connection pool exhausted",
            "ts": "1700000000.000100",
            "bot_id": "B0BOT0001",
            "blocks": [
                {
                    "type": "section",
                    "block_id": "summary",
                    "text": {
                        "type": "mrkdwn",
                        "text": "*ISSUE-1234* database connection pool exhausted\n3 events, 2 users",
                    },
                },
                {
                    "type": "actions",
                    "block_id": "b1",
                    "elements": [
                        {
                            "type": "button",
                            "action_id": ACTION_ID,
                            "text": {"type": "plain_text", "text": "Resolve"},
                            "value": "1234",
                        },
                        {
                            "type": "button",
                            "action_id": "archive_dialog",
                            "text": {"type": "plain_text", "text": "Archive"},
                            "value": "1234",
                        },
                    ],
                },
            ],
        },
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "type": "button",
                "action_id": ACTION_ID,
                "block_id": "b1",
                "text": {"type": "plain_text", "text": "Resolve"},
                "value": value,
                "action_ts": action_ts,
            }
        ],
    }


def form_body(payload: dict[str, Any]) -> bytes:
    """Slack's encoding of an interactivity payload: one urlencoded ``payload`` form field."""
    return urllib.parse.urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()


class BodyFactory:
    """Unique block_actions bodies, fast: the encoded form is built once with markers
    that each body replaces by its own values (checked against ``form_body``)."""

    _MARKERS = ("TRIGGERID", "VALUEVALUE", "ACTIONTS", "RESPONSEURL")

    def __init__(self, tag: str) -> None:
        self.tag = tag
        fields = ("trigger_id", "value", "action_ts", "response_url")
        marked = form_body(block_actions_payload(**{f: f"@@{m}@@" for f, m in zip(fields, self._MARKERS, strict=True)}))
        self.template = marked.decode()
        now = time.time()
        if self.body(0, now=now) != form_body(block_actions_payload(**self.values(0, now))):
            raise AssertionError("BodyFactory does not reproduce form_body")

    def values(self, index: int, now: float) -> dict[str, str]:
        return {
            "trigger_id": f"{int(now)}.{index}.{self.tag}",
            "value": f"1234:{self.tag}:{index}",
            "action_ts": f"{now:.6f}",
            "response_url": f"https://hooks.slack.com/actions/{TEAM_ID}/{index}/{self.tag}",
        }

    def body(self, index: int, *, now: float | None = None) -> bytes:
        text = self.template
        for marker, value in zip(
            self._MARKERS, self.values(index, time.time() if now is None else now).values(), strict=True
        ):
            text = text.replace(f"%40%40{marker}%40%40", urllib.parse.quote_plus(value), 1)
        return text.encode()


def signed_request(*, port: int, path: str, body: bytes, verifier: SignatureVerifier, timestamp: int) -> bytes:
    """The full HTTP/1.1 request bytes, signed for ``timestamp`` (Unix seconds)."""
    signature = verifier.generate_signature(timestamp=timestamp, body=body.decode())
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "User-Agent: Slackbot 1.0 (+https://api.slack.com/robots)\r\n"
        "Accept: */*\r\n"
        "Accept-Encoding: gzip,deflate\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Slack-Request-Timestamp: {timestamp}\r\n"
        f"X-Slack-Signature: {signature}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


class ResponseError(Exception):
    pass


def read_response(reader: Any) -> tuple[int, bytes, bool]:
    """Read one response from a buffered socket reader: (status, body, server keeps the connection)."""
    status_line = reader.readline(65537)
    if not status_line:
        raise ResponseError("connection closed before a response")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ResponseError(f"bad status line {status_line[:80]!r}")
    status = int(parts[1])
    length: int | None = None
    chunked = False
    keep_alive = parts[0] == b"HTTP/1.1"
    while True:
        line = reader.readline(65537)
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            keep_alive = value.strip().lower() != b"close"
    if chunked:
        chunks = []
        while True:
            size = int(reader.readline(65537).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while reader.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunks.append(reader.read(size))
            reader.readline(65537)
        body = b"".join(chunks)
    elif length is not None:
        body = reader.read(length)
    else:  # read to close
        body = reader.read()
        keep_alive = False
    return status, body, keep_alive


class Connection:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.reader: Any = None

    def open(self) -> None:
        self.close()
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.reader = sock.makefile("rb", buffering=65536)

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.reader.close()
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.reader = None

    def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self.sock is None:
            self.open()
        assert self.sock is not None
        self.sock.sendall(request)
        status, body, keep_alive = read_response(self.reader)
        if not keep_alive:
            self.close()
        return status, body


def run_segment(
    segment: Segment, start_at: float, prepared: tuple[list[bytes], list[bytes]], conns: list[Connection]
) -> SegmentResult:
    """Drive ``conns`` from ``start_at`` (a ``time.monotonic()`` instant shared by all processes)."""
    warm_requests, requests = prepared
    warm_end = start_at + segment.warmup
    measure_end = warm_end + segment.duration
    warm_iter = iter(warm_requests)
    measure_iter = iter(requests)  # next() on a list iterator is atomic under the GIL
    lock = threading.Lock()
    statuses: Counter[int] = Counter()
    warm_statuses: Counter[int] = Counter()
    samples: list[str] = []
    errors = [0]
    warmup_sent = [0]
    last_done = [warm_end]
    per_thread_latencies: list[list[float]] = [[] for _ in conns]

    def record(status: int, body: bytes) -> None:
        if status != 200 and len(samples) < 5:
            samples.append(f"{status} {body[:200]!r}")

    def worker(conn: Connection, latencies: list[float]) -> None:
        local_status: Counter[int] = Counter()
        local_warm_status: Counter[int] = Counter()
        local_warm = 0
        local_errors = 0
        done = warm_end
        while time.monotonic() < start_at:
            time.sleep(0.0005)
        # Warm-up: not measured, but every body is real (the silo_router store counts them).
        while time.monotonic() < warm_end:
            request = next(warm_iter, None)
            if request is None:
                break
            try:
                status, body = conn.exchange(request)
            except (OSError, ResponseError):
                local_errors += 1
                conn.close()
                continue
            local_warm += 1
            local_warm_status[status] += 1
            if status != 200:
                with lock:
                    record(status, body)
        while True:
            now = time.monotonic()
            if now >= measure_end:
                break
            request = next(measure_iter, None)
            if request is None:
                break
            began = time.perf_counter()
            try:
                status, body = conn.exchange(request)
            except (OSError, ResponseError):
                local_errors += 1
                conn.close()
                continue
            latencies.append(time.perf_counter() - began)
            done = time.monotonic()
            local_status[status] += 1
            if status != 200:
                with lock:
                    record(status, body)
        with lock:
            statuses.update(local_status)
            warm_statuses.update(local_warm_status)
            errors[0] += local_errors
            warmup_sent[0] += local_warm
            last_done[0] = max(last_done[0], done)

    threads = [
        threading.Thread(target=worker, args=(c, lat), daemon=True)
        for c, lat in zip(conns, per_thread_latencies, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for conn in conns:
        conn.close()
    latencies = [x for lat in per_thread_latencies for x in lat]
    return SegmentResult(
        label=segment.label,
        started=warm_end,
        ended=last_done[0],
        measured=len(latencies),
        warmup_sent=warmup_sent[0],
        statuses=dict(statuses),
        warmup_statuses=dict(warm_statuses),
        errors=errors[0],
        samples=samples,
        latencies=latencies,
    )


def client_main(pipe: multiprocessing.connection.Connection, index: int) -> None:
    """The client process: prepare a segment, report ready, run it when told, report the result."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; it stops us
    verifier_cache: dict[str, SignatureVerifier] = {}
    while True:
        message = pipe.recv()
        if message is None:
            return
        verifier = verifier_cache.setdefault(message.secret, SignatureVerifier(message.secret))
        segment: Segment = message
        warm_bodies = BodyFactory(f"{segment.tag}p{index}w")
        bodies = BodyFactory(f"{segment.tag}p{index}m")
        # Bodies are signed before the clock starts, so a timestamp of "now" would make
        # the last requests of a run look seconds old, and the server would believe most
        # of Slack's 3-second window already spent (silo_router estimates the time in
        # transit from this header). Signing for the second the run ends keeps every
        # request fresh: a timestamp slightly ahead reads as no time in transit, and is
        # well inside the 5-minute tolerance of every verifier.
        fresh_until = int(time.time() + segment.warmup + segment.duration) + 5
        warm = [
            signed_request(
                port=segment.port, path=segment.path, body=warm_bodies.body(i), verifier=verifier, timestamp=fresh_until
            )
            for i in range(segment.max_warmup_requests)
        ]
        requests = [
            signed_request(
                port=segment.port, path=segment.path, body=bodies.body(i), verifier=verifier, timestamp=fresh_until
            )
            for i in range(segment.max_requests)
        ]
        conns = [Connection(segment.port) for _ in range(segment.connections)]
        try:
            for conn in conns:
                conn.open()
        except OSError as exc:
            pipe.send(("error", f"cannot connect to 127.0.0.1:{segment.port}: {exc}"))
            continue
        pipe.send(("ready", len(bodies.body(0))))
        start_at = pipe.recv()
        try:
            result = run_segment(segment, start_at, (warm, requests), conns)
        except Exception as exc:  # report, do not hang the driver
            pipe.send(("error", repr(exc)))
            continue
        pipe.send(("done", result))


class ClientPool:
    """``processes`` client processes that run segments together."""

    def __init__(self, processes: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pipes: list[multiprocessing.connection.Connection] = []
        self.procs: list[Any] = []
        for index in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=client_main, args=(child, index), name=f"loadgen-{index}", daemon=True)
            proc.start()
            child.close()
            self.pipes.append(parent)
            self.procs.append(proc)

    def run(self, segment_for: Any, timeout: float) -> tuple[list[Any], int]:
        """Run one segment on every process; ``segment_for(i)`` gives process i's share."""
        for index, pipe in enumerate(self.pipes):
            pipe.send(segment_for(index))
        body_size = 0
        for pipe in self.pipes:
            kind, value = self._recv(pipe, timeout)
            if kind != "ready":
                raise RuntimeError(f"load generator: {value}")
            body_size = value
        start_at = time.monotonic() + 0.05
        for pipe in self.pipes:
            pipe.send(start_at)
        results = []
        for pipe in self.pipes:
            kind, value = self._recv(pipe, timeout)
            if kind != "done":
                raise RuntimeError(f"load generator: {value}")
            results.append(value)
        return results, body_size

    @staticmethod
    def _recv(pipe: multiprocessing.connection.Connection, timeout: float) -> Any:
        if not pipe.poll(timeout):
            raise RuntimeError(f"load generator did not answer within {timeout:.0f}s")
        return pipe.recv()

    def close(self) -> None:
        for pipe in self.pipes:
            try:
                pipe.send(None)
            except OSError:
                pass
        for proc in self.procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)


# -- wrk -------------------------------------------------------------------------------


@dataclasses.dataclass
class WrkResult:
    """What ``bench/wrk/signed_bodies.lua`` reported for one wrk run."""

    #: Signed bodies written to the server, and their answers read (those in flight when wrk stopped are not).
    sent: int
    answered: int
    #: From the first request sent to the last answer read.
    seconds: float
    #: Answers to GET /healthz: the check's request, or a thread's that had used all its bodies.
    spare: int
    #: wrk threads that used all their bodies before the run's end (the bound was too low).
    exhausted_threads: int
    non200: int
    errors: dict[str, int]
    latency_us: dict[str, float]
    samples: list[str]
    body_bytes: int

    @property
    def answered_bodies(self) -> int:
        return self.answered


def wrk_binary() -> str | None:
    """wrk's path, or None (``tools/install-bench-tools.sh`` installs Debian's package)."""
    return shutil.which("wrk")


def write_signed_bodies(prefix: Path, *, threads: int, count: int, tag: str, secret: str, timestamp: int) -> int:
    """``count`` unique signed bodies for each of ``threads`` files ``<prefix><i>.txt``; returns one body's size.

    Every thread gets the whole bound: wrk's threads do not share the load evenly on a busy machine.
    """
    verifier = SignatureVerifier(secret)
    factory = BodyFactory(tag)
    files = [open(f"{prefix}{i}.txt", "w") for i in range(threads)]  # noqa: SIM115
    size = 0
    try:
        for index in range(count * threads):
            body = factory.body(index).decode()
            size = len(body)
            signature = verifier.generate_signature(timestamp=timestamp, body=body)
            files[index % threads].write(f"{timestamp} {signature} {body}\n")
    finally:
        for file in files:
            file.close()
    return size


def run_wrk(
    *, port: int, path: str, secret: str, connections: int, duration: float, max_requests: int, tag: str,
    work_dir: Path, threads: int = 2,
) -> WrkResult:  # fmt: skip
    """One wrk run of ``duration`` seconds over ``connections`` keep-alive connections, at most ``max_requests``
    per wrk thread."""
    binary = wrk_binary()
    if binary is None:
        raise RuntimeError("wrk is not installed: run bash tools/install-bench-tools.sh")
    threads = max(1, min(threads, connections))
    prefix = work_dir / f"bodies-{tag}-"
    # Signed for the second the run ends, like the Python generator's bodies: none looks old.
    timestamp = int(time.time() + duration) + 5
    size = write_signed_bodies(prefix, threads=threads, count=max_requests, tag=tag, secret=secret, timestamp=timestamp)
    command = [
        binary, f"-t{threads}", f"-c{connections}", f"-d{max(1, math.ceil(duration))}s", "--timeout", "30s",
        "-s", str(WRK_SCRIPT), f"http://127.0.0.1:{port}", "--", str(prefix), path,
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    finally:
        for index in range(threads):
            Path(f"{prefix}{index}.txt").unlink(missing_ok=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("WRK_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    data = json.loads(line.removeprefix("WRK_RESULT "))
    errors = dict(data["errors"])
    errors.pop("status", None)  # non-2xx answers: counted as non200 by the script
    return WrkResult(
        sent=int(data["sent"]),
        answered=int(data["answered"]),
        seconds=float(data["window_s"]),
        spare=int(data["spare"]),
        exhausted_threads=int(data["exhausted_threads"]),
        non200=int(data["non200"]),
        errors=errors,
        latency_us={str(k): float(v) for k, v in data["latency_us"].items()},
        samples=[x.strip() for x in data["samples"].split(" ;; ") if x.strip()][:5],
        body_bytes=size,
    )
