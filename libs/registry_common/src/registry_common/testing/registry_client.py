"""The whole registry as a person reaches it, through the gateway: for system tests and benchmarks.

A *party* is a user who represents one approved account with every right (created by the
administrator, signed in with its own password); the authority funds it from the cap account; transfers
are requested, polled, accepted, rejected or cancelled with the parties' own tokens. A party is handed
out once every service whose database the client holds (transfers' always; more on request) knows it.

    async with RegistryClient.open(gateway_url, admin_password=..., authority_token=...,
                                   transfers_dsn=...) as registry:
        sender, receiver = await registry.party(), await registry.party("intermediary", "intermediary")
        await registry.fund(sender, 100)
        transfer = (await registry.transfer(sender, receiver, 30)).json()

    # A system started with the REGISTRY_* settings ``env``; notifications must know each party too:
    async with RegistryClient.of(plan.gateway_url, env, authority_token=..., databases=["notifications"]) as registry:
        party = await registry.party(language="es")  # its e-mails, inbox and webhooks in Spanish
"""

from __future__ import annotations

import asyncio
import secrets
import string
import time
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import asyncpg
import httpx

from registry_common.testing.fixtures import wait_for

if TYPE_CHECKING:
    from registry_common.testing.webhook_receiver import Receiver

PASSWORD = "correct-horse-battery-staple"
FINAL_STATES = frozenset({"completed", "reversed", "failed"})
# What a service's read model must hold of a new party before ``party`` hands it out: (query, "account" or
# "user": whose id is $1). A database the client holds for a service not named here is only for queries.
_KNOWS_REPRESENTATIVE = ("SELECT count(*) FROM known_representatives WHERE account_id = $1", "account")
LEARNS: dict[str, tuple[tuple[str, str], ...]] = {
    "transfers": (_KNOWS_REPRESENTATIVE,),
    "auctions": (_KNOWS_REPRESENTATIVE,),
    "notifications": (_KNOWS_REPRESENTATIVE, ("SELECT count(*) FROM known_users WHERE user_id = $1", "user")),
}


@dataclass(frozen=True)
class Party:
    account_id: str
    user_id: str
    headers: dict[str, str]
    email: str = ""  # the representative's
    language: str | None = None  # the representative's, if chosen (else the registry's default)


def rfc() -> str:
    """A made-up Mexican RFC of a company (3 letters, date, 3-character homoclave)."""
    letters = "".join(secrets.choice(string.ascii_uppercase) for _ in range(3))
    homoclave = secrets.choice(string.ascii_uppercase) + secrets.choice(string.digits)
    return f"{letters}200101{homoclave}{secrets.choice('0123456789A')}"


class RegistryClient:
    def __init__(self, http: httpx.AsyncClient, gateway_url: str, *, admin: dict[str, str],
                 authority: dict[str, str], transfers_db: asyncpg.Pool,
                 databases: Mapping[str, asyncpg.Pool] | None = None):
        self.http = http
        self.gateway_url = gateway_url
        self.admin = admin
        self.authority = authority
        self.transfers_db = transfers_db  # to see when transfers' read model knows a new account
        # service -> its database: each a new party waits for (see LEARNS), and for the tests' own queries
        self.databases: dict[str, asyncpg.Pool] = {"transfers": transfers_db, **(databases or {})}

    @classmethod
    @asynccontextmanager
    async def open(cls, gateway_url: str, *, admin_password: str, authority_token: str, transfers_dsn: str,
                   databases: Mapping[str, str] | None = None, connections: int = 100,
                   request_timeout: float = 30.0) -> AsyncIterator[RegistryClient]:
        """Sign in as the first administrator (``admin``); ``authority_token`` funds parties. ``databases``
        (service -> DSN): more services' databases, in ``self.databases``."""
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with AsyncExitStack() as stack:
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=request_timeout, limits=limits))
            pool = await stack.enter_async_context(asyncpg.create_pool(transfers_dsn, min_size=1, max_size=4))
            more = {service: await stack.enter_async_context(asyncpg.create_pool(dsn, min_size=1, max_size=4))
                    for service, dsn in (databases or {}).items()}
            signed_in = await http.post(f"{gateway_url}/api/v1/auth/token",
                                        json={"username": "admin", "password": admin_password})
            assert signed_in.status_code == 200, signed_in.text
            admin = {"Authorization": f"Bearer {signed_in.json()['access_token']}"}
            yield cls(http, gateway_url, admin=admin, authority={"Authorization": f"Bearer {authority_token}"},
                      transfers_db=pool, databases=more)

    @classmethod
    def of(cls, gateway_url: str, env: Mapping[str, str], *, authority_token: str, databases: Collection[str] = (),
           **options: Any) -> AbstractAsyncContextManager[RegistryClient]:
        """``open`` for a system started with the ``REGISTRY_*`` settings ``env``: the administrator's password
        and the databases (transfers' and those of the services named in ``databases``) come from it."""
        server = env["REGISTRY_ADMIN_DATABASE_URL"].rsplit("/", 1)[0]
        prefix = env["REGISTRY_DATABASE_PREFIX"]
        return cls.open(gateway_url, admin_password=env["REGISTRY_BOOTSTRAP_ADMIN_PASSWORD"],
                        authority_token=authority_token, transfers_dsn=f"{server}/{prefix}transfers",
                        databases={service: f"{server}/{prefix}{service}" for service in databases}, **options)

    async def call(self, method: str, path: str, headers: dict[str, str], body: Any = None, *, key: bool = False,
                   expect: int | None = None, params: dict[str, Any] | None = None) -> httpx.Response:
        """One request through the gateway; ``key`` adds a fresh Idempotency-Key; ``expect`` asserts the status."""
        extra = {"Idempotency-Key": str(uuid4())} if key else {}
        answer = await self.http.request(method, f"{self.gateway_url}{path}", json=body, params=params,
                                         headers={**headers, **extra})
        if expect is not None:
            assert answer.status_code == expect, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer

    # Parties -------------------------------------------------------------------------------------
    async def party(self, kind: str = "installation", role: str = "installation", *,
                    language: str | None = None) -> Party:
        """A new user (speaking ``language``, if given) representing a new approved account of ``kind`` with
        initiate, approve and view; returned once every service in ``self.databases`` that LEARNS names
        knows what it must of the account, the representative and the user."""
        username = f"rep-{uuid4().hex[:10]}"
        email = f"{username}@example.mx"
        user = (await self.call("POST", "/api/v1/users", self.admin, {
            "username": username, "display_name": "Representante", "email": email,
            **({"language": language} if language else {}), "roles": [role], "password": PASSWORD},
            expect=201)).json()
        account = (await self.call("POST", "/api/v1/accounts", self.admin, {
            "kind": kind, "name": f"Empresa {username}", "holder": {
                "name": f"Empresa {username} S.A. de C.V.", "tax_id": rfc(), "address": "Av. Reforma 1, CDMX",
                "contacts": [{"name": "Contacto", "email": f"c-{username}@example.mx"}]}}, expect=201)).json()
        await self.call("POST", f"/api/v1/accounts/{account['id']}/approve", self.admin, {}, expect=200)
        linked = await self.call("POST", f"/api/v1/accounts/{account['id']}/representatives", self.admin,
                                 {"user_id": user["id"], "rights": ["initiate", "approve", "view"]})
        assert linked.status_code in (200, 201), linked.text
        token = (await self.call("POST", "/api/v1/auth/token", {}, {"username": username, "password": PASSWORD},
                                 expect=200)).json()["access_token"]
        ids = {"account": account["id"], "user": user["id"]}
        for service, db in self.databases.items():
            for query, by in LEARNS.get(service, ()):
                await wait_for(lambda db=db, query=query, by=by: db.fetchval(query, ids[by]), timeout=60,
                               what=f"{service} to learn of {by} {ids[by]}"
                                    + (" and its representative" if by == "account" else ""))
        return Party(account["id"], user["id"], {"Authorization": f"Bearer {token}", "Accept-Language": "en"},
                     email, language)

    async def fund(self, party: Party, units: int) -> None:
        """Issue ``units`` allowances of 2021 into the cap account and allocate them to the party."""
        await self.call("POST", "/api/v1/ledger/movements", self.authority, {
            "kind": "issuance", "to_account_id": "SYS-CAP", "unit_type": "allowance", "vintage": 2021,
            "quantity": units}, key=True, expect=201)
        await self.call("POST", "/api/v1/ledger/movements", self.authority, {
            "kind": "allocation", "from_account_id": "SYS-CAP", "to_account_id": party.account_id,
            "unit_type": "allowance", "quantity": units}, key=True, expect=201)

    async def balance(self, party: Party) -> int:
        answer = await self.call("GET", f"/api/v1/accounts/{party.account_id}/holdings", self.authority,
                                 expect=200)
        return int(answer.json()["total"])

    async def webhook(self, party: Party, receiver: tuple[Receiver, str], name: str,
                      mode: str = "ok") -> dict[str, Any]:
        """Subscribe the party's account to the test receiver's endpoint ``name`` (answering by ``mode``, see
        webhook_receiver) and give the endpoint the subscription's secret; returns the subscription."""
        app, base = receiver
        body = (await self.call("POST", "/api/v1/webhook-subscriptions", party.headers,
                                {"account_id": party.account_id, "url": f"{base}/hook/{name}"}, expect=201)).json()
        with app.lock:
            app.secrets[name], app.modes[name] = body["secret"], mode
        return body

    # Transfers -----------------------------------------------------------------------------------
    async def transfer(self, sender: Party, receiver: Party, quantity: Any, *, expect: int | None = None,
                       **extra: Any) -> httpx.Response:
        """``extra``: more (or other) fields of the request; ``expect`` asserts the status."""
        return await self.call("POST", "/api/v1/transfers", sender.headers, {
            "sender_account_id": sender.account_id, "receiver_account_id": receiver.account_id,
            "unit_type": "allowance", "quantity": quantity, **extra}, key=True, expect=expect)

    async def act(self, transfer_id: str, action: str, who: Party) -> httpx.Response:
        """accept | reject | cancel | approve | decline."""
        return await self.call("POST", f"/api/v1/transfers/{transfer_id}/{action}", who.headers)

    async def state(self, transfer_id: str, who: Party) -> dict[str, Any]:
        return (await self.call("GET", f"/api/v1/transfers/{transfer_id}", who.headers, expect=200)).json()

    async def reaches(self, transfer_id: str, who: Party, states: str | Collection[str], *, within: float = 60.0,
                      wait: int = 5) -> dict[str, Any]:
        """Follow the transfer until it is in one of ``states`` (at most ``within`` seconds); returns it. Each
        read after the first names the version it has (``If-None-Match``) and waits up to ``wait`` seconds
        for the next (``Prefer: wait``): the API answers when the transfer changes, or 304. A failed read (a
        process restarting) counts as "not yet"."""
        wanted = {states} if isinstance(states, str) else set(states)
        deadline = time.monotonic() + within
        path, tag, last = f"/api/v1/transfers/{transfer_id}", None, None
        while time.monotonic() < deadline:
            following = {} if tag is None else {"If-None-Match": tag, "Prefer": f"wait={wait}"}
            try:
                answer = await self.call("GET", path, {**who.headers, **following})
            except httpx.HTTPError as exc:
                answer, last = None, exc
            if answer is not None and answer.status_code == 200:
                last, tag = answer.json(), answer.headers.get("etag")
                if last["state"] in wanted:
                    return dict(last)
            elif answer is None or answer.status_code != 304:
                last = last if answer is None else f"{answer.status_code} {answer.text[:500]}"
                tag = None
                await asyncio.sleep(0.05)
        raise AssertionError(f"timed out after {within}s waiting for transfer {transfer_id} to be "
                             f"{' or '.join(sorted(wanted))}; last answer: {last!r}")

    # Checks --------------------------------------------------------------------------------------
    async def reconciliation(self) -> dict[str, Any]:
        return (await self.call("GET", "/api/v1/transfers/reconciliation", self.authority, expect=200)).json()

    async def ledger_audit(self) -> dict[str, Any]:
        return (await self.call("GET", "/api/v1/ledger/audit", self.authority, expect=200)).json()

    async def all_final(self, *, within: float = 60.0) -> dict[str, Any]:
        """Wait (at most ``within`` seconds) until every transfer is final; returns the reconciliation."""
        async def check() -> dict[str, Any] | None:
            report = await self.reconciliation()
            return report if report["final"] == report["transfers"] else None

        return await wait_for(check, timeout=within, interval=0.25, what="every transfer to be final")
