"""Identity handlers: sign-in, refresh, and the users administrators manage. Each runs on the caller's
transaction; every change writes its audit row and its event in that same transaction."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any
from uuid import UUID, uuid4

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import any_, func, insert, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from accounts.domain.identity import LoginPolicy, SignInOutcome, password_problem
from accounts.settings import AccountsSettings
from accounts.tables import refresh_tokens, users
from registry_common.audit import record_audit
from registry_common.auth import Role, TokenCodec
from registry_common.errors import RegistryError, register_errors
from registry_common.messaging.outbox import Outbox
from registry_common.settings import Environment
from registry_contracts.accounts import UserDeactivated, UserRegistered, UserUpdated

register_errors({
    "auth.invalid_credentials": (401, "Usuario o contraseña incorrectos.", "Wrong user name or password."),
    "auth.account_locked": (423, "Usuario bloqueado por intentos fallidos hasta {until}.",
                            "User locked after failed sign-ins until {until}."),
    "auth.user_deactivated": (403, "El usuario está desactivado.", "The user is deactivated."),
    "auth.refresh_invalid": (401, "El token de renovación no es válido.", "The refresh token is not valid."),
    "user.not_found": (404, "El usuario no existe.", "The user does not exist."),
    "user.username_taken": (409, "El nombre de usuario ya existe.", "The user name is already taken."),
    "user.password_rejected": (422, "La contraseña no es aceptable ({reason}).",
                               "The password is not acceptable ({reason})."),
    "user.cannot_deactivate_self": (409, "No puede desactivar su propio usuario.",
                                    "You cannot deactivate your own user."),
})

OUTBOX = Outbox("accounts")


@cache
def hasher() -> PasswordHasher:
    return PasswordHasher()


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(hasher().hash, password)


async def password_matches(password_hash: str, password: str) -> bool:
    def verify() -> bool:
        try:
            return hasher().verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


@cache
def _decoy_hash() -> str:
    return hasher().hash(secrets.token_urlsafe(16))


def policy_of(settings: AccountsSettings) -> LoginPolicy:
    return LoginPolicy(
        max_failures=settings.login_max_failures,
        lock_for=timedelta(minutes=settings.login_lock_minutes),
        slowdown_base_seconds=settings.login_slowdown_base_seconds,
        slowdown_max_seconds=settings.login_slowdown_max_seconds,
    )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def public_user(row: Any) -> dict[str, Any]:
    return {
        "id": row.id, "username": row.username, "display_name": row.display_name, "email": row.email,
        "language": row.language, "roles": list(row.roles), "active": row.active,
        "locked_until": row.locked_until, "last_sign_in_at": row.last_sign_in_at,
        "created_at": row.created_at, "updated_at": row.updated_at,
    }


def _event_fields(row: Any) -> dict[str, Any]:
    return {"user_id": row.id, "username": row.username, "display_name": row.display_name,
            "email": row.email, "language": row.language, "roles": list(row.roles), "active": row.active}


# Sign-in ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SignInResult:
    outcome: SignInOutcome
    tokens: dict[str, Any] | None = None
    failures: int = 0
    locked_until: datetime | None = None


async def sign_in(conn: AsyncConnection, *, username: str, password: str, settings: AccountsSettings,
                  codec: TokenCodec) -> SignInResult:
    """Check a password and record the attempt (audited, success or not). The caller commits the
    transaction in every case and raises afterwards, so failures and locks are kept."""
    now = datetime.now(UTC)  # locks and token lifetimes run on real time, not the programme clock
    policy = policy_of(settings)
    row = (await conn.execute(select(users).where(users.c.username == username.lower()).with_for_update())).first()
    if row is None:
        await password_matches(_decoy_hash(), password)  # same work as for a real user
        await record_audit(conn, action="auth.sign_in_failed", entity_type="user", entity_id=username[:120],
                           actor="anonymous", details={"outcome": SignInOutcome.UNKNOWN_USER})
        return SignInResult(SignInOutcome.UNKNOWN_USER)
    subject = str(row.id)
    if policy.is_locked(row.locked_until, now):
        await record_audit(conn, action="auth.sign_in_refused", entity_type="user", entity_id=subject,
                           actor=subject, details={"outcome": SignInOutcome.LOCKED,
                                                   "locked_until": row.locked_until.isoformat()})
        return SignInResult(SignInOutcome.LOCKED, locked_until=row.locked_until)
    if not await password_matches(row.password_hash, password):
        failures, locked_until = policy.after_failure(row.failed_sign_ins, now)
        await conn.execute(update(users).where(users.c.id == row.id)
                           .values(failed_sign_ins=failures, locked_until=locked_until))
        await record_audit(conn, action="auth.sign_in_failed", entity_type="user", entity_id=subject,
                           actor=subject, details={"outcome": SignInOutcome.WRONG_PASSWORD, "failures": failures})
        if locked_until is not None:
            await record_audit(conn, action="user.locked", entity_type="user", entity_id=subject, actor="system",
                               reason=f"{failures} failed sign-ins in a row",
                               details={"locked_until": locked_until.isoformat()})
        return SignInResult(SignInOutcome.WRONG_PASSWORD, failures=failures, locked_until=locked_until)
    if not row.active:
        await record_audit(conn, action="auth.sign_in_refused", entity_type="user", entity_id=subject,
                           actor=subject, details={"outcome": SignInOutcome.DEACTIVATED})
        return SignInResult(SignInOutcome.DEACTIVATED)
    await conn.execute(update(users).where(users.c.id == row.id)
                       .values(failed_sign_ins=0, locked_until=None, last_sign_in_at=now))
    await record_audit(conn, action="auth.sign_in_succeeded", entity_type="user", entity_id=subject, actor=subject)
    return SignInResult(SignInOutcome.SUCCEEDED, tokens=await _issue_tokens(conn, row, settings, codec, now))


async def _issue_tokens(conn: AsyncConnection, row: Any, settings: AccountsSettings, codec: TokenCodec,
                        now: datetime) -> dict[str, Any]:
    access_lifetime = timedelta(minutes=settings.access_token_minutes)
    refresh_lifetime = timedelta(hours=settings.refresh_token_hours)
    refresh = secrets.token_urlsafe(32)
    await conn.execute(insert(refresh_tokens).values(user_id=row.id, token_hash=token_hash(refresh),
                                                     expires_at=now + refresh_lifetime))
    access = codec.issue(user_id=str(row.id), username=row.username, roles=row.roles, lifetime=access_lifetime,
                         lang=row.language)
    return {"access_token": access, "token_type": "bearer", "expires_in": int(access_lifetime.total_seconds()),
            "refresh_token": refresh, "refresh_expires_in": int(refresh_lifetime.total_seconds())}


async def refresh(conn: AsyncConnection, *, token: str, settings: AccountsSettings,
                  codec: TokenCodec) -> dict[str, Any] | None:
    """Rotate a refresh token. Using one twice revokes every refresh token of its user (it was stolen
    or leaked) and is audited: the answer is None, and the caller commits that before refusing."""
    now = datetime.now(UTC)
    stored = (await conn.execute(select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash(token))
                                 .with_for_update())).first()
    if stored is None:
        raise RegistryError("auth.refresh_invalid")
    if stored.used_at is not None or stored.revoked_at is not None:
        await conn.execute(update(refresh_tokens).where(refresh_tokens.c.user_id == stored.user_id,
                                                        refresh_tokens.c.revoked_at.is_(None))
                           .values(revoked_at=now))
        await record_audit(conn, action="auth.refresh_reused", entity_type="user", entity_id=str(stored.user_id),
                           actor=str(stored.user_id), reason="a used refresh token was presented again")
        return None
    user = (await conn.execute(select(users).where(users.c.id == stored.user_id))).first()
    if stored.expires_at <= now or user is None or not user.active or policy_of(settings).is_locked(
            user.locked_until, now):
        raise RegistryError("auth.refresh_invalid")
    await conn.execute(update(refresh_tokens).where(refresh_tokens.c.id == stored.id).values(used_at=now))
    await record_audit(conn, action="auth.token_refreshed", entity_type="user", entity_id=str(user.id),
                       actor=str(user.id))
    return await _issue_tokens(conn, user, settings, codec, now)


# Users ------------------------------------------------------------------------------------------
async def create_user(conn: AsyncConnection, *, data: dict[str, Any], actor: str) -> Any:
    if (reason := password_problem(data["password"], data["username"])) is not None:
        raise RegistryError("user.password_rejected", field="password", reason=reason)
    username = data["username"].lower()
    if (await conn.execute(select(users.c.id).where(users.c.username == username))).first() is not None:
        raise RegistryError("user.username_taken", field="username")
    user_id = uuid4()
    row = (await conn.execute(
        insert(users).values(
            id=user_id, username=username, display_name=data["display_name"], email=data["email"],
            language=data.get("language", "es"), roles=sorted(set(data["roles"])),
            password_hash=await hash_password(data["password"]),
        ).returning(users)
    )).first()
    await record_audit(conn, action="user.created", entity_type="user", entity_id=str(user_id), actor=actor,
                       details={k: v for k, v in _event_fields(row).items() if k != "user_id"})
    await OUTBOX.add(conn, UserRegistered(**_event_fields(row)), correlation_id=str(user_id))
    return row


async def get_user(conn: AsyncConnection, user_id: UUID, *, for_update: bool = False) -> Any:
    query = select(users).where(users.c.id == user_id)
    row = (await conn.execute(query.with_for_update() if for_update else query)).first()
    if row is None:
        raise RegistryError("user.not_found")
    return row


async def update_user(conn: AsyncConnection, user_id: UUID, *, changes: dict[str, Any], actor: str,
                      reason: str | None = None) -> Any:
    current = await get_user(conn, user_id, for_update=True)
    values: dict[str, Any] = {k: v for k, v in changes.items() if k != "password" and v is not None}
    if "roles" in values:
        values["roles"] = sorted(set(values["roles"]))
    if changes.get("password") is not None:
        if (problem := password_problem(changes["password"], current.username)) is not None:
            raise RegistryError("user.password_rejected", field="password", reason=problem)
        values["password_hash"] = await hash_password(changes["password"])
        values.update(failed_sign_ins=0, locked_until=None)
    if not values:
        return current
    row = (await conn.execute(
        update(users).where(users.c.id == user_id)
        .values(**values, updated_at=func.now(), version=users.c.version + 1).returning(users)
    )).first()
    changed = sorted(k if k != "password_hash" else "password" for k in values
                     if k not in ("failed_sign_ins", "locked_until"))
    await record_audit(conn, action="user.updated", entity_type="user", entity_id=str(user_id), actor=actor,
                       reason=reason, details={"changed": changed,
                                               **{k: v for k, v in changes.items() if k != "password" and v}})
    await OUTBOX.add(conn, UserUpdated(**_event_fields(row)), correlation_id=str(user_id))
    return row


async def deactivate_user(conn: AsyncConnection, user_id: UUID, *, actor: str, reason: str | None) -> Any:
    if str(user_id) == actor:
        raise RegistryError("user.cannot_deactivate_self")
    current = await get_user(conn, user_id, for_update=True)
    if not current.active:
        return current
    row = (await conn.execute(update(users).where(users.c.id == user_id)
                              .values(active=False, updated_at=func.now(), version=users.c.version + 1)
                              .returning(users))).first()
    await conn.execute(update(refresh_tokens).where(refresh_tokens.c.user_id == user_id,
                                                    refresh_tokens.c.revoked_at.is_(None))
                       .values(revoked_at=func.now()))
    await record_audit(conn, action="user.deactivated", entity_type="user", entity_id=str(user_id), actor=actor,
                       reason=reason)
    await OUTBOX.add(conn, UserDeactivated(user_id=user_id, username=row.username, reason=reason),
                     correlation_id=str(user_id))
    return row


async def reactivate_user(conn: AsyncConnection, user_id: UUID, *, actor: str, reason: str | None) -> Any:
    current = await get_user(conn, user_id, for_update=True)
    if current.active and current.locked_until is None:
        return current
    row = (await conn.execute(update(users).where(users.c.id == user_id)
                              .values(active=True, failed_sign_ins=0, locked_until=None, updated_at=func.now(),
                                      version=users.c.version + 1)
                              .returning(users))).first()
    await record_audit(conn, action="user.reactivated", entity_type="user", entity_id=str(user_id), actor=actor,
                       reason=reason, details={"was_active": current.active, "was_locked": bool(current.locked_until)})
    await OUTBOX.add(conn, UserUpdated(**_event_fields(row)), correlation_id=str(user_id))
    return row


async def bootstrap_administrator(conn: AsyncConnection, settings: AccountsSettings) -> None:
    """The first administrator, from ``REGISTRY_BOOTSTRAP_ADMIN_PASSWORD``; only while none exists.

    In the development profile (``make up``) the password given wins: a second checkout on the same
    machine reuses the databases, and its newcomer must be able to sign in with the password it was
    shown. Production never touches an existing user."""
    if not settings.bootstrap_admin_password:
        return
    if settings.environment is Environment.DEVELOPMENT:
        existing = (await conn.execute(select(users).where(
            users.c.username == settings.bootstrap_admin_username.lower()))).first()
        if existing is not None:
            if not await password_matches(existing.password_hash, settings.bootstrap_admin_password):
                await update_user(conn, existing.id, actor="bootstrap", reason="development bootstrap password",
                                  changes={"password": settings.bootstrap_admin_password,
                                           "roles": sorted({*existing.roles, Role.ADMINISTRATOR.value})})
            return
    has_admin = (await conn.execute(
        select(users.c.id).where(literal(Role.ADMINISTRATOR.value) == any_(users.c.roles)).limit(1))).first()
    if has_admin is not None:
        return
    await create_user(conn, actor="bootstrap", data={
        "username": settings.bootstrap_admin_username, "display_name": "Administrador del registro",
        "email": "admin@localhost", "language": "es", "roles": [Role.ADMINISTRATOR.value],
        "password": settings.bootstrap_admin_password,
    })
