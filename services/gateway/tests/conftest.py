"""The gateway in front of small, real FastAPI upstreams, wired in-process with httpx.ASGITransport.

Every upstream verifies the token with the chassis exactly as the real services do, records what it
received, and can be made to fail (a refused connection, a timeout) through :class:`Faulty`. The
notifications upstream points at a bound socket that does not listen: a real refused connection.
"""

import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, create_model

from gateway.app import create_app
from gateway.upstreams import Upstream
from registry_common.auth import OVERSIGHT_ROLES, Principal, TokenCodec, generate_keypair, require_roles
from registry_common.errors import install_error_handlers
from registry_common.settings import SERVICES, RegistrySettings

ISSUER = AUDIENCE = "registro-mx"


# Upstream apps -----------------------------------------------------------------------------------
class User(BaseModel):
    id: str
    name: str


# Both services publish a schema named "Page", with different content.
AccountsPage = create_model("Page", items=(list[User], ...), next_cursor=(int | None, None))


class Directory(BaseModel):
    page: AccountsPage  # type: ignore[valid-type]
    total: int


class Internal(BaseModel):
    secret: str


class TokenRequest(BaseModel):
    username: str
    password: str


class Period(BaseModel):
    year: int


IssuancePage = create_model("Page", rows=(list[Period], ...))


async def echo(request: Request) -> dict[str, Any]:
    return {
        "service": request.app.title,
        "method": request.method,
        "path": request.url.path,
        "raw_path": request.scope["raw_path"].decode(),
        "query": request.scope["query_string"].decode(),
        "headers": [[k, v] for k, v in request.headers.items()],
        "body": (await request.body()).decode(),
    }


def service_app(service: str, codec: TokenCodec, *, approvals: list[dict[str, Any]] | None = None,
                dead_letters: list[dict[str, Any]] | None = None,
                approval_roles: tuple[str, ...] = tuple(OVERSIGHT_ROLES)) -> FastAPI:
    """An upstream with the shared routes, verifying tokens with the chassis."""
    app = FastAPI(title=service)
    app.state.token_codec = codec
    app.state.calls = []
    install_error_handlers(app)

    @app.middleware("http")
    async def record(request: Request, call_next: Any) -> Any:
        request.app.state.calls.append((request.method, request.url.path, request.scope["query_string"]))
        return await call_next(request)

    Overseer = Annotated[Principal, Depends(require_roles(*OVERSIGHT_ROLES))]
    Approver = Annotated[Principal, Depends(require_roles(*approval_roles))]

    @app.get(f"/api/v1/{service}/approvals", operation_id=f"{service}-list-approvals")
    async def list_approvals(_who: Approver, state: str | None = None, limit: int = 100) -> dict[str, Any]:
        items = [a for a in approvals or [] if state is None or a["state"] == state]
        return {"items": items[:limit]}

    @app.get(f"/api/v1/{service}/dead-letters", operation_id=f"{service}-dead-letters")
    async def list_dead_letters(_who: Overseer, state: str = "dead") -> dict[str, Any]:
        return {"items": [d for d in dead_letters or [] if d["state"] == state], "next_cursor": None}

    @app.get(f"/api/v1/{service}/audit-log", operation_id=f"{service}-audit-log")
    async def audit_log(request: Request, _who: Overseer) -> dict[str, Any]:
        return {"items": [], "echo": await echo(request)}

    return app


def accounts_app(codec: TokenCodec, **kwargs: Any) -> FastAPI:
    app = service_app("accounts", codec, **kwargs)

    @app.post("/api/v1/auth/token", operation_id="issue-token")
    async def issue_token(body: TokenRequest) -> dict[str, str]:
        return {"access_token": f"token-for-{body.username}", "token_type": "bearer"}

    @app.get("/api/v1/users", response_model=AccountsPage, operation_id="list")
    async def list_users() -> AccountsPage:
        return AccountsPage(items=[User(id="u1", name="Ana")])

    @app.get("/api/v1/users/directory", response_model=Directory, operation_id="directory")
    async def directory() -> Directory:
        return Directory(page=AccountsPage(items=[]), total=0)

    @app.api_route("/api/v1/users/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
                   include_in_schema=False)
    async def users_echo(request: Request) -> JSONResponse:
        status = 201 if request.method == "POST" else 200
        return JSONResponse(await echo(request), status_code=status, headers={
            "Location": "/api/v1/users/42", "ETag": '"v7"', "X-Internal-Secret": "s3cret",
            "Set-Cookie": "session=upstream", "Content-Language": "en",
        })

    @app.api_route("/api/v1/usersx", methods=["GET"], include_in_schema=False)
    async def usersx(request: Request) -> dict[str, Any]:
        return await echo(request)

    @app.api_route("/api/v1/secret", methods=["GET"], include_in_schema=False)
    async def secret(request: Request) -> dict[str, Any]:
        return await echo(request)

    @app.get("/api/v1/internal/stuff", response_model=Internal, operation_id="internal")
    async def internal() -> Internal:
        return Internal(secret="x")

    return app


def issuance_app(codec: TokenCodec, **kwargs: Any) -> FastAPI:
    app = service_app("issuance", codec, **kwargs)

    @app.get("/api/v1/programme/periods", response_model=IssuancePage, operation_id="list")
    async def list_periods() -> IssuancePage:
        return IssuancePage(rows=[Period(year=2020)])

    return app


# Transports --------------------------------------------------------------------------------------
class Faulty(httpx.AsyncBaseTransport):
    """Delegates to an in-process app; raises the queued transport errors first. Counts calls."""

    def __init__(self, inner: httpx.AsyncBaseTransport):
        self.inner = inner
        self.faults: list[Exception] = []
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.faults:
            fault = self.faults.pop(0)
            raise fault
        return await self.inner.handle_async_request(request)


def refused(request: httpx.Request) -> httpx.ConnectError:
    return httpx.ConnectError("[Errno 111] Connection refused", request=request)


# The harness ----------------------------------------------------------------------------------------
@dataclass
class Harness:
    client: httpx.AsyncClient
    apps: dict[str, FastAPI]
    transports: dict[str, Faulty]
    codec: TokenCodec
    keys_dir: Path
    refused_url: str
    approvals: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def token(self, user_id: str, *roles: str, lifetime: timedelta = timedelta(minutes=5),
              **claims: Any) -> str:
        return self.codec.issue(user_id=user_id, username=user_id, roles=roles, lifetime=lifetime, **claims)

    def bearer(self, user_id: str = "u-1", *roles: str, **headers: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id, *roles)}", **headers}

    def calls(self, service: str) -> list[tuple[str, str, bytes]]:
        return self.apps[service].state.calls


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A bound TCP port nobody listens on: connecting is refused at once, and no one can take it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


APPROVALS = {
    "accounts": [
        {"id": "a-old", "state": "pending", "requested_at": "2020-03-01T10:00:00+00:00"},
        {"id": "a-new", "state": "pending", "requested_at": "2020-03-03T10:00:00Z"},
        {"id": "a-done", "state": "approved", "requested_at": "2020-03-04T10:00:00+00:00"},
    ],
    # -06:00: 2020-03-02T06:00 local is 12:00 UTC, between the two accounts items
    "issuance": [{"id": "i-mid", "state": "pending", "requested_at": "2020-03-02T06:00:00-06:00"}],
}


@pytest.fixture
async def harness(tmp_path: Path, refused_url: str) -> AsyncIterator[Harness]:
    private, public = tmp_path / "jwt_private.pem", tmp_path / "jwt_public.pem"
    generate_keypair(private, public)
    codec = TokenCodec(public_key_file=public, private_key_file=private, issuer=ISSUER, audience=AUDIENCE)
    dead = [{"id": 1, "state": "dead", "dead_at": "2020-05-01T00:00:00+00:00"}]
    apps: dict[str, FastAPI] = {
        "accounts": accounts_app(codec, approvals=APPROVALS["accounts"], dead_letters=dead),
        "issuance": issuance_app(codec, approvals=APPROVALS["issuance"]),
        # transfers lets only administrators list its approvals: an authority is refused there.
        "transfers": service_app("transfers", codec, approval_roles=("administrator",)),
        "compliance": service_app("compliance", codec),
        "auctions": service_app("auctions", codec),
    }
    transports = {s: Faulty(httpx.ASGITransport(app=a)) for s, a in apps.items()}
    upstreams = [Upstream(service=s, api_url=f"http://{s}.internal" if s in apps else refused_url,
                          worker_url=refused_url) for s in SERVICES]
    settings = RegistrySettings(service="gateway", jwt_public_key_file=public, jwt_private_key_file=private)
    gateway = create_app(settings, upstreams, transports=transports)
    async with LifespanManager(gateway), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=gateway), base_url="http://gateway.test"
    ) as client:
        yield Harness(client=client, apps=apps, transports=transports, codec=codec, keys_dir=tmp_path,
                      refused_url=refused_url, approvals=APPROVALS)


@pytest.fixture
def other_key_token(tmp_path: Path) -> Callable[..., str]:
    """Tokens signed with a key the gateway does not trust."""
    private, public = tmp_path / "other" / "private.pem", tmp_path / "other" / "public.pem"
    generate_keypair(private, public)
    codec = TokenCodec(public_key_file=public, private_key_file=private, issuer=ISSUER, audience=AUDIENCE)

    def mint(user_id: str, *roles: str) -> str:
        return codec.issue(user_id=user_id, username=user_id, roles=roles, lifetime=timedelta(minutes=5))

    return mint


@pytest.fixture
def faults() -> Callable[..., Any]:
    """``faults(kind)`` builds a transport error: "refused" or "timeout"."""

    def make(kind: str) -> Exception:
        request = httpx.Request("GET", "http://upstream.internal/")
        if kind == "refused":
            return refused(request)
        if kind == "timeout":
            return httpx.ReadTimeout("timed out", request=request)
        raise ValueError(kind)

    return make
