"""HTTP transport: POST the sealed envelope to the region's receiver endpoint."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import requests

from silo_router import signing
from silo_router.envelope import SealedEnvelope
from silo_router.exceptions import SiloRouterConfigurationError

from .base import DeliveryError, DeliveryTimeout, Receipt, Transport

#: Statuses after which another attempt is pointless: the region refused the envelope.
TERMINAL_STATUSES = frozenset({400, 401, 403, 404, 405, 409, 410, 413, 415, 422})
MAX_RETRY_AFTER = 300.0


def _retry_after(response: requests.Response) -> float | None:
    try:
        return min(max(float(response.headers["Retry-After"]), 0.0), MAX_RETRY_AFTER)
    except (KeyError, ValueError):
        return None


class HttpTransport(Transport):
    """Options: ``URL`` (required), ``CONNECT_TIMEOUT`` (seconds, default 2)."""

    def __init__(self, region: str, options: Mapping[str, Any]) -> None:
        super().__init__(region, options)
        if not options.get("URL"):
            raise SiloRouterConfigurationError(
                f"SILO_ROUTER['REGIONS'][{region!r}] uses the http transport but has no URL."
            )
        self.url = str(options["URL"])
        self.connect_timeout = float(options.get("CONNECT_TIMEOUT", 2.0))
        self._local = threading.local()

    @property
    def session(self) -> requests.Session:
        """A pooled session per thread (``requests.Session`` is not thread-safe)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def deliver(self, sealed: SealedEnvelope, *, timeout: float, wait: bool) -> Receipt:
        headers = {"Content-Type": "application/json", signing.HEADER: sealed.signature}
        try:
            response = self.session.post(
                self.url, data=sealed.body, headers=headers, timeout=(min(self.connect_timeout, timeout), timeout)
            )
        except requests.Timeout as exc:
            raise DeliveryTimeout() from exc
        except requests.RequestException as exc:
            raise DeliveryError(f"connection_error: {type(exc).__name__}", retryable=True) from exc
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code == 200 and isinstance(data, dict) and "outcome" in data:
            return Receipt(outcome=str(data["outcome"]), response=data.get("response"))
        reason = data.get("error") if isinstance(data, dict) else None
        reason = f"http_{response.status_code}" + (f": {reason}" if reason else "")
        if response.status_code in TERMINAL_STATUSES:
            raise DeliveryError(reason, retryable=False)
        handler_failed = isinstance(data, dict) and data.get("error") == "handler_failed"
        raise DeliveryError(reason, retryable=True, retry_after=_retry_after(response), region_fault=not handler_failed)

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
