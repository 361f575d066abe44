"""A small request-buffering reverse proxy: what nginx's request buffering does, for the demo.

gunicorn's sync and gthread workers read a request body on the worker thread, so a
client that sends its body slowly holds a thread for as long as it likes; a few such
clients stop every other request. This proxy reads each request whole (headers and
body, chunked bodies de-chunked) on an event loop, under one deadline per request, and
only then hands it to gunicorn over loopback with a Content-Length. Slow clients cost
the proxy a socket, never a gunicorn thread. Production deployments put nginx (or a
load balancer that buffers) in the same place: see docs/deployment.md.

Run: ``python -m example_project.buffering_proxy --listen 127.0.0.1:8000 --upstream 127.0.0.1:8001``.
One request per connection (the proxy answers with ``Connection: close``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Sequence

logger = logging.getLogger("example_project.buffering_proxy")

#: Seconds a client has to send its whole request (headers and body).
REQUEST_DEADLINE = 10.0
#: Seconds gunicorn has to answer a buffered request.
UPSTREAM_DEADLINE = 60.0
#: Largest request head (request line and headers) accepted.
MAX_HEAD_SIZE = 64 * 1024
#: Largest body accepted; the library refuses more than its MAX_BODY_SIZE itself.
MAX_BODY_SIZE = 8 * 1024 * 1024
#: Bytes relayed per read of the upstream answer.
RELAY_CHUNK = 64 * 1024
#: Headers that describe one hop only; the proxy sets its own.
HOP_HEADERS = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"te", b"upgrade"})


class ClientError(Exception):
    """A request the proxy answers itself with ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def read_request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[bytes, list[tuple[bytes, bytes]], bytes]:
    """The request line, headers and whole body (de-chunked) of one request.

    A client that asks for ``100 Continue`` gets it before its body is read.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise ClientError(431, "Request Header Fields Too Large") from None
    request_line, *lines = head[:-4].split(b"\r\n")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise ClientError(400, "Bad Request")
        headers.append((name, value.strip()))
    fields = {name.lower(): value for name, value in headers}
    if fields.get(b"expect", b"").lower() == b"100-continue":
        headers = [(n, v) for n, v in headers if n.lower() != b"expect"]
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        body = await read_chunked(reader)
    elif b"content-length" in fields:
        try:
            length = int(fields[b"content-length"])
        except ValueError:
            raise ClientError(400, "Bad Request") from None
        if length < 0:
            raise ClientError(400, "Bad Request")
        if length > MAX_BODY_SIZE:
            raise ClientError(413, "Content Too Large")
        body = await reader.readexactly(length)
    else:
        body = b""
    return request_line, headers, body


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A chunked body, de-chunked (trailers are read and dropped)."""
    parts: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            chunk_size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ClientError(400, "Bad Request") from None
        if chunk_size < 0:
            raise ClientError(400, "Bad Request")
        if chunk_size == 0:
            # Trailer lines, if any, end at an empty line; they are read and dropped.
            while await reader.readuntil(b"\r\n") != b"\r\n":
                continue
            return b"".join(parts)
        size += chunk_size
        if size > MAX_BODY_SIZE:
            raise ClientError(413, "Content Too Large")
        parts.append(await reader.readexactly(chunk_size))
        if await reader.readexactly(2) != b"\r\n":
            raise ClientError(400, "Bad Request")


def simple_answer(status: int, reason: str) -> bytes:
    body = f"{status} {reason}\n".encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body


class BufferingProxy:
    """Accepts on ``listen``, buffers each request, forwards it to ``upstream``."""

    def __init__(self, *, upstream: tuple[str, int], request_deadline: float = REQUEST_DEADLINE) -> None:
        self.upstream = upstream
        self.request_deadline = request_deadline

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one connection: buffer, forward, relay, close."""
        peer = writer.get_extra_info("peername")
        try:
            try:
                received = read_request(reader, writer)
                request_line, headers, body = await asyncio.wait_for(received, self.request_deadline)
            except TimeoutError:
                writer.write(simple_answer(408, "Request Timeout"))
                return
            except ClientError as exc:
                writer.write(simple_answer(exc.status, exc.reason))
                return
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return  # the client went away mid-request: nothing to forward, nobody to answer
            forwarded = [(n, v) for n, v in headers if n.lower() not in HOP_HEADERS]
            if peer:
                forwarded.append((b"X-Forwarded-For", str(peer[0]).encode()))
            forwarded += [(b"Content-Length", str(len(body)).encode()), (b"Connection", b"close")]
            head = request_line + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in forwarded) + b"\r\n"
            try:
                await asyncio.wait_for(self.relay(head + body, writer), UPSTREAM_DEADLINE)
            except (TimeoutError, OSError):
                logger.warning("upstream %s:%s did not answer", *self.upstream)
                writer.write(simple_answer(502, "Bad Gateway"))
        finally:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

    async def relay(self, request: bytes, client: asyncio.StreamWriter) -> None:
        """Send the buffered request upstream and copy the answer back to the client."""
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        try:
            upstream_writer.write(request)
            await upstream_writer.drain()
            while chunk := await upstream_reader.read(RELAY_CHUNK):
                client.write(chunk)
                await client.drain()
        finally:
            upstream_writer.close()


async def serve(listen: tuple[str, int], proxy: BufferingProxy) -> None:
    """Serve until SIGTERM or SIGINT."""
    server = await asyncio.start_server(proxy.handle, *listen, limit=MAX_HEAD_SIZE)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    logger.info("buffering proxy on %s:%s -> %s:%s", *listen, *proxy.upstream)
    async with server:
        await stop.wait()


def _address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_address, required=True, help="host:port to accept clients on")
    parser.add_argument("--upstream", type=_address, required=True, help="host:port of gunicorn")
    parser.add_argument("--request-deadline", type=float, default=REQUEST_DEADLINE, help="seconds per request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(args.listen, BufferingProxy(upstream=args.upstream, request_deadline=args.request_deadline)))


if __name__ == "__main__":
    main()
