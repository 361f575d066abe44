"""Loopback HTTP servers that misbehave on purpose, for the transport tests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Piece:
    """Bytes to send, then how long to pause before the next piece."""

    data: bytes
    pause: float = 0.0


def dribble(data: bytes, *, every: float) -> list[Piece]:
    """``data`` one byte at a time, ``every`` seconds apart."""
    return [Piece(data[i : i + 1], every) for i in range(len(data))]


def http_answer(status: str, body: bytes, headers: Sequence[str] = ()) -> bytes:
    lines = [f"HTTP/1.1 {status}", "Content-Type: application/json", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class ScriptedServer:
    """Accepts connections on loopback and answers every request with ``pieces``.

    Records, per connection, how many bytes it managed to send before the client
    hung up (``sent``) and whether it got through the whole script (``finished``), and
    the head of every request it read (``heads``: the request line and header lines).
    """

    pieces: list[Piece]
    sent: list[int] = field(default_factory=list)
    finished: list[bool] = field(default_factory=list)
    heads: list[list[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._done = threading.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/silo-router/envelopes/"

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._listener.close()

    def wait_for_connections(self, count: int, *, timeout: float = 30.0) -> None:
        """Block until ``count`` connections have ended (the script ran out or the client left)."""
        deadline = time.monotonic() + timeout
        with self._done:
            while len(self.sent) < count:
                remaining = deadline - time.monotonic()
                assert remaining > 0, "the client never finished its connections"
                self._done.wait(remaining)

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        sent, finished = 0, False
        try:
            self.heads.append(_read_request(conn))
            for piece in self.pieces:
                if piece.data:
                    conn.sendall(piece.data)
                    sent += len(piece.data)
                if piece.pause:
                    # A client that gave up shows as readable-at-EOF: stop there.
                    conn.settimeout(piece.pause)
                    try:
                        if conn.recv(1) == b"":
                            raise ConnectionResetError
                    except TimeoutError:
                        pass
            finished = True
        except OSError:
            pass
        finally:
            conn.close()
            with self._done:
                self.sent.append(sent)
                self.finished.append(finished)
                self._done.notify_all()


def _read_request(conn: socket.socket) -> list[bytes]:
    """Read one request's head and its Content-Length body; return the head's lines."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionResetError
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionResetError
        rest += chunk
    return head.split(b"\r\n")
