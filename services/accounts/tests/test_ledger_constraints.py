"""The database itself refuses to break the ledger's invariants, shown with raw SQL as the service's own
role (``accounts_app``): overlapping serials, an empty or negative block, a block in two places, and any
change to the journal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import uuid4

import asyncpg
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture
async def as_app(provisioned_services: dict[str, str]) -> AsyncIterator[tuple[asyncpg.Connection, str, int]]:
    """A connection as accounts_app, a fresh account, and a serial far from anything else in this run."""
    host = provisioned_services["REGISTRY_ADMIN_DATABASE_URL"].rsplit("@", 1)[1].rsplit("/", 1)[0]
    database = f"{provisioned_services['REGISTRY_DATABASE_PREFIX']}accounts"
    conn = await asyncpg.connect(f"postgresql://accounts_app@{host}/{database}")
    account = f"K{uuid4().hex[:8].upper()}"
    await conn.execute("INSERT INTO accounts (id, kind, name, state) VALUES ($1, 'central', $1, 'active')", account)
    base = 10**15 + int(uuid4().int % 10**9) * 1000
    await conn.execute("INSERT INTO unit_blocks (account_id, unit_type, vintage, serial_start, serial_end) "
                       "VALUES ($1, 'allowance', 2021, $2, $3)", account, base, base + 99)
    await conn.execute(  # its issuance, so the shared ledger stays consistent for the other tests
        "INSERT INTO journal (movement_id, kind, to_account_id, unit_type, vintage, serials, quantity, actor, at) "
        "VALUES ($1, 'issuance', $2, 'allowance', 2021, int8multirange(int8range($3, $4, '[]')), 100, 't', now())",
        uuid4(), account, base, base + 99)
    yield conn, account, base
    await conn.close()


@pytest.mark.parametrize(("start", "end"), [(0, 50), (50, 150), (99, 99), (-10, 5)])
async def test_overlapping_serials_are_refused(as_app, start, end):
    conn, account, base = as_app
    with pytest.raises((asyncpg.ExclusionViolationError, asyncpg.CheckViolationError)):
        await conn.execute("INSERT INTO unit_blocks (account_id, unit_type, vintage, serial_start, serial_end) "
                           "VALUES ($1, 'allowance', 2021, $2, $3)", account, base + start, base + end)


@pytest.mark.parametrize(("start", "end"), [(500, 499), (-1, 5), (0, 0)])
async def test_empty_or_negative_blocks_are_refused(as_app, start, end):
    conn, account, base = as_app
    low = start if start <= 0 else base + start
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("INSERT INTO unit_blocks (account_id, unit_type, vintage, serial_start, serial_end) "
                           "VALUES ($1, 'allowance', 2021, $2, $3)", account, low, base + end if end > 0 else end)


async def test_a_block_cannot_be_in_an_account_and_a_hold_at_once(as_app):
    conn, account, _ = as_app
    hold_id = uuid4()
    await conn.execute("INSERT INTO holds (id, transfer_id, sender_account_id, receiver_account_id, unit_type, "
                       "quantity, state) VALUES ($1, $2, $3, $3, 'allowance', 1, 'released')",
                       hold_id, uuid4(), account)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE unit_blocks SET hold_id = $1 WHERE account_id = $2",
                           hold_id, account)
    with pytest.raises(asyncpg.CheckViolationError):
        await conn.execute("UPDATE unit_blocks SET account_id = NULL WHERE account_id = $1", account)


@pytest.mark.parametrize("statement", ["UPDATE journal SET quantity = quantity + 1",
                                       "DELETE FROM journal", "TRUNCATE journal",
                                       "UPDATE journal_seals SET chain_hash = 'x'", "DELETE FROM journal_seals"])
async def test_the_journal_is_append_only_for_the_service(as_app, statement):
    conn, _, _ = as_app
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute(statement)
