"""The lean HTTP/1.1 transport against a real uvicorn server on a free port."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from registry_common.http_transport import LeanHTTPTransport
from registry_common.testing.fixtures import wait_for


def upstream() -> FastAPI:
    app = FastAPI()

    @app.api_route("/echo/{rest:path}", methods=["GET", "POST", "HEAD"])
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"method": request.method, "raw_path": request.scope["raw_path"].decode(),
                             "query": request.scope["query_string"].decode(), "body": (await request.body()).decode(),
                             "port": request.client.port if request.client else None,
                             "headers": dict(request.headers)}, headers={"X-Seen": "1"})

    @app.get("/chunks")
    async def chunks() -> StreamingResponse:
        async def parts() -> AsyncIterator[bytes]:
            for n in range(3):
                yield f"part {n};".encode()
        return StreamingResponse(parts(), media_type="text/plain")

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        await asyncio.sleep(2)
        return {"late": "yes"}

    @app.get("/closing")
    async def closing() -> Response:
        return Response(b"bye", status_code=202, headers={"Connection": "close"})

    return app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def server() -> AsyncIterator[str]:
    port = free_port()
    running = uvicorn.Server(uvicorn.Config(upstream(), host="127.0.0.1", port=port, log_config=None,
                                            lifespan="off"))
    task = asyncio.create_task(running.serve())
    await wait_for(lambda: running.started, timeout=10, what="the upstream to start")
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    await task


async def test_requests_and_answers_travel_as_with_httpx_and_connections_are_reused(server: str):
    transport = LeanHTTPTransport()
    async with httpx.AsyncClient(transport=transport, base_url=server, timeout=5.0) as client:
        first = await client.post("/echo/a%2Fb?x=1&y=a%20b", content=b'{"n": 1}',
                                  headers={"Content-Type": "application/json", "X-Whatever": "v"})
        assert first.status_code == 200 and first.headers["x-seen"] == "1"
        echoed = first.json()
        assert echoed["method"] == "POST" and echoed["raw_path"] == "/echo/a%2Fb"
        assert echoed["query"] == "x=1&y=a%20b" and echoed["body"] == '{"n": 1}'
        assert echoed["headers"]["x-whatever"] == "v" and echoed["headers"]["content-length"] == "8"
        second = await client.get("/echo/again")
        assert second.json()["port"] == echoed["port"]  # the same connection, kept alive
        many = await asyncio.gather(*(client.get(f"/echo/{n}") for n in range(20)))
        assert [r.json()["raw_path"] for r in many] == [f"/echo/{n}" for n in range(20)]
        chunked = await client.get("/chunks")
        assert chunked.text == "part 0;part 1;part 2;"
        head = await client.head("/echo/h")
        assert head.status_code == 200 and head.content == b"" and "content-length" in head.headers
        after_head = await client.get("/echo/after")
        assert after_head.json()["method"] == "GET"
        closing = await client.get("/closing")
        assert closing.status_code == 202 and closing.text == "bye"
        reopened = await client.get("/echo/reopened")
        assert reopened.status_code == 200


async def test_failures_are_httpx_exceptions(server: str):
    with socket.socket() as sock:  # bound, never listening: a refused connection
        sock.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with httpx.AsyncClient(transport=LeanHTTPTransport(), timeout=5.0) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{refused}/echo/x")
    async with httpx.AsyncClient(transport=LeanHTTPTransport(), base_url=server, timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/slow")
        assert (await client.get("/echo/still")).status_code == 200  # the timed-out connection was dropped
    async with httpx.AsyncClient(transport=LeanHTTPTransport(), timeout=5.0) as client:
        with pytest.raises(httpx.UnsupportedProtocol):
            await client.get("https://127.0.0.1:1/x")


async def test_a_connection_idle_past_the_expiry_is_not_reused(server: str):
    transport = LeanHTTPTransport(keepalive_expiry=0.0)  # every idle connection has expired
    async with httpx.AsyncClient(transport=transport, base_url=server, timeout=5.0) as client:
        first = (await client.get("/echo/1")).json()["port"]
        assert (await client.get("/echo/2")).json()["port"] != first


@pytest.fixture
async def closes_reused() -> AsyncIterator[tuple[str, list[str]]]:
    """A server that answers the first request on each connection (keep-alive) and closes the connection,
    unanswered, on the second: what a pooled connection meets when the server closed it as it was taken."""
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for turn in range(2):
            head = await reader.readuntil(b"\r\n\r\n")
            line = head.split(b"\r\n", 1)[0].decode()
            length = next((int(h.split(b":")[1]) for h in head.split(b"\r\n")
                           if h.lower().startswith(b"content-length")), 0)
            if length:
                await reader.readexactly(length)
            seen.append(f"{turn} {line}")
            if turn == 1:
                writer.close()
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
            await writer.drain()

    listening = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", seen
    listening.close()


async def test_a_reused_connection_closed_before_answering_is_retried_only_for_repeatable_requests(closes_reused):
    url, seen = closes_reused
    async with httpx.AsyncClient(transport=LeanHTTPTransport(), base_url=url, timeout=5.0) as client:
        assert (await client.get("/first")).status_code == 200
        assert (await client.get("/again")).text == "ok"  # closed unanswered on the pooled one, sent anew
        assert seen[-2:] == ["1 GET /again HTTP/1.1", "0 GET /again HTTP/1.1"]

        assert (await client.post("/keyed", content=b"{}", headers={"Idempotency-Key": "k-1"})).text == "ok"
        assert seen[-2:] == ["1 POST /keyed HTTP/1.1", "0 POST /keyed HTTP/1.1"]

        with pytest.raises(httpx.RemoteProtocolError):  # may have been applied: the caller decides
            await client.post("/unkeyed", content=b"{}")
        assert seen[-1] == "1 POST /unkeyed HTTP/1.1"
        assert (await client.post("/fresh", content=b"{}")).text == "ok"  # a new connection, answered
        assert seen[-1] == "0 POST /fresh HTTP/1.1"
