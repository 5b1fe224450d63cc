"""A lean httpx transport for calls between the registry's own processes (plain HTTP/1.1 on loopback or a
private network): the gateway's forwarding, a service asking another service's API.

Why not httpx's default transport (httpcore): for every request its pool walks every connection it holds and
asks each idle one's socket whether it is readable, and it parses responses with pure-Python h11; under load
that was about half of the gateway's CPU. Here idle connections wait in a last-in-first-out stack per host,
one is checked only when taken, and responses are parsed by ``httptools`` (llhttp, the parser uvicorn uses).

What it keeps: httpx's request and response objects, its timeouts (``connect``, ``read``, ``write``,
``pool`` from the request's ``timeout`` extension) and its exceptions (``ConnectError``, ``ConnectTimeout``,
``ReadTimeout``, ``WriteTimeout``, ``PoolTimeout``, ``ReadError``, ``WriteError``, ``RemoteProtocolError``),
so callers handle failures as before. A connection is reused only if the response allowed it (keep-alive) and
it was idle less than ``keepalive_expiry`` (keep it below the server's own keep-alive timeout). One retry, on
a new connection, and only when it cannot apply a request twice: a *reused* connection that the server had
closed (it failed before a single byte of the answer came back: the server closed it idle, or restarted)
while the request is one that may be repeated (GET, HEAD, OPTIONS, or any request carrying an
``Idempotency-Key``, which the registry's APIs answer once). Otherwise the error goes to the caller. Only
``http://`` URLs.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import httptools
import httpx

READ_CHUNK = 64 * 1024
REPEATABLE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class _ClosedBeforeAnswer(Exception):
    """A reused connection failed before any byte of the answer: ``error`` is what the caller would get."""

    def __init__(self, error: httpx.TransportError):
        super().__init__(str(error))
        self.error = error


def repeatable(method: str, headers: Mapping[str, str]) -> bool:
    """Whether sending the request twice cannot apply it twice (``headers``' names in lower case, or httpx's)."""
    return method in REPEATABLE_METHODS or "idempotency-key" in headers


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = field(default_factory=time.monotonic)

    def usable(self, expiry: float) -> bool:
        return (not self.writer.is_closing() and not self.reader.at_eof()
                and time.monotonic() - self.idle_since < expiry)

    def close(self) -> None:
        self.writer.close()


class _Response:
    """Collects one response from ``httptools`` callbacks."""

    def __init__(self, head_only: bool):
        self.head_only = head_only
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.headers_done = False
        self.done = False
        self.keep_alive = False
        self.status_code = 0
        self.received = False  # any byte of the answer
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status_code = self.parser.get_status_code()
        self.headers_done = True
        self.done = self.head_only  # a response to HEAD has no body, whatever its Content-Length says

    def on_body(self, chunk: bytes) -> None:
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.keep_alive = self.parser.should_keep_alive()  # read now: the parser resets after this
        self.done = True

    def delimited(self) -> bool:
        """Whether the body's end is marked (a length or chunks) rather than the connection's close."""
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" in names or b"transfer-encoding" in names


def _head(request: httpx.Request, body: bytes) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    names = set()
    for name, value in request.headers.raw:
        names.add(name.lower())
        lines.append(name + b": " + value)
    if body and b"content-length" not in names and b"transfer-encoding" not in names:
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n"


class LeanHTTPTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int = 200, keepalive_expiry: float = 4.0):
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._idle: dict[tuple[str, int], list[_Connection]] = defaultdict(list)
        self._slots: asyncio.Semaphore | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"only http:// is served here, not {request.url.scheme}://",
                                            request=request)
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("no connection free in time", request=request) from exc
        try:
            try:
                return await self._exchange(request, body, timeouts, reuse=True)
            except _ClosedBeforeAnswer as closed:
                if not repeatable(request.method, request.headers):
                    raise closed.error from closed.error.__cause__
                return await self._exchange(request, body, timeouts, reuse=False)
        finally:
            self._slots.release()

    async def _exchange(self, request: httpx.Request, body: bytes, timeouts: dict[str, float | None], *,
                        reuse: bool) -> httpx.Response:
        """One request and its answer. On a connection taken from the pool, a failure before any byte of
        the answer raises ``_ClosedBeforeAnswer`` (the caller may repeat the request on a new connection)."""
        key = (request.url.host, request.url.port or 80)
        reused = self._take(key) if reuse else None
        connection = reused or await self._connect(request, key, timeouts.get("connect"))
        response = _Response(head_only=request.method == "HEAD")
        try:
            connection.writer.write(_head(request, body) + body)
            try:
                async with asyncio.timeout(timeouts.get("write")):
                    await connection.writer.drain()
            except TimeoutError as exc:
                raise httpx.WriteTimeout("writing the request timed out", request=request) from exc
            except OSError as exc:
                raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from exc
            await self._read(connection, response, request, timeouts.get("read"))
        except (httpx.WriteError, httpx.ReadError, httpx.RemoteProtocolError) as exc:
            connection.close()
            if reused is not None and not response.received:
                raise _ClosedBeforeAnswer(exc) from exc
            raise
        except BaseException:
            connection.close()
            raise
        if response.keep_alive and response.delimited():
            connection.idle_since = time.monotonic()
            self._idle[key].append(connection)
        else:
            connection.close()
        return httpx.Response(response.status_code, headers=response.headers,
                              stream=httpx.ByteStream(b"".join(response.body)), request=request,
                              extensions={"http_version": b"HTTP/1.1"})

    async def _read(self, connection: _Connection, response: _Response, request: httpx.Request,
                    read_timeout: float | None) -> None:
        while not response.done:
            try:
                async with asyncio.timeout(read_timeout):
                    chunk = await connection.reader.read(READ_CHUNK)
            except TimeoutError as exc:
                raise httpx.ReadTimeout("reading the response timed out", request=request) from exc
            except OSError as exc:
                raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
            if not chunk:  # the server closed the connection
                if response.headers_done and not response.delimited():
                    return  # a body that ends with the connection
                raise httpx.RemoteProtocolError("Server disconnected without sending a complete response.",
                                                request=request)
            response.received = True
            try:
                response.parser.feed_data(chunk)
            except httptools.HttpParserError as exc:
                raise httpx.RemoteProtocolError(f"malformed response: {exc}", request=request) from exc

    def _take(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle[key]
        while idle:
            connection = idle.pop()
            if connection.usable(self.keepalive_expiry):
                return connection
            connection.close()
        return None

    async def _connect(self, request: httpx.Request, key: tuple[str, int], connect_timeout: float | None
                       ) -> _Connection:
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(*key, limit=READ_CHUNK * 4)
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {key[0]}:{key[1]} timed out", request=request) from exc
        except OSError as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return _Connection(reader, writer)

    async def aclose(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
