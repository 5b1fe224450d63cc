"""The system accounts, owned by the authority (no holder), created active by provisioning: the cap
account ``SYS-CAP``, one reserve ``SYS-RES-<NAME>`` per name of ``REGISTRY_RESERVES``, the allocation
account ``SYS-ALLOC``, the auction account ``SYS-AUCTION`` and the cancellation account ``SYS-CANCEL``.

Idempotent: run again, it creates only what is missing (a reserve named later is added; a reserve no
longer named stays), and publishes ``account_opened`` and writes an audit row for each account it
creates, in the provisioning transaction.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from accounts.account_service import OUTBOX
from accounts.domain.ledger import AccountKind
from accounts.domain.lifecycle import SYSTEM_ACCOUNTS, AccountState, reserve_account_id, reserve_names
from accounts.identity import bootstrap_administrator
from accounts.tables import accounts
from registry_common.audit import record_audit
from registry_contracts.accounts import AccountOpened

DEFAULT_RESERVES = "price_containment,new_entrants"
ACTOR = "provisioning"


def configured_reserves(settings: Any) -> list[str]:
    """The reserve names: ``settings.reserves`` where the settings class has that field, else
    ``REGISTRY_RESERVES`` from the environment, else the default."""
    value = getattr(settings, "reserves", None)
    if value is None:
        value = os.environ.get("REGISTRY_RESERVES") or DEFAULT_RESERVES
    return reserve_names(value)


def system_accounts(settings: Any) -> list[tuple[str, AccountKind, str]]:
    """(id, kind, name) of every system account the settings call for."""
    cap, *others = SYSTEM_ACCOUNTS
    reserves = [(reserve_account_id(name), AccountKind.RESERVE, f"Reserva {name}")
                for name in configured_reserves(settings)]
    return [cap, *reserves, *others]


async def ensure_system_accounts(conn: AsyncConnection, settings: Any) -> list[str]:
    """Create the missing system accounts; returns the ids created by this call."""
    created: list[str] = []
    for account_id, kind, name in system_accounts(settings):
        row = (await conn.execute(
            pg_insert(accounts).values(id=account_id, holder_id=None, kind=kind.value, name=name,
                                       state=AccountState.ACTIVE.value, requested_by=ACTOR)
            .on_conflict_do_nothing(index_elements=[accounts.c.id]).returning(accounts.c.id)
        )).first()
        if row is None:
            continue
        await record_audit(conn, action="account.opened", entity_type="account", entity_id=account_id, actor=ACTOR,
                           reason="system account created at provisioning", details={"kind": kind.value})
        await OUTBOX.add(conn, AccountOpened(account_id=account_id, kind=kind.value, name=name),
                         correlation_id=account_id)
        created.append(account_id)
    return created


async def provision_accounts(conn: AsyncConnection, settings: Any) -> None:
    """The accounts service's provisioning hook: the first administrator, then the system accounts."""
    await bootstrap_administrator(conn, settings)
    await ensure_system_accounts(conn, settings)
