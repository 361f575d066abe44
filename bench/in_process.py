"""Signed Slack requests straight through a Django WSGI application, in this process: no HTTP, no server.

bench/control_stages.py, bench/tracing_overhead.py, bench/tracing_profile.py and
bench/table_growth.py time silo_router's control path this way; the bodies are
bench/loadgen.py's, signed here with Slack's v0 scheme by ``slack_sdk``'s own signer.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable, Iterable
from typing import Any

from slack_sdk.signature import SignatureVerifier

SLACK_PATH = "/extensions/slack/"
FORM = "application/x-www-form-urlencoded"


def signed_headers(body: bytes, verifier: SignatureVerifier, *, fresh_for: float = 30.0) -> dict[str, str]:
    """Slack's headers of a form ``body``, signed for a timestamp ``fresh_for`` seconds from now.

    Signed ahead, as bench/loadgen.py's requests are, so that a request prepared before a
    timed run does not look old when it is sent.
    """
    timestamp = str(int(time.time() + fresh_for))
    return {
        "content-type": FORM,
        "x-slack-request-timestamp": timestamp,
        "x-slack-signature": verifier.generate_signature(timestamp=timestamp, body=body.decode()),
    }


def environ(body: bytes, headers: dict[str, str], *, path: str = SLACK_PATH) -> dict[str, Any]:
    """The WSGI environ of a POST of ``body`` to ``path`` with Slack's ``headers``."""
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_TYPE": headers["content-type"],
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_X_SLACK_REQUEST_TIMESTAMP": headers["x-slack-request-timestamp"],
        "HTTP_X_SLACK_SIGNATURE": headers["x-slack-signature"],
    }


def signed_environ(body: bytes, verifier: SignatureVerifier, *, fresh_for: float = 30.0) -> dict[str, Any]:
    """The WSGI environ of ``body`` POSTed to the Slack path, signed ``fresh_for`` seconds ahead."""
    return environ(body, signed_headers(body, verifier, fresh_for=fresh_for))


def answer(application: Callable[..., Iterable[bytes]], request: dict[str, Any]) -> str:
    """Run one request through ``application``, read and close its response; its status line."""
    statuses: list[str] = []
    result = application(request, lambda status, headers, exc_info=None: statuses.append(status))
    b"".join(result)
    with contextlib.suppress(AttributeError):
        result.close()  # type: ignore[attr-defined]
    return statuses[0] if statuses else ""


def answer_ok(application: Callable[..., Iterable[bytes]], request: dict[str, Any]) -> None:
    """``answer``, and a ``RuntimeError`` when the status is not 200."""
    status = answer(application, request)
    if not status.startswith("200"):
        raise RuntimeError(f"the control path answered {status!r}")
