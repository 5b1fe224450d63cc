"""HTTP face of accounts: ``/api/v1/accounts`` (requests, lifecycle, representatives, reading) and
``/api/v1/account-holders``.

Who may call what (``tests/system/rights_matrix.csv``): any signed-in user may read, and sees what
:func:`account_service.require_account_access` allows (someone else's account answers 404, as if it did
not exist); administrators and participants (for their own kind) request accounts; administrators
approve, reject, close and manage representatives; administrators and the authority suspend and
reactivate; the enforcement office (authority-readonly) changes nothing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from accounts import account_service as service
from accounts.domain.lifecycle import AccountState, Action, RequestKind
from registry_common.auth import CurrentPrincipal, Principal, Role, require_roles
from registry_common.routes import ReadConn, WriteConn

accounts_router = APIRouter(prefix="/api/v1/accounts", tags=["accounts"])
holders_router = APIRouter(prefix="/api/v1/account-holders", tags=["account-holders"])

Administrator = Annotated[Principal, Depends(require_roles(Role.ADMINISTRATOR))]
Requester = Annotated[Principal, Depends(require_roles(Role.ADMINISTRATOR, Role.INSTALLATION, Role.INTERMEDIARY,
                                                      Role.VERIFIER))]
Supervisor = Annotated[Principal, Depends(require_roles(Role.ADMINISTRATOR, Role.AUTHORITY))]
Right = Literal["initiate", "approve", "view"]
AccountKindName = Literal["central", "delivery", "trading", "verifier", "cap", "reserve", "allocation", "auction",
                          "cancellation"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Contact(Strict):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    phone: str | None = Field(default=None, pattern=r"^\+?[0-9 ()-]{7,25}$")


class HolderIn(Strict):
    name: str = Field(min_length=1, max_length=300)
    tax_id: str = Field(min_length=12, max_length=20, description="RFC: 12 characters (persona moral) or 13 "
                        "(persona física)")
    address: str = Field(min_length=1, max_length=500)
    contacts: list[Contact] = Field(min_length=1, max_length=20)


class AccountRequest(Strict):
    kind: RequestKind = Field(description="installation opens a central and a delivery account together")
    name: str = Field(min_length=1, max_length=300)
    holder: HolderIn | None = Field(default=None, description="a new holder; or give `holder_id`")
    holder_id: UUID | None = Field(default=None, description="an existing holder; or give `holder`")


class ChangeReason(Strict):
    reason: str = Field(min_length=1, max_length=2000)


class OptionalChangeReason(Strict):
    reason: str | None = Field(default=None, max_length=2000)


class RepresentativeIn(Strict):
    user_id: UUID
    rights: list[Right] = Field(min_length=1, max_length=3)


class AccountOut(BaseModel):
    id: str
    kind: str
    name: str
    state: str
    state_reason: str | None = None
    holder_id: UUID | None = None
    holder_name: str | None = None
    installation_id: str | None = Field(default=None, description="for a delivery account: its central account")
    paired_account_id: str | None = Field(default=None, description="the other account of an installation")
    requested_by: str | None = None
    created_at: Any
    updated_at: Any
    version: int


class AccountPage(BaseModel):
    items: list[AccountOut]
    next_cursor: str | None = None


class RepresentativeOut(BaseModel):
    account_id: str
    user_id: UUID
    username: str
    display_name: str
    rights: list[str]
    linked_at: Any


class RepresentativeList(BaseModel):
    items: list[RepresentativeOut]


class HolderOut(BaseModel):
    id: UUID
    name: str
    tax_id: str
    address: str
    contacts: list[dict[str, Any]]
    created_at: Any


class HolderPage(BaseModel):
    items: list[HolderOut]
    next_cursor: str | None = None


# Accounts ----------------------------------------------------------------------------------------
@accounts_router.post("", response_model=AccountOut, status_code=201)
async def request_opening(body: AccountRequest, conn: WriteConn, who: Requester, response: Response) -> Any:
    """Ask for an account, in state `requested`, for a new holder or an existing one (`holder_id`). An
    installation's central (CEN-n) and delivery (ENT-n) accounts are requested together; the answer is
    the central one, naming the other in `paired_account_id`. A participant may ask only for its own
    kind (installation, intermediary, verifier) and sees the request until it is decided; an
    administrator then approves it and links the representatives."""
    rows = await service.request_account(conn, data=body.model_dump(mode="json"), principal=who)
    response.headers["Location"] = f"/api/v1/accounts/{rows[0].id}"
    return service.public_account(rows[0])


@accounts_router.get("", response_model=AccountPage)
async def list_accounts(
    conn: ReadConn, who: CurrentPrincipal, limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=40, description="`next_cursor` of the previous page")] = None,
    kind: AccountKindName | None = None, state: AccountState | None = None, holder_id: UUID | None = None,
) -> dict[str, Any]:
    """Accounts by id. Oversight roles see every account; a participant the accounts it represents."""
    return await service.list_accounts(conn, who, kind=kind, state=state.value if state else None,
                                       holder_id=holder_id, limit=limit, cursor=cursor)


@accounts_router.get("/{account_id}", response_model=AccountOut)
async def read_account(account_id: str, conn: ReadConn, who: CurrentPrincipal) -> Any:
    return service.public_account(await service.require_account_access(conn, who, account_id, None))


async def _transition(conn: Any, account_id: str, action: Action, who: Principal, reason: str | None) -> Any:
    return service.public_account(await service.transition(conn, account_id, action, actor=who.user_id,
                                                           reason=reason))


@accounts_router.post("/{account_id}/approve", response_model=AccountOut)
async def approve_account(account_id: str, conn: WriteConn, who: Administrator,
                          body: OptionalChangeReason | None = None) -> Any:
    """requested → active; an installation's two accounts open together (one `account_opened` each)."""
    return await _transition(conn, account_id, Action.APPROVE, who, body.reason if body else None)


@accounts_router.post("/{account_id}/reject", response_model=AccountOut)
async def reject_account(account_id: str, body: ChangeReason, conn: WriteConn, who: Administrator) -> Any:
    """requested → rejected, with a reason (both accounts of an installation)."""
    return await _transition(conn, account_id, Action.REJECT, who, body.reason)


@accounts_router.post("/{account_id}/suspend", response_model=AccountOut)
async def suspend_account(account_id: str, body: ChangeReason, conn: WriteConn, who: Supervisor) -> Any:
    """active → suspended: no outgoing movements; incoming ones are still accepted. Only this account."""
    return await _transition(conn, account_id, Action.SUSPEND, who, body.reason)


@accounts_router.post("/{account_id}/reactivate", response_model=AccountOut)
async def reactivate_account(account_id: str, conn: WriteConn, who: Supervisor,
                             body: OptionalChangeReason | None = None) -> Any:
    """suspended → active."""
    return await _transition(conn, account_id, Action.REACTIVATE, who, body.reason if body else None)


@accounts_router.post("/{account_id}/close", response_model=AccountOut)
async def close_account(account_id: str, body: ChangeReason, conn: WriteConn, who: Administrator) -> Any:
    """active or suspended → closed, only with zero holdings: no units and no open hold from or to it.
    An installation's two accounts close together."""
    return await _transition(conn, account_id, Action.CLOSE, who, body.reason)


# Representatives ---------------------------------------------------------------------------------
@accounts_router.get("/{account_id}/representatives", response_model=RepresentativeList)
async def list_representatives(account_id: str, conn: ReadConn, who: CurrentPrincipal) -> dict[str, Any]:
    await service.require_account_access(conn, who, account_id, None)
    return {"items": await service.list_representatives(conn, account_id)}


@accounts_router.post("/{account_id}/representatives", response_model=RepresentativeOut,
                      responses={200: {"description": "the rights of an existing link were replaced, or "
                                                       "were already these"}, 201: {"description": "linked"}})
async def link_representative(account_id: str, body: RepresentativeIn, conn: WriteConn, who: Administrator,
                              response: Response) -> Any:
    """Link a user to the account with rights (initiate, approve, view), or replace its rights."""
    row, outcome = await service.link_representative(conn, account_id, user_id=body.user_id,
                                                     rights=list(body.rights), actor=who.user_id)
    response.status_code = 201 if outcome == "linked" else 200
    response.headers["Location"] = f"/api/v1/accounts/{account_id}/representatives"
    return service.public_representative(row)


@accounts_router.delete("/{account_id}/representatives/{user_id}", status_code=204)
async def unlink_representative(account_id: str, user_id: UUID, conn: WriteConn, who: Administrator) -> Response:
    await service.unlink_representative(conn, account_id, user_id=user_id, actor=who.user_id)
    return Response(status_code=204)


# Holders -----------------------------------------------------------------------------------------
@holders_router.get("", response_model=HolderPage)
async def list_holders(
    conn: ReadConn, who: CurrentPrincipal, limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=20, description="`next_cursor` of the previous page")] = None,
    tax_id: Annotated[str | None, Query(max_length=20)] = None,
) -> dict[str, Any]:
    """Holders by RFC. Oversight roles see every holder; a participant the holders of its accounts."""
    return await service.list_holders(conn, who, tax_id=tax_id, limit=limit, cursor=cursor)


@holders_router.get("/{holder_id}", response_model=HolderOut)
async def read_holder(holder_id: UUID, conn: ReadConn, who: CurrentPrincipal) -> Any:
    return service.public_holder(await service.get_holder(conn, who, holder_id))
