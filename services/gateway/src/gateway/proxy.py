"""Forwarding one request to one upstream API.

Only an allow-list of headers travels in either direction. Identity-like headers are dropped even if
someone adds them to the list; the gateway never asserts identity, it forwards the caller's own token.
A failed connection is retried once for GET/HEAD/OPTIONS and for requests carrying an
``Idempotency-Key`` (the upstream deduplicates them); timeouts are never retried.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

import httpx
from fastapi import Request, Response

from gateway.security import IDENTITY_HEADER
from registry_common.context import correlation_id_var, request_id_var
from registry_common.errors import RegistryError
from registry_common.http_transport import repeatable

log = logging.getLogger("registry.gateway")

FORWARDED_REQUEST_HEADERS = frozenset({
    "authorization", "content-type", "accept", "accept-language", "idempotency-key", "if-match",
    "if-none-match", "prefer",
})
"""Request headers passed to the upstream (plus X-Request-ID and X-Correlation-ID, always set)."""

RETURNED_RESPONSE_HEADERS = frozenset({
    "content-type", "content-language", "location", "etag", "retry-after", "x-request-id",
    "x-correlation-id", "cache-control", "content-disposition", "link", "www-authenticate", "preference-applied",
})
"""Response headers passed back. Hop-by-hop headers (connection, keep-alive, transfer-encoding, ...)
and content-encoding (httpx has already decoded the body) are never among them."""

MAX_BODY_BYTES = 10 * 1024 * 1024

assert not any(IDENTITY_HEADER.match(h) for h in FORWARDED_REQUEST_HEADERS | RETURNED_RESPONSE_HEADERS)


def outgoing_headers(request: Request) -> dict[str, str]:
    headers = {
        name: value for name, value in request.headers.items()
        if name in FORWARDED_REQUEST_HEADERS and not IDENTITY_HEADER.match(name)
    }
    forged = sorted(name for name in request.headers if IDENTITY_HEADER.match(name))
    if forged:
        log.warning("dropped identity-like request headers %s on %s %s", forged, request.method,
                    request.url.path)
    request_id = request_id_var.get() or request.headers.get("x-request-id")
    if request_id:
        headers["x-request-id"] = request_id
        headers["x-correlation-id"] = correlation_id_var.get() or request_id
    if request.client is not None:
        # Replaces whatever the client sent: the upstream (uvicorn trusts 127.0.0.1 by default) sees the
        # caller's address, e.g. for limiting failed sign-ins.
        headers["x-forwarded-for"] = request.client.host
    return headers


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RegistryError("gateway.payload_too_large", limit=limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RegistryError("gateway.payload_too_large", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def upstream_url(client: httpx.AsyncClient, request: Request) -> httpx.URL:
    """The upstream URL with the request's path exactly as received (still percent-encoded, so what the
    route table matched is what the upstream routes) and its raw query string."""
    raw_path = request.scope.get("raw_path") or quote(request.url.path).encode()
    query = request.scope.get("query_string") or b""
    base = client.base_url
    return base.copy_with(raw_path=base.raw_path.rstrip(b"/") + raw_path + (b"?" + query if query else b""))


async def send(client: httpx.AsyncClient, service: str, method: str, url: httpx.URL | str,
               headers: dict[str, str], body: bytes | None = None,
               params: dict[str, Any] | None = None) -> httpx.Response:
    """One upstream call with the gateway's retry rule; transport failures become gateway errors."""
    attempts = 2 if repeatable(method, headers) else 1
    for attempt in range(1, attempts + 1):
        try:
            return await client.request(method, url, headers=headers, content=body or None, params=params)
        except httpx.ConnectError as exc:
            log.warning("upstream %s refused %s %s (attempt %d/%d): %s", service, method, url, attempt,
                        attempts, exc)
            if attempt == attempts:
                raise RegistryError("gateway.upstream_unavailable", service=service) from exc
        except httpx.TimeoutException as exc:
            log.warning("upstream %s timed out on %s %s: %r", service, method, url, exc)
            raise RegistryError("gateway.upstream_timeout", service=service) from exc
        except httpx.TransportError as exc:
            log.warning("upstream %s failed on %s %s: %r", service, method, url, exc)
            raise RegistryError("gateway.upstream_error", service=service) from exc
    raise AssertionError("unreachable")


def relay(upstream: httpx.Response, method: str) -> Response:
    response = Response(content=b"" if method == "HEAD" else upstream.content,
                        status_code=upstream.status_code)
    for name, value in upstream.headers.multi_items():
        if name.lower() in RETURNED_RESPONSE_HEADERS:
            response.headers.append(name, value)
    if method == "HEAD" and "content-length" in upstream.headers:
        response.headers["content-length"] = upstream.headers["content-length"]
    return response


async def exchange(client: httpx.AsyncClient, transport: httpx.AsyncBaseTransport, service: str, method: str,
                   url: httpx.URL, headers: dict[str, str], body: bytes) -> httpx.Response:
    """What :func:`send` does (the same request, headers, timeouts, retry rule and errors), straight on
    the client's transport: without the client's auth, redirect, cookie and event-hook layers, which a
    proxy forwarding the caller's own ``Authorization`` (redirects and cookies passed back as they are)
    never uses. The response is read in full before returning."""
    outgoing = dict(headers)
    for name, value in client.headers.items():  # the client's defaults (Accept, User-Agent, ...)
        outgoing.setdefault(name.lower(), value)
    request = httpx.Request(method, url, headers=outgoing, content=body or None,
                            extensions={"timeout": client.timeout.as_dict()})
    attempts = 2 if repeatable(method, headers) else 1
    for attempt in range(1, attempts + 1):
        try:
            response = await transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
            return response
        except httpx.ConnectError as exc:
            log.warning("upstream %s refused %s %s (attempt %d/%d): %s", service, method, url, attempt,
                        attempts, exc)
            if attempt == attempts:
                raise RegistryError("gateway.upstream_unavailable", service=service) from exc
        except httpx.TimeoutException as exc:
            log.warning("upstream %s timed out on %s %s: %r", service, method, url, exc)
            raise RegistryError("gateway.upstream_timeout", service=service) from exc
        except httpx.TransportError as exc:
            log.warning("upstream %s failed on %s %s: %r", service, method, url, exc)
            raise RegistryError("gateway.upstream_error", service=service) from exc
    raise AssertionError("unreachable")


async def forward(request: Request, client: httpx.AsyncClient, service: str,
                  transport: httpx.AsyncBaseTransport | None = None) -> Response:
    """Forward ``request`` to ``service``; with its client's ``transport``, straight on it (:func:`exchange`)."""
    body = await read_body(request)
    headers = outgoing_headers(request)
    url = upstream_url(client, request)
    if transport is None:
        upstream = await send(client, service, request.method, url, headers, body)
    else:
        upstream = await exchange(client, transport, service, request.method, url, headers, body)
    return relay(upstream, request.method)
