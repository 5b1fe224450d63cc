"""``/api/v1/transfers``: request, accept, reject, cancel, the sender's second approval, lists, history,
and the reconciliation against the ledger's holds."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote
from uuid import UUID

import httpx
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import bindparam, func, literal, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert

from registry_common import idempotency
from registry_common.audit import record_audit
from registry_common.auth import OVERSIGHT_ROLES, CurrentPrincipal, Principal, Role, require_roles
from registry_common.change_feed import ChangeFeed
from registry_common.db import asyncpg_dsn
from registry_common.errors import RegistryError
from registry_common.http_transport import LeanHTTPTransport
from registry_common.routes import ReadConn, WriteConn
from transfers import programme_end, service
from transfers.domain.saga import State, reconcile
from transfers.tables import account_transfer_settings, directory, transfer_history, transfers

router = APIRouter(prefix="/api/v1/transfers", tags=["transfers"])
Overseer = Annotated[Principal, Depends(require_roles(*OVERSIGHT_ROLES))]
Administrator = Annotated[Principal, Depends(require_roles(Role.ADMINISTRATOR))]


MAX_WAIT_SECONDS = 5.0
"""The longest ``Prefer: wait`` a read honours (below the gateway's 10-second upstream timeout)."""
MAX_WAITING_READS = 100
"""Reads waiting at once in one API process, at most (the gateway keeps up to 200 connections to it)."""
CHANGES_CHANNEL = "transfer_changed"  # the transfers table's update trigger (migration t0004)
FINAL_STATES = frozenset({State.COMPLETED, State.REVERSED, State.FAILED})


@asynccontextmanager
async def api_resources(app: FastAPI) -> AsyncIterator[None]:
    """The accounts API, for the balance pre-check and the reconciliation (never for truth); and the
    feed of committed transfer changes, for reads that wait for one."""
    url = app.state.settings.accounts_api_url
    transport = (LeanHTTPTransport(max_connections=100) if url.startswith("http://")  # kept alive under load
                 else httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)))
    async with httpx.AsyncClient(base_url=url, timeout=5.0, transport=transport) as client, \
            ChangeFeed(asyncpg_dsn(app.state.settings.app_database_url), CHANGES_CHANNEL) as changes:
        app.state.accounts_api = client
        app.state.accounts_transport = transport
        app.state.transfer_changes = changes
        app.state.waiting_reads = 0
        app.state.autocommit_engine = app.state.engine.execution_options(isolation_level="AUTOCOMMIT")
        yield


class TransferIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sender_account_id: str = Field(min_length=1, max_length=40)
    receiver_account_id: str = Field(min_length=1, max_length=40)
    unit_type: Literal["allowance", "offset"]
    quantity: Annotated[int, Field(gt=0, strict=True, description="whole units")]
    vintage: int | None = Field(default=None, ge=2000, le=2100)


class SettingsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sender_approval_required: bool


def public(row: Any) -> dict[str, Any]:
    return _public_fields(row._mapping)


def _public_fields(transfer: Any) -> dict[str, Any]:
    return {k: v for k, v in transfer.items() if k not in ("version", "reminders_sent")}


def entity_tag(version: int) -> str:
    """The transfer's ETag: its version, which every change of state or history increments."""
    return f'"{version}"'


async def available_balance(request: Request, body: TransferIn) -> int | None:
    """The sender's holdings of this unit type (and vintage), asked of accounts with the caller's own
    token; None if accounts cannot answer now (the hold decides)."""
    client: httpx.AsyncClient = request.app.state.accounts_api
    # Straight on the client's transport: a GET with the caller's token needs none of the client's auth,
    # cookie or redirect handling. Its headers, base URL and timeouts are the client's.
    sender = quote(body.sender_account_id, safe="")  # whatever text the caller sent, escaped
    asked = httpx.Request("GET", client.base_url.join(f"api/v1/accounts/{sender}/holdings"),
                          headers={**client.headers, "Authorization": request.headers.get("authorization", "")},
                          extensions={"timeout": client.timeout.as_dict()})
    try:
        answer = await request.app.state.accounts_transport.handle_async_request(asked)
        try:
            await answer.aread()
        finally:
            await answer.aclose()
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    return sum(line["quantity"] for line in answer.json()["by_type_and_vintage"]
               if line["unit_type"] == body.unit_type and body.vintage in (None, line["vintage"]))


@router.post("", status_code=201)
async def request_transfer(body: TransferIn, request: Request, who: CurrentPrincipal,
                           key: idempotency.IdempotencyKey) -> JSONResponse:
    """Start a transfer from an account you represent with the ``initiate`` right. The receiver must
    accept within the acceptance window, or the units go back."""
    # The balance is asked of accounts before the transaction opens, so no database connection waits on
    # that call; it counts only for a caller with the initiate right (a repeat answers what it answered).
    balance = await available_balance(request, body)
    async with request.app.state.engine.begin() as conn:  # what WriteConn gives: commit unless it raises
        stored = await idempotency.reserve(conn, key, who.user_id, body.model_dump(mode="json"))
        if stored is not None:
            return JSONResponse(stored["response"], status_code=stored["status_code"],
                                headers={"Location": f"/api/v1/transfers/{stored['response'].get('id')}"})
        await programme_end.check_programme_open(conn, request.app.state.clock.now())
        rights = await service.rights_on(conn, body.sender_account_id, who.user_id)
        available = balance if "initiate" in rights else None
        row = await service.request_transfer(conn, body=body.model_dump(), who=who,
                                             now=request.app.state.clock.now(), available=available,
                                             sender_rights=rights)
        content = _json(public(row))
        await idempotency.remember(conn, key, who.user_id, 201, content)
    return JSONResponse(content, status_code=201,
                        headers={"Location": f"/api/v1/transfers/{row.id}", "ETag": entity_tag(row.version)})


def _json(value: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, UUID) else v)
            for k, v in value.items()}


@router.get("")
async def list_transfers(
    conn: ReadConn, who: CurrentPrincipal, account_id: str | None = None,
    direction: Literal["outgoing", "incoming"] | None = None, state: State | None = None,
    created_from: datetime | None = None, created_to: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")] = None,
) -> dict[str, Any]:
    query = select(transfers).order_by(transfers.c.created_at.desc(), transfers.c.id.desc()).limit(limit + 1)
    if not who.has_any(OVERSIGHT_ROLES):
        mine = select(directory.representatives.c.account_id).where(
            directory.representatives.c.user_id == _uuid(who.user_id))
        query = query.where(or_(transfers.c.sender_account_id.in_(mine), transfers.c.receiver_account_id.in_(mine)))
    if account_id is not None:
        sides = {"outgoing": [transfers.c.sender_account_id], "incoming": [transfers.c.receiver_account_id]}.get(
            direction or "", [transfers.c.sender_account_id, transfers.c.receiver_account_id])
        query = query.where(or_(*(side == account_id for side in sides)))
    if state is not None:
        query = query.where(transfers.c.state == state)
    if created_from is not None:
        query = query.where(transfers.c.created_at >= created_from)
    if created_to is not None:
        query = query.where(transfers.c.created_at < created_to)
    if cursor is not None:
        at, _, last = cursor.partition("|")
        try:
            position = (datetime.fromisoformat(at), UUID(last))
        except ValueError as exc:
            raise RegistryError("request.invalid", field="cursor") from exc
        if position[0].tzinfo is None:  # every cursor this API gives carries its offset
            raise RegistryError("request.invalid", field="cursor")
        query = query.where(tuple_(transfers.c.created_at, transfers.c.id) < tuple_(*position))
    rows = (await conn.execute(query)).all()
    page = rows[:limit]
    following = f"{page[-1].created_at.isoformat()}|{page[-1].id}" if len(rows) > limit else None
    return {"items": [public(r) for r in page], "next_cursor": following}


def _uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


@router.get("/reconciliation")
async def reconciliation(request: Request, conn: ReadConn, _who: Overseer) -> dict[str, Any]:
    """Every transfer against its hold in the ledger (ARCHITECTURE.md's table), every hold against a
    transfer, and transfers not final after ``REGISTRY_STUCK_AFTER_SECONDS``."""
    holds: dict[Any, str] = {}
    cursor: str | None = None
    while True:
        answer = await request.app.state.accounts_api.get(
            "/api/v1/ledger/holds", params={"limit": 5000, **({"cursor": cursor} if cursor else {})},
            headers={"Authorization": request.headers.get("authorization", "")})
        if answer.status_code != 200:
            raise RegistryError("service.unavailable")
        page = answer.json()
        holds.update({UUID(h["transfer_id"]): h["state"] for h in page["items"]})
        cursor = page["next_cursor"]
        if cursor is None:
            break
    rows = (await conn.execute(select(transfers.c.id, transfers.c.state, transfers.c.updated_at))).all()
    known = {r.id: (State(r.state), r.updated_at) for r in rows}
    # Holds made outside the saga (the ledger's own API) have no transfer; only sagas' holds count.
    saga_holds = {tid: state for tid, state in holds.items() if tid in known}
    orphans = [tid for tid in holds if tid not in known]
    problems = reconcile(known, saga_holds, now=datetime.now(UTC),
                         stuck_after=timedelta(seconds=request.app.state.settings.stuck_after_seconds))
    finals = sum(1 for state, _ in known.values() if state in (State.COMPLETED, State.REVERSED, State.FAILED))
    return {"ok": not problems, "transfers": len(known), "final": finals, "holds_outside_transfers": len(orphans),
            "problems": problems}


# The transfer and its history in one statement (one snapshot, no transaction needed): a row per step.
_HISTORY_COLUMNS = [column for column in transfer_history.c if column.name != "transfer_id"]
_WITH_HISTORY = (
    select(transfers, *(column.label(f"step_{column.name}") for column in _HISTORY_COLUMNS))
    .select_from(transfers.outerjoin(transfer_history, transfer_history.c.transfer_id == transfers.c.id))
    .where(transfers.c.id == bindparam("transfer_id")).order_by(transfer_history.c.id)
)
_TRANSFER_FIELDS = [column.name for column in transfers.c]


async def read_with_history(conn: Any, transfer_id: UUID) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The transfer's fields and its state history, oldest step first (None if there is no such transfer)."""
    rows = [row._mapping for row in (await conn.execute(_WITH_HISTORY, {"transfer_id": transfer_id})).all()]
    if not rows:
        return None, []
    steps = [{column.name: row[f"step_{column.name}"] for column in _HISTORY_COLUMNS} for row in rows
             if row["step_id"] is not None]
    return {name: rows[0][name] for name in _TRANSFER_FIELDS}, steps


WAIT_PREFERENCE = re.compile(r"(?:^|[,;]\s*)wait\s*=\s*(\d+)", re.IGNORECASE)


def preferred_wait(prefer: str | None) -> float:
    """Seconds of RFC 7240's ``Prefer: wait=N`` (0 without it), at most MAX_WAIT_SECONDS."""
    found = WAIT_PREFERENCE.search(prefer or "")
    return min(float(found.group(1)), MAX_WAIT_SECONDS) if found else 0.0


def matches(if_none_match: str | None, tag: str) -> bool:
    """RFC 9110's weak comparison of ``If-None-Match`` with the current ETag (``*`` matches any)."""
    if if_none_match is None:
        return False
    given = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in given or tag in given


@router.get("/{transfer_id}", responses={
    200: {"description": "The transfer with its full state history; `ETag` is its version."},
    304: {"description": "`If-None-Match` names the current version (after waiting, with `Prefer: wait`, "
                         "for a change that did not come)."}})
async def get_transfer(
    transfer_id: UUID, request: Request, who: CurrentPrincipal,
    if_none_match: Annotated[str | None, Header(description="the `ETag` you have: answer 304 while it is current")]
    = None,
    prefer: Annotated[str | None, Header(description=(
        f"`wait=N` with `If-None-Match`: wait up to N seconds (at most {MAX_WAIT_SECONDS:.0f}) for the transfer "
        "to change, answering as soon as it does"))] = None,
) -> Response:
    """The transfer with its full state history. A client following a transfer sends the `ETag` it has in
    `If-None-Match` with `Prefer: wait=5`: the answer comes when the transfer changes (or 304 after 5 s),
    with no polling."""
    wait = waiting_allowed(request, preferred_wait(prefer) if if_none_match is not None else 0.0)
    transfer, history = await follow(request, transfer_id, who, if_none_match, wait)
    tag = entity_tag(transfer["version"])
    if history is None:
        return Response(status_code=304, headers=_tag_headers(tag, wait))
    return JSONResponse({**_json(_public_fields(transfer)), "history": [_json(step) for step in history]},
                        headers=_tag_headers(tag, wait))


async def follow(request: Request, transfer_id: UUID, who: Principal, if_none_match: str | None,
                 wait: float, *, seen: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """The transfer once its ETag is not one of ``if_none_match`` — waiting up to ``wait`` seconds for a
    change — with its history; or (the transfer, None) if it did not change. Who may see it is checked at
    the first read (not again while waiting; ``seen``: already checked by the caller)."""
    reads, changes = request.app.state.autocommit_engine, request.app.state.transfer_changes
    deadline = time.monotonic() + wait
    with changes.watch(str(transfer_id)) as watch, _counted_while_waiting(request, wait):
        while True:  # the watch is registered before the read: a change after it is not missed
            watch.changed.clear()
            async with reads.connect() as conn:  # no transaction; no connection is held while waiting
                transfer, history = await read_with_history(conn, transfer_id)
                if transfer is None:
                    raise RegistryError("transfer.not_found")
                if not seen and not await service.visible(conn, transfer["sender_account_id"],
                                                          transfer["receiver_account_id"], who):
                    raise RegistryError("transfer.not_found")
                seen = True
            watch.known = str(transfer["version"])
            if not matches(if_none_match, entity_tag(transfer["version"])):
                return transfer, history
            left = deadline - time.monotonic()
            if left <= 0:
                return transfer, None
            try:
                await asyncio.wait_for(watch.changed.wait(), timeout=left)
            except TimeoutError:
                pass


def waiting_allowed(request: Request, wait: float) -> float:
    """``wait``, or 0 when MAX_WAITING_READS reads already wait in this process (a preference may be
    ignored, RFC 7240): waiting reads hold the gateway's connections to this API, which others need too."""
    return wait if request.app.state.waiting_reads < MAX_WAITING_READS else 0.0


@contextmanager
def _counted_while_waiting(request: Request, wait: float) -> Iterator[None]:
    state = request.app.state
    counted = 1 if wait > 0 else 0
    state.waiting_reads += counted
    try:
        yield
    finally:
        state.waiting_reads -= counted


def _tag_headers(tag: str, wait: float) -> dict[str, str]:
    return {"ETag": tag, **({"Preference-Applied": f"wait={wait:.0f}"} if wait else {})}


def _action(name: str) -> Any:
    async def perform(
        transfer_id: UUID, request: Request, response: Response, who: CurrentPrincipal,
        prefer: Annotated[str | None, Header(description=(
            f"`wait=N`: after the action, wait up to N seconds (at most {MAX_WAIT_SECONDS:.0f}) for the transfer's "
            "next change (e.g. accepted → completed) and answer with it"))] = None,
    ) -> dict[str, Any]:
        async with request.app.state.engine.begin() as conn:  # committed before any wait
            row = await service.act(conn, transfer_id, name, who=who, now=request.app.state.clock.now())
        transfer = dict(row._mapping)
        if (wait := waiting_allowed(request, preferred_wait(prefer))) and row.state not in FINAL_STATES:
            transfer, _ = await follow(request, transfer_id, who, entity_tag(row.version), wait, seen=True)
            response.headers["Preference-Applied"] = f"wait={wait:.0f}"
        response.headers["ETag"] = entity_tag(transfer["version"])
        return _public_fields(transfer)

    perform.__name__ = f"{name}_transfer"
    perform.__doc__ = {
        "accept": "The receiver accepts (before the deadline): the held units settle to it. Repeating it "
                  "answers with the state. With `Prefer: wait=5` the answer comes once the transfer has moved on "
                  "(completed), or after 5 seconds with it accepted.",
        "reject": "The receiver rejects: the held units go back to the sender.",
        "cancel": "The sender cancels while it awaits acceptance: the held units go back.",
        "approve": "A second representative of the sending account (with the approve right) approves it.",
        "decline": "A second representative of the sending account declines it.",
    }[name]
    return perform


for _name in ("accept", "reject", "cancel", "approve", "decline"):
    router.post(f"/{{transfer_id}}/{_name}", name=f"{_name}_transfer")(_action(_name))


@router.put("/accounts/{account_id}/settings")
async def account_settings(account_id: str, body: SettingsIn, conn: WriteConn, who: Administrator) -> dict[str, Any]:
    """Whether outgoing transfers of this account need a second representative's approval."""
    known = select(directory.accounts.c.account_id, literal(body.sender_approval_required)).where(
        directory.accounts.c.account_id == account_id)
    changed = await conn.execute(pg_insert(account_transfer_settings).from_select(
        ["account_id", "sender_approval_required"], known).on_conflict_do_update(
        index_elements=["account_id"], set_={"sender_approval_required": body.sender_approval_required,
                                             "updated_at": func.now()})
        .returning(account_transfer_settings.c.account_id))
    if changed.first() is None:  # the account is not (yet) in the directory
        raise RegistryError("transfer.unknown_account", field="account_id", account_id=account_id)
    await record_audit(conn, action="transfer.account_settings", entity_type="account", entity_id=account_id,
                       actor=who.user_id, details=body.model_dump())
    return {"account_id": account_id, **body.model_dump()}
