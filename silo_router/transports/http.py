"""HTTP transport: POST the sealed envelope to the region's receiver endpoint.

``timeout`` is a total deadline for connect, send and every read: a watchdog shuts the
socket down when it passes, so a region that dribbles its answer a byte at a time costs
no more than ``timeout``. The region answers an accepted envelope with a leading space
before running the handler; that first byte must come within ``CONNECT_TIMEOUT``
(a region that does not answer is unwell), while a timeout after it means a slow
handler, which is not the region's fault.

Several envelopes of one region go in one POST to the batch endpoint beside it (the URL
followed by ``batch/``), as ``{"envelopes": [{"body", "signature", "attempt", "replays"}]}``:
each envelope keeps its own signature, so the region verifies, refuses and answers each
one alone. The region answers the accepted marker once it has read and verified the
batch, then one receipt line per envelope, in order, as each handler finishes. A region
without the endpoint (404, 405) or an ingress that refuses the size (413) gets the
envelopes one by one instead; after a 404 or 405 the endpoint is tried again only after
``BATCH_RETRY_AFTER`` seconds.

The request carries the attempt's :class:`~.base.Hop` as headers (``sentry-trace``,
``baggage``, ``traceparent``, ``tracestate``, the attempt number), so the region's run
is the child of the attempt in its trace. Each trace header goes out once: when
sentry-sdk's ``http.client`` integration is on it writes its own ``sentry-trace`` and
``baggage`` first (those of its span under the attempt), and the attempt's stay out.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

from silo_router import signing
from silo_router.envelope import Outcome, Receipt, SealedEnvelope
from silo_router.exceptions import SiloRouterConfigurationError

from .base import (
    TRACE_HEADERS,
    BatchResult,
    DeliveryError,
    DeliveryTimeout,
    Hop,
    NotSent,
    Transport,
    delivering_batch,
)

logger = logging.getLogger("silo_router.transports")

#: Statuses after which another attempt at this envelope is pointless: it was refused.
TERMINAL_STATUSES = frozenset({400, 409, 410, 413, 415, 422})
#: Statuses that say the hop is misconfigured for every envelope, so control holds the
#: region's traffic: 404/405 from an ingress that does not route to the endpoint (mid-deploy,
#: say) and 401/403 (a key rotated in the wrong order, clock skew, a wrong region; from an
#: authenticating proxy in front of the region, too). A 400 ``unsupported_version`` holds as well.
HOLD_STATUSES = frozenset({404, 405})
SIGNATURE_STATUSES = frozenset({401, 403})
DEFAULT_CONNECT_TIMEOUT = 2.0
#: How much of an error answer is read (its JSON reason); the rest is dropped.
MAX_ERROR_BODY = 64 * 1024
#: Receipts are small; a region answering more than this is not a silo_router region.
MAX_RECEIPT_SIZE = 16 * 1024 * 1024
_READ_CHUNK = 64 * 1024
_KNOWN_OUTCOMES = frozenset(Outcome)
#: The batch endpoint, relative to the envelope endpoint's URL.
BATCH_PATH = "batch/"
#: Most envelopes one batch may carry, and most bytes its body may have (the region enforces both).
BATCH_MAX_ENVELOPES = 100
BATCH_MAX_BYTES = 8 * 1024 * 1024
#: Seconds a region whose batch endpoint answered 404 or 405 gets envelopes one by one before it is tried again.
BATCH_RETRY_AFTER = 300.0
#: Statuses of the batch endpoint that say it is not there: its envelopes go one by one, for a while.
BATCH_UNSUPPORTED_STATUSES = frozenset({404, 405})
#: Statuses that refuse the batch as a whole (too large for an ingress, a framing this region does not
#: read): its envelopes go one by one, each answered for itself.
BATCH_REFUSED_STATUSES = frozenset({400, 411, 413, 415, 422})


class _BatchNotTaken(Exception):
    """The batch endpoint did not take the batch (absent, or the batch refused as a whole): send one by one."""

    def __init__(self, status: int) -> None:
        super().__init__(f"http_{status}")
        self.status = status


def _retry_after(response: http.client.HTTPResponse) -> float | None:
    """``Retry-After`` in seconds as the region sent it (control caps it with ``RETRY_AFTER_MAX``)."""
    try:
        return max(float(response.headers["Retry-After"]), 0.0)
    except (KeyError, TypeError, ValueError):
        return None


class _Watchdog:
    """Shuts a socket down at a deadline, which ends any blocking read or write on it."""

    def __init__(self, sock: socket.socket | None) -> None:
        self._sock = sock
        self._timer: threading.Timer | None = None
        self.fired = False
        self._lock = threading.Lock()

    def arm(self, seconds: float) -> None:
        self.disarm()
        timer = threading.Timer(max(seconds, 0.0), self._fire)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self.fired:
                self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Connection(http.client.HTTPConnection):
    """An HTTP connection that sends each trace header once per request (the first value wins)."""

    _trace_headers_sent: set[str]

    def putrequest(self, method: str, url: str, skip_host: bool = False, skip_accept_encoding: bool = False) -> None:
        self._trace_headers_sent = set()  # before sentry-sdk's integration writes its own in putrequest
        super().putrequest(method, url, skip_host=skip_host, skip_accept_encoding=skip_accept_encoding)

    def putheader(self, header: str | bytes, *values: Any) -> None:
        name = (header.decode("latin-1") if isinstance(header, bytes) else header).lower()
        if name in TRACE_HEADERS:
            sent: set[str] = getattr(self, "_trace_headers_sent", set())
            if name in sent:
                return
            sent.add(name)
        super().putheader(header, *values)


class _SecureConnection(_Connection, http.client.HTTPSConnection):
    """The same over TLS."""


class HttpTransport(Transport):
    """Options: ``URL`` (required), ``CONNECT_TIMEOUT`` (seconds until the region accepts, default 2),
    ``BATCH_SIZE`` (envelopes per POST to the batch endpoint, at most 100, default 100; 1 sends one by one)."""

    def __init__(self, region: str, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        if not options.get("URL"):
            raise SiloRouterConfigurationError(
                f"SILO_ROUTER['REGIONS'][{region!r}] uses the http transport but has no URL."
            )
        self.url = str(options["URL"])
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SiloRouterConfigurationError(
                f"SILO_ROUTER['REGIONS'][{region!r}]['URL'] must be an http(s) URL, not {self.url!r}."
            )
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.connect_timeout = float(options.get("CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT))
        self.batch_size = max(1, min(int(options.get("BATCH_SIZE", BATCH_MAX_ENVELOPES)), BATCH_MAX_ENVELOPES))
        path = parts.path or "/"
        self._batch_path = (path if path.endswith("/") else path + "/") + BATCH_PATH
        #: ``time.monotonic()`` until which the batch endpoint is not tried (it answered 404/405).
        self._batch_missing_until = 0.0
        self._local = threading.local()
        self._all: list[http.client.HTTPConnection] = []
        self._all_lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        """A keep-alive connection per thread (``http.client`` connections are not thread-safe)."""
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = _SecureConnection if self._https else _Connection
            conn = cls(self._host, self._port, timeout=self.connect_timeout)
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _discard(self) -> None:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()

    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        start = time.monotonic()
        deadline = start + timeout
        accept_by = min(deadline, start + self.connect_timeout)
        hop = Hop.current()
        conn = self._connection()
        reused = conn.sock is not None
        watchdog = _Watchdog(conn.sock)
        watchdog.arm(accept_by - time.monotonic())
        accepted = False
        response: http.client.HTTPResponse | None = None
        try:
            headers = {**hop.headers(), "Content-Type": "application/json", signing.HEADER: sealed.signature}
            response = self._post(conn, self._path, sealed.body, headers, watchdog, accept_by, reused=reused)
            if response.status != 200:
                return self._refused(response, self._read(response, MAX_ERROR_BODY, truncate=True))
            first = response.read(1)
            if watchdog.fired:
                raise TimeoutError("the region did not accept the envelope in time")
            accepted = True
            watchdog.arm(deadline - time.monotonic())
            raw = first + self._read(response, MAX_RECEIPT_SIZE, line=True)
            if watchdog.fired:
                raise TimeoutError("the region did not finish in time")
            complete = response.isclosed()
        except DeliveryError:
            self._discard()
            raise
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self._discard()
            if watchdog.fired or isinstance(exc, TimeoutError):
                raise DeliveryTimeout("timeout" if accepted else "accept_timeout", region_fault=not accepted) from exc
            raise DeliveryError(f"connection_error: {type(exc).__name__}", retryable=True) from exc
        finally:
            watchdog.disarm()
            if response is not None and not response.isclosed():
                response.close()
        if response.will_close or not complete:
            self._discard()  # the region may still be sending (its after-commit work runs first)
        return self._receipt(raw)

    def _post(
        self,
        conn: http.client.HTTPConnection,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        watchdog: _Watchdog,
        accept_by: float,
        *,
        reused: bool,
    ) -> http.client.HTTPResponse:
        try:
            return self._send(conn, path, body, headers, watchdog, accept_by)
        except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
            if not reused or watchdog.fired:
                raise
            # The region closed an idle keep-alive connection: one fresh try.
            conn.close()
            return self._send(conn, path, body, headers, watchdog, accept_by)

    def _send(
        self,
        conn: http.client.HTTPConnection,
        path: str,
        body: bytes,
        headers: Mapping[str, str],
        watchdog: _Watchdog,
        accept_by: float,
    ) -> http.client.HTTPResponse:
        remaining = accept_by - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no time left to connect")
        if conn.sock is None:
            conn.timeout = remaining
            conn.connect()
        watchdog.attach(conn.sock)
        conn.sock.settimeout(None)  # the watchdog bounds every operation from here
        conn.request("POST", path, body=body, headers={**headers, "Content-Length": str(len(body))})
        return conn.getresponse()

    @staticmethod
    def _read(response: http.client.HTTPResponse, limit: int, *, truncate: bool = False, line: bool = False) -> bytes:
        """The rest of the body, at most ``limit`` bytes (more is an error, or cut with ``truncate``).

        With ``line``, stop at the first newline: a receipt is one line of JSON, so it is
        complete without waiting for the end of the response.
        """
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = response.read1(_READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            if line and b"\n" in chunk:
                chunks.append(chunk[: chunk.index(b"\n") + 1])
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                if truncate:
                    response.close()
                    return b"".join(chunks)
                raise DeliveryError("region answer too large", retryable=True)
            chunks.append(chunk)

    def _refused(self, response: http.client.HTTPResponse, raw: bytes) -> Receipt:
        """Map a non-200 answer to the ``DeliveryError`` it means."""
        raise _refusal(response.status, _reason_in(_json_or_none(raw)), retry_after=_retry_after(response))

    @staticmethod
    def _receipt(raw: bytes) -> Receipt:
        """The receipt JSON after the accepted marker, or the in-band error that replaced it."""
        return _receipt_of(_json_or_none(raw))

    # -- batches ---------------------------------------------------------------------------

    def deliver_many(
        self, sealed_envelopes: Sequence[SealedEnvelope], *, timeout: float, wait: bool
    ) -> list[BatchResult]:
        """POST the envelopes to the batch endpoint, ``BATCH_SIZE`` at a time; one result per envelope."""
        hops = Hop.for_batch(len(sealed_envelopes))
        if wait or self.batch_size < 2 or len(sealed_envelopes) < 2 or time.monotonic() < self._batch_missing_until:
            return super().deliver_many(sealed_envelopes, timeout=timeout, wait=wait)
        deadline = time.monotonic() + timeout
        results: list[BatchResult] = []
        stopped = False
        for group in self._groups(sealed_envelopes):
            if stopped or deadline - time.monotonic() <= 0:
                reason = "not_sent: the batch stopped before this envelope" if stopped else "not_sent: no time left"
                results.extend(NotSent(reason) for _ in group)
                continue
            sealed = [sealed_envelopes[i] for i in group]
            group_hops = [hops[i] for i in group]
            if len(group) == 1:
                answered = self._one_by_one(sealed, group_hops, deadline=deadline, wait=wait)
            else:
                try:
                    answered = self._post_batch(sealed, group_hops, deadline=deadline)
                except _BatchNotTaken as exc:
                    if exc.status in BATCH_UNSUPPORTED_STATUSES:
                        self._batch_missing_until = time.monotonic() + BATCH_RETRY_AFTER
                        logger.info("region %s has no batch endpoint (%s); sending one by one", self.region, exc)
                    answered = self._one_by_one(sealed, group_hops, deadline=deadline, wait=wait)
            results.extend(answered)
            stopped = any(isinstance(r, DeliveryError) and (r.region_fault or r.hold) for r in answered)
        return results

    def _groups(self, sealed_envelopes: Sequence[SealedEnvelope]) -> list[list[int]]:
        """Indexes of the envelopes in POST-sized groups: at most ``batch_size`` and ``BATCH_MAX_BYTES`` each.

        An envelope too large for any batch is a group of its own (sent to the one-envelope endpoint).
        """
        groups: list[list[int]] = []
        current: list[int] = []
        size = 0
        for index, sealed in enumerate(sealed_envelopes):
            # A body may double when it is escaped as a JSON string; the rest is the item's frame.
            cost = 2 * len(sealed.body) + len(sealed.signature) + 96
            if cost > BATCH_MAX_BYTES:
                groups.append([index])
                continue
            if current and (len(current) >= self.batch_size or size + cost > BATCH_MAX_BYTES):
                groups.append(current)
                current, size = [], 0
            current.append(index)
            size += cost
        if current:
            groups.append(current)
        return groups

    def _one_by_one(
        self, sealed: Sequence[SealedEnvelope], hops: Sequence[Hop], *, deadline: float, wait: bool
    ) -> list[BatchResult]:
        with delivering_batch([(hop.attempt, hop.replays) for hop in hops], traces=[hop.trace for hop in hops]):
            return super().deliver_many(sealed, timeout=max(deadline - time.monotonic(), 0.0), wait=wait)

    def _post_batch(
        self, sealed: Sequence[SealedEnvelope], hops: Sequence[Hop], *, deadline: float
    ) -> list[BatchResult]:
        """One POST of ``sealed`` to the batch endpoint; ``_BatchNotTaken`` when the region does not take the batch."""
        items = []
        for one, hop in zip(sealed, hops, strict=True):
            item: dict[str, Any] = {"body": one.body.decode(), "signature": one.signature}
            if hop.attempt is not None:
                item["attempt"] = hop.attempt
            if hop.replays:
                item["replays"] = hop.replays
            trace = {name: value for name, value in hop.headers().items() if name in TRACE_HEADERS}
            if trace:
                item["trace"] = trace  # its own attempt's context: the region's run is its child
            items.append(item)
        body = json.dumps({"envelopes": items}, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {**Hop(trace=hops[0].trace).headers(), "Content-Type": "application/json"}
        start = time.monotonic()
        accept_by = min(deadline, start + self.connect_timeout)
        conn = self._connection()
        reused = conn.sock is not None
        watchdog = _Watchdog(conn.sock)
        watchdog.arm(accept_by - time.monotonic())
        results: list[BatchResult] = []
        response: http.client.HTTPResponse | None = None
        complete = False
        try:
            try:
                response = self._post(conn, self._batch_path, body, headers, watchdog, accept_by, reused=reused)
                if response.status in BATCH_UNSUPPORTED_STATUSES or response.status in BATCH_REFUSED_STATUSES:
                    self._read(response, MAX_ERROR_BODY, truncate=True)
                    raise _BatchNotTaken(response.status)
                if response.status != 200:
                    self._refused(response, self._read(response, MAX_ERROR_BODY, truncate=True))
                response.read(1)  # the accepted marker
                if watchdog.fired:
                    raise TimeoutError("the region did not accept the batch in time")
            except DeliveryError as exc:
                return _first_failed(exc, len(sealed))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if watchdog.fired or isinstance(exc, TimeoutError):
                    return _first_failed(DeliveryTimeout("accept_timeout", region_fault=True), len(sealed))
                return _first_failed(
                    DeliveryError(f"connection_error: {type(exc).__name__}", retryable=True), len(sealed)
                )
            watchdog.arm(deadline - time.monotonic())
            try:
                while len(results) < len(sealed):
                    line = response.readline(MAX_RECEIPT_SIZE + 1)
                    if watchdog.fired:
                        raise TimeoutError("the region did not finish the batch in time")
                    if not line.endswith(b"\n"):
                        raise ConnectionError("the batch's answer ended early")
                    results.append(_batch_item(line))
            except (OSError, http.client.HTTPException, ValueError) as exc:
                # The envelope being handled: a slow handler (timeout) or a region that went away;
                # the region handles a batch in order, so it never reached the ones after it.
                if watchdog.fired or isinstance(exc, TimeoutError):
                    current: DeliveryError = DeliveryTimeout("timeout", region_fault=False)
                else:
                    current = DeliveryError(f"connection_error: {type(exc).__name__}", retryable=True)
                left = len(sealed) - len(results)
                results.append(current)
                results.extend(
                    NotSent("not_sent: the region did not reach it in the batch's time") for _ in range(left - 1)
                )
                return results
            complete = response.isclosed()
            return results
        finally:
            watchdog.disarm()
            if response is not None and not response.isclosed():
                response.close()
            if response is None or response.will_close or not complete:
                self._discard()

    def close(self) -> None:
        with self._all_lock:
            connections, self._all = self._all, []
        for conn in connections:
            conn.close()


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _reason_in(data: Any) -> str | None:
    return data.get("error") if isinstance(data, dict) and isinstance(data.get("error"), str) else None


def _refusal(status: int, reason: str | None, *, retry_after: float | None) -> DeliveryError:
    """The ``DeliveryError`` a refusal with ``status`` (and the region's ``reason``) means."""
    text = f"http_{status}" + (f": {reason}" if reason else "")
    if status in HOLD_STATUSES or status in SIGNATURE_STATUSES or reason in signing.FLEET_FAULT_REASONS:
        return DeliveryError(text, retryable=True, region_fault=True, hold=True)
    if status in TERMINAL_STATUSES:
        return DeliveryError(text, retryable=False)
    handler_failed = reason == "handler_failed"
    return DeliveryError(text, retryable=True, retry_after=retry_after, region_fault=not handler_failed)


def _receipt_of(data: Any) -> Receipt:
    """A receipt the region sent, or the ``DeliveryError`` its in-band error means."""
    if isinstance(data, dict) and data.get("outcome") in _KNOWN_OUTCOMES:
        response = data.get("response")
        return Receipt(outcome=Outcome(data["outcome"]), response=response if isinstance(response, dict) else None)
    reason = _reason_in(data)
    if reason == "handler_failed":
        raise DeliveryError("handler_failed", retryable=True, region_fault=False)
    raise DeliveryError(f"bad_receipt: {reason or 'not a receipt'}", retryable=True)


def _batch_item(line: bytes) -> BatchResult:
    """One envelope's line of a batch answer: its receipt, or why the region refused or failed it."""
    data = _json_or_none(line)
    status = data.get("status") if isinstance(data, dict) else None
    if isinstance(status, int) and not isinstance(status, bool):
        return _refusal(status, _reason_in(data), retry_after=None)
    try:
        return _receipt_of(data)
    except DeliveryError as exc:
        return exc


def _first_failed(error: DeliveryError, count: int) -> list[BatchResult]:
    """A batch that failed as a whole: the first envelope carries the failure, the others were not sent.

    So a region that is down counts one failure per batch, as it would for one envelope.
    """
    return [error, *(NotSent("not_sent: the batch failed before the region took it") for _ in range(count - 1))]
