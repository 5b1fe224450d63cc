"""Read models other services keep of what accounts and issuance own, from their events (no service reads
another's tables): the account directory (accounts, their kind, state and installation, and who
represents them with which rights) and the programme calendar (every compliance period's dates).

A service opts in by building them on its own ``MetaData`` (its migration creates the tables) and adding
their ``subscriptions`` to its own. Handlers are idempotent upserts, safe under redelivery.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from sqlalchemy import (
    ARRAY,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from registry_contracts import Message
from registry_contracts.accounts import (
    AccountClosed,
    AccountOpened,
    AccountReactivated,
    AccountSuspended,
    RepresentativeLinked,
    RepresentativeUnlinked,
)
from registry_contracts.issuance import PeriodScheduled

Handler = Callable[..., Awaitable[None]]


def as_uuid(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


class AccountDirectory:
    """``known_accounts`` and ``known_representatives``, kept from accounts' events."""

    def __init__(self, metadata: MetaData):
        self.accounts = Table(
            "known_accounts", metadata,
            Column("account_id", String(40), primary_key=True),
            Column("kind", String(30), nullable=False),
            Column("name", String(300), nullable=False, server_default=""),
            Column("holder_id", Uuid),
            Column("holder_name", String(300)),
            Column("state", String(20), nullable=False),
            Column("installation_id", String(40)),  # a delivery account's central account
            Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
            Index("ix_known_accounts_installation", "installation_id"),
        )
        self.representatives = Table(
            "known_representatives", metadata,
            Column("account_id", String(40), primary_key=True),
            Column("user_id", Uuid, primary_key=True),
            Column("rights", ARRAY(String(20)), nullable=False),
            Index("ix_known_representatives_user", "user_id"),
        )

    # Reading -------------------------------------------------------------------------------------
    async def account(self, conn: AsyncConnection, account_id: str) -> Any:
        return (await conn.execute(select(self.accounts).where(self.accounts.c.account_id == account_id))).first()

    async def rights_on(self, conn: AsyncConnection, account_id: str, user_id: str) -> set[str]:
        user = as_uuid(user_id)
        if user is None:
            return set()
        row = (await conn.execute(select(self.representatives.c.rights).where(
            self.representatives.c.account_id == account_id, self.representatives.c.user_id == user))).first()
        return set(row.rights) if row is not None else set()

    def accounts_of(self, user_id: str) -> Any:
        """A subquery of the account ids the user represents (any right)."""
        return select(self.representatives.c.account_id).where(
            self.representatives.c.user_id == as_uuid(user_id))

    async def delivery_account_of(self, conn: AsyncConnection, central_account_id: str) -> str | None:
        return (await conn.execute(select(self.accounts.c.account_id).where(
            self.accounts.c.installation_id == central_account_id, self.accounts.c.kind == "delivery"))).scalar()

    # Handlers ------------------------------------------------------------------------------------
    async def on_account_opened(self, conn: AsyncConnection, message: AccountOpened, ctx: Any) -> None:
        values = {"kind": message.kind, "name": message.name, "holder_id": message.holder_id,
                  "holder_name": message.holder_name, "state": "active", "installation_id": message.installation_id}
        await conn.execute(pg_insert(self.accounts).values(account_id=message.account_id, **values)
                           .on_conflict_do_update(index_elements=["account_id"], set_=values))

    async def _state(self, conn: AsyncConnection, account_id: str, state: str) -> None:
        await conn.execute(update(self.accounts).where(self.accounts.c.account_id == account_id)
                           .values(state=state, updated_at=func.now()))

    async def on_account_suspended(self, conn: AsyncConnection, message: AccountSuspended, ctx: Any) -> None:
        await self._state(conn, message.account_id, "suspended")

    async def on_account_reactivated(self, conn: AsyncConnection, message: AccountReactivated, ctx: Any) -> None:
        await self._state(conn, message.account_id, "active")

    async def on_account_closed(self, conn: AsyncConnection, message: AccountClosed, ctx: Any) -> None:
        await self._state(conn, message.account_id, "closed")

    async def on_representative_linked(self, conn: AsyncConnection, message: RepresentativeLinked,
                                       ctx: Any) -> None:
        rights = sorted(message.rights)
        await conn.execute(pg_insert(self.representatives).values(
            account_id=message.account_id, user_id=message.user_id, rights=rights,
        ).on_conflict_do_update(index_elements=["account_id", "user_id"], set_={"rights": rights}))

    async def on_representative_unlinked(self, conn: AsyncConnection, message: RepresentativeUnlinked,
                                         ctx: Any) -> None:
        await conn.execute(delete(self.representatives).where(
            self.representatives.c.account_id == message.account_id,
            self.representatives.c.user_id == message.user_id))

    @property
    def subscriptions(self) -> dict[type[Message], Handler]:
        return {
            AccountOpened: self.on_account_opened, AccountSuspended: self.on_account_suspended,
            AccountReactivated: self.on_account_reactivated, AccountClosed: self.on_account_closed,
            RepresentativeLinked: self.on_representative_linked,
            RepresentativeUnlinked: self.on_representative_unlinked,
        }


class ProgrammeCalendar:
    """``known_periods``: every compliance period issuance scheduled, with its dates (UTC instants)."""

    def __init__(self, metadata: MetaData):
        self.periods = Table(
            "known_periods", metadata,
            Column("period", String(20), primary_key=True),
            Column("vintage", Integer, nullable=False),
            Column("starts_at", DateTime(timezone=True), nullable=False),
            Column("ends_at", DateTime(timezone=True), nullable=False),
            Column("allocation_at", DateTime(timezone=True), nullable=False),
            Column("reporting_opens_at", DateTime(timezone=True), nullable=False),
            Column("reporting_closes_at", DateTime(timezone=True), nullable=False),
            Column("surrender_deadline_at", DateTime(timezone=True), nullable=False),
            Column("final", Boolean, nullable=False),
            Column("timezone", String(60), nullable=False),
            Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        )

    async def period(self, conn: AsyncConnection, code: str) -> Any:
        return (await conn.execute(select(self.periods).where(self.periods.c.period == code))).first()

    async def all(self, conn: AsyncConnection) -> list[Any]:
        return list((await conn.execute(select(self.periods).order_by(self.periods.c.starts_at))).all())

    async def on_period_scheduled(self, conn: AsyncConnection, message: PeriodScheduled, ctx: Any) -> None:
        values = {k: getattr(message, k) for k in (
            "vintage", "starts_at", "ends_at", "allocation_at", "reporting_opens_at", "reporting_closes_at",
            "surrender_deadline_at", "final", "timezone")}
        await conn.execute(pg_insert(self.periods).values(period=message.period, **values).on_conflict_do_update(
            index_elements=["period"], set_={**values, "updated_at": func.now()}))

    @property
    def subscriptions(self) -> dict[type[Message], Handler]:
        return {PeriodScheduled: self.on_period_scheduled}
