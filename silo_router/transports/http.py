"""HTTP transport: POST the sealed envelope to the region's receiver endpoint.

``timeout`` is a total deadline for connect, send and every read: a watchdog shuts the
socket down when it passes, so a region that dribbles its answer a byte at a time costs
no more than ``timeout``. The region answers an accepted envelope with a leading space
before running the handler; that first byte must come within ``CONNECT_TIMEOUT``
(a region that does not answer is unwell), while a timeout after it means a slow
handler, which is not the region's fault.

The request carries the attempt's :class:`~.base.Hop` as headers (``sentry-trace``,
``baggage``, ``traceparent``, ``tracestate``, the attempt number), so the region's run
is the child of the attempt in its trace. Each trace header goes out once: when
sentry-sdk's ``http.client`` integration is on it writes its own ``sentry-trace`` and
``baggage`` first (those of its span under the attempt), and the attempt's stay out.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from silo_router import signing
from silo_router.envelope import Outcome, Receipt, SealedEnvelope
from silo_router.exceptions import SiloRouterConfigurationError

from .base import TRACE_HEADERS, DeliveryError, DeliveryTimeout, Hop, Transport

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
    """Options: ``URL`` (required), ``CONNECT_TIMEOUT`` (seconds until the region accepts, default 2)."""

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
            try:
                response = self._send(conn, sealed, hop, watchdog, accept_by)
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                if not reused or watchdog.fired:
                    raise
                # The region closed an idle keep-alive connection: one fresh try.
                conn.close()
                response = self._send(conn, sealed, hop, watchdog, accept_by)
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

    def _send(
        self,
        conn: http.client.HTTPConnection,
        sealed: SealedEnvelope,
        hop: Hop,
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
        headers = {
            **hop.headers(),
            "Content-Type": "application/json",
            "Content-Length": str(len(sealed.body)),
            signing.HEADER: sealed.signature,
        }
        conn.request("POST", self._path, body=sealed.body, headers=headers)
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
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            data = None
        reason = data.get("error") if isinstance(data, dict) and isinstance(data.get("error"), str) else None
        status = response.status
        text = f"http_{status}" + (f": {reason}" if reason else "")
        if status in HOLD_STATUSES or status in SIGNATURE_STATUSES or reason in signing.FLEET_FAULT_REASONS:
            raise DeliveryError(text, retryable=True, region_fault=True, hold=True)
        if status in TERMINAL_STATUSES:
            raise DeliveryError(text, retryable=False)
        handler_failed = reason == "handler_failed"
        raise DeliveryError(text, retryable=True, retry_after=_retry_after(response), region_fault=not handler_failed)

    @staticmethod
    def _receipt(raw: bytes) -> Receipt:
        """The receipt JSON after the accepted marker, or the in-band error that replaced it."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict) and data.get("outcome") in _KNOWN_OUTCOMES:
            response = data.get("response")
            return Receipt(outcome=Outcome(data["outcome"]), response=response if isinstance(response, dict) else None)
        reason = data.get("error") if isinstance(data, dict) and isinstance(data.get("error"), str) else None
        if reason == "handler_failed":
            raise DeliveryError("handler_failed", retryable=True, region_fault=False)
        raise DeliveryError(f"bad_receipt: {reason or 'not a receipt'}", retryable=True)

    def close(self) -> None:
        with self._all_lock:
            connections, self._all = self._all, []
        for conn in connections:
            conn.close()
