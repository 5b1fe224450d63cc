"""HTTP face of identity: ``/api/v1/auth/token``, ``/api/v1/auth/refresh`` and ``/api/v1/users``."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, EmailStr, Field
from sqlalchemy import any_, literal, select

from accounts import identity
from accounts.domain.identity import SignInOutcome
from accounts.tables import users
from registry_common.auth import OVERSIGHT_ROLES, CurrentPrincipal, Principal, Role, require_roles
from registry_common.errors import RegistryError
from registry_common.routes import ReadConn, WriteConn

auth_router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
users_router = APIRouter(prefix="/api/v1/users", tags=["users"])
Administrator = Annotated[Principal, Depends(require_roles(Role.ADMINISTRATOR))]
Overseer = Annotated[Principal, Depends(require_roles(*OVERSIGHT_ROLES))]
USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{2,63}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignIn(Strict):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class Refresh(Strict):
    refresh_token: str = Field(min_length=1, max_length=512)


class Tokens(BaseModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


class UserCreate(Strict):
    username: str = Field(pattern=USERNAME_PATTERN)
    display_name: str = Field(min_length=1, max_length=200)
    email: EmailStr
    language: Literal["es", "en"] = "es"
    roles: list[Role] = Field(min_length=1)
    password: str = Field(min_length=1, max_length=1024)


class UserUpdate(Strict):
    display_name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    language: Literal["es", "en"] | None = None
    roles: list[Role] | None = Field(default=None, min_length=1)
    password: str | None = Field(default=None, min_length=1, max_length=1024)
    reason: str | None = Field(default=None, max_length=500)


class Reason(Strict):
    reason: str | None = Field(default=None, max_length=500)


class UserOut(BaseModel):
    id: UUID
    username: str
    display_name: str
    email: str
    language: str
    roles: list[str]
    active: bool
    locked_until: Any = None
    last_sign_in_at: Any = None
    created_at: Any
    updated_at: Any


class UserPage(BaseModel):
    items: list[UserOut]
    next_cursor: str | None = None


@auth_router.post("/token", response_model=Tokens)
async def token(body: SignIn, request: Request) -> dict[str, Any]:
    """Sign in with user name and password. Failed attempts are slowed and, after
    ``REGISTRY_LOGIN_MAX_FAILURES`` in a row, lock the user for ``REGISTRY_LOGIN_LOCK_MINUTES``."""
    state = request.app.state
    async with state.engine.begin() as conn:  # committed even when the attempt fails: it is audited
        result = await identity.sign_in(conn, username=body.username, password=body.password,
                                        settings=state.settings, codec=state.token_codec)
    if result.outcome is SignInOutcome.SUCCEEDED:
        assert result.tokens is not None
        return result.tokens
    if result.outcome is SignInOutcome.LOCKED or result.locked_until is not None:
        raise RegistryError("auth.account_locked", until=result.locked_until.isoformat()
                            if result.locked_until else "")
    if result.outcome is SignInOutcome.DEACTIVATED:
        raise RegistryError("auth.user_deactivated")
    await asyncio.sleep(identity.policy_of(state.settings).slowdown(max(result.failures, 1)))
    raise RegistryError("auth.invalid_credentials")


@auth_router.post("/refresh", response_model=Tokens)
async def refresh(body: Refresh, request: Request) -> dict[str, Any]:
    state = request.app.state
    async with state.engine.begin() as conn:
        tokens = await identity.refresh(conn, token=body.refresh_token, settings=state.settings,
                                        codec=state.token_codec)
    if tokens is None:
        raise RegistryError("auth.refresh_invalid")
    return tokens


@users_router.post("", response_model=UserOut, status_code=201)
async def create_user(body: UserCreate, conn: WriteConn, who: Administrator, response: Response) -> Any:
    row = await identity.create_user(conn, data=body.model_dump(mode="json"), actor=who.user_id)
    response.headers["Location"] = f"/api/v1/users/{row.id}"
    return identity.public_user(row)


@users_router.get("", response_model=UserPage)
async def list_users(
    conn: ReadConn, _who: Overseer, limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=64, description="`next_cursor` of the previous page")] = None,
    role: Role | None = None, active: bool | None = None,
) -> dict[str, Any]:
    query = select(users).order_by(users.c.username).limit(limit + 1)
    if cursor is not None:
        query = query.where(users.c.username > cursor)
    if role is not None:
        query = query.where(literal(role.value) == any_(users.c.roles))
    if active is not None:
        query = query.where(users.c.active.is_(active))
    rows = (await conn.execute(query)).all()
    return {"items": [identity.public_user(r) for r in rows[:limit]],
            "next_cursor": rows[limit - 1].username if len(rows) > limit else None}


@users_router.get("/me", response_model=UserOut)
async def me(conn: ReadConn, who: CurrentPrincipal) -> Any:
    try:
        user_id = UUID(who.user_id)
    except ValueError:  # a token of a principal that is no user of this registry (a service, a made-up id)
        raise RegistryError("user.not_found") from None
    return identity.public_user(await identity.get_user(conn, user_id))


@users_router.get("/{user_id}", response_model=UserOut)
async def get_user(user_id: UUID, conn: ReadConn, who: CurrentPrincipal) -> Any:
    if who.user_id != str(user_id) and not who.has_any(OVERSIGHT_ROLES):
        raise RegistryError("auth.forbidden", required="administrator")
    return identity.public_user(await identity.get_user(conn, user_id))


@users_router.patch("/{user_id}", response_model=UserOut)
async def update_user(user_id: UUID, body: UserUpdate, conn: WriteConn, who: Administrator) -> Any:
    changes = body.model_dump(mode="json", exclude={"reason"}, exclude_none=True)
    return identity.public_user(await identity.update_user(conn, user_id, changes=changes, actor=who.user_id,
                                                           reason=body.reason))


@users_router.post("/{user_id}/deactivate", response_model=UserOut)
async def deactivate_user(user_id: UUID, body: Reason, conn: WriteConn, who: Administrator) -> Any:
    return identity.public_user(await identity.deactivate_user(conn, user_id, actor=who.user_id,
                                                               reason=body.reason))


@users_router.post("/{user_id}/reactivate", response_model=UserOut)
async def reactivate_user(user_id: UUID, body: Reason, conn: WriteConn, who: Administrator) -> Any:
    """Reactivate a deactivated user, or lift a sign-in lock before it runs out."""
    return identity.public_user(await identity.reactivate_user(conn, user_id, actor=who.user_id,
                                                               reason=body.reason))
