"""Journal tamper evidence on a real PostgreSQL: sealing in commit order, signed checkpoints and the
verification catching an edited row, an edited row whose successors were re-hashed, and a deleted last row.

Tampering makes a journal "not ok" for good, so these tests run in their own accounts database (prefix
``<run>seal_``), emptied before each test and dropped at the end; they never touch the shared one. Tampering
is done as a superuser who disables the append-only trigger, as an intruder with that power would.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy import insert, select, text
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.ext.asyncio import AsyncEngine

from accounts.definition import DEFINITION
from accounts.journal_seal import (
    GENESIS,
    JournalCheckpointer,
    JournalSealer,
    chain_hash,
    checkpoint_file_name,
    checkpoint_key,
    checkpoint_signature_valid,
    journal_router,
    row_hash,
    seal_batch,
    sign_checkpoint,
    verify_journal,
)
from accounts.settings import AccountsSettings
from accounts.tables import journal, journal_seals
from registry_common.api import create_app
from registry_common.clock import ProgrammeClock
from registry_common.db import asyncpg_dsn, make_engine
from registry_common.messaging.outbox import Outbox
from registry_common.provision import provision_definitions
from registry_common.settings import Environment, UnsafeConfiguration
from registry_common.testing.fixtures import drop_databases
from registry_common.worker import WorkerContext

pytestmark = pytest.mark.integration
KEY = "journal-checkpoint-test-key-0123456789"


class SealSettings(AccountsSettings):
    """The journal settings as accounts/settings.py declares them (repeated here so the tests do not depend on
    when they are wired)."""

    journal_seal_batch_size: int = 5000
    journal_seal_settle_seconds: float = 30.0
    journal_seal_full_sweep_seconds: float = 300.0
    journal_seal_grace_seconds: float = 60.0
    journal_checkpoint_interval_seconds: float = 60.0
    journal_checkpoint_dir: Path | None = None
    journal_checkpoint_key: SecretStr | None = None


@dataclass
class SealDb:
    settings: SealSettings
    engine: AsyncEngine  # as accounts_app, like the service
    superuser_dsn: str

    def with_(self, **changes: Any) -> SealSettings:
        return self.settings.model_copy(update=changes)


@pytest.fixture(scope="module")
async def seal_database(provisioned_services: dict[str, str], run_prefix: str) -> AsyncIterator[SealDb]:
    env = {**provisioned_services, "REGISTRY_DATABASE_PREFIX": f"{run_prefix}seal_"}
    overrides = {k.removeprefix("REGISTRY_").lower(): v for k, v in env.items()}
    await provision_definitions([DEFINITION], **overrides)
    settings = SealSettings.model_validate({**overrides, "service": "accounts", "journal_checkpoint_key": KEY,
                                            "journal_checkpoint_interval_seconds": 0})
    engine = make_engine(settings.app_database_url, pool_size=0, application_name="journal-seal-test")
    admin = asyncpg_dsn(env["REGISTRY_ADMIN_DATABASE_URL"])
    superuser_dsn = admin.rsplit("/", 1)[0] + f"/{settings.db_name}"
    try:
        yield SealDb(settings, engine, superuser_dsn)
    finally:
        await engine.dispose()
        await drop_databases(admin, [settings.db_name])


@pytest.fixture
async def db(seal_database: SealDb, tmp_path: Path) -> SealDb:
    """An empty journal and a fresh checkpoint folder for each test."""
    conn = await asyncpg.connect(seal_database.superuser_dsn)
    try:
        await conn.execute("SET session_replication_role = replica")  # past the append-only triggers
        await conn.execute("TRUNCATE journal, journal_seals RESTART IDENTITY")
    finally:
        await conn.close()
    return SealDb(seal_database.with_(journal_checkpoint_dir=tmp_path / "checkpoints"), seal_database.engine,
                  seal_database.superuser_dsn)


# Helpers -----------------------------------------------------------------------------------------------
def journal_values(**over: Any) -> dict[str, Any]:
    first = over.pop("first", 1)
    return {"movement_id": uuid4(), "kind": "transfer", "from_account_id": "CEN-T1", "to_account_id": "TRD-T2",
            "unit_type": "allowance", "vintage": 2021, "serials": [Range(first, first + 9, bounds="[]")],
            "quantity": 10, "actor": "seal-test", "reason": "test", "correlation_id": "c",
            "at": datetime(2021, 1, 1, tzinfo=UTC), **over}


async def insert_rows(engine: AsyncEngine, count: int, *, first: int = 1, **over: Any) -> list[int]:
    ids = []
    async with engine.begin() as conn:
        for i in range(count):
            result = await conn.execute(insert(journal).values(**journal_values(first=first + 10 * i, **over))
                                        .returning(journal.c.id))
            ids.append(result.scalar_one())
    return ids


async def seal_all(db: SealDb) -> int:
    return await JournalSealer().tick(db.engine, db.settings)


async def seals(db: SealDb) -> list[Any]:
    async with db.engine.connect() as conn:
        return list(await conn.execute(select(journal_seals).order_by(journal_seals.c.seq)))


async def verify(db: SealDb, directory: Path | None = None, **kwargs: Any) -> dict[str, Any]:
    async with db.engine.connect() as conn:
        return await verify_journal(conn, directory or db.settings.journal_checkpoint_dir, KEY.encode(), **kwargs)


async def tamper(db: SealDb, table: str, sql: str, *args: Any) -> None:
    """What a superuser can do: switch the append-only guard off, change history, switch it on again."""
    conn = await asyncpg.connect(db.superuser_dsn)
    try:
        async with conn.transaction():
            await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER append_only_guard")
            await conn.execute(sql, *args)
            await conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER append_only_guard")
    finally:
        await conn.close()


async def checkpoint(db: SealDb) -> Path | None:
    return await JournalCheckpointer().tick(db.engine, db.settings, Outbox("accounts"))


def found(report: dict[str, Any]) -> set[tuple[str, int | None, int | None]]:
    return {(d["code"], d["seq"], d["journal_id"]) for d in report["discrepancies"]}


# Sealing ------------------------------------------------------------------------------------------------
async def test_rows_are_sealed_into_a_chain_that_verifies(db: SealDb):
    ids = await insert_rows(db.engine, 4)
    assert (await verify(db))["unsealed"] == 4

    assert await seal_all(db) == 4
    stored = await seals(db)
    async with db.engine.connect() as conn:
        rows = {r["id"]: r for r in (await conn.execute(select(journal))).mappings()}
    previous = GENESIS
    for number, (seal, journal_id) in enumerate(zip(stored, ids, strict=True), start=1):
        assert (seal.seq, seal.journal_id) == (number, journal_id)
        assert seal.row_hash == row_hash(rows[journal_id])
        previous = chain_hash(previous, seal.row_hash)
        assert seal.chain_hash == previous

    report = await verify(db)
    assert report["ok"] is True and report["discrepancies"] == []
    assert (report["sealed"], report["unsealed"]) == (4, 0)
    assert report["head"]["seq"] == 4 and report["head"]["chain_hash"] == previous
    assert report["head"]["recomputed_chain_hash"] == previous
    assert await seal_all(db) == 0  # nothing sealed twice


async def test_a_row_committing_late_with_a_lower_id_is_sealed_later(db: SealDb):
    """Chain order is seal (commit) order, not id order."""
    async with db.engine.connect() as late:
        await late.begin()
        late_id = (await late.execute(insert(journal).values(**journal_values()).returning(journal.c.id))).scalar_one()
        [early_id] = await insert_rows(db.engine, 1, first=1000)
        assert late_id < early_id
        sealer = JournalSealer()
        assert await sealer.tick(db.engine, db.settings) == 1
        await late.commit()
    assert await sealer.tick(db.engine, db.settings) == 1
    assert [(s.seq, s.journal_id) for s in await seals(db)] == [(1, early_id), (2, late_id)]
    assert (await verify(db))["ok"] is True


async def test_two_sealers_never_interleave(db: SealDb):
    await insert_rows(db.engine, 3)
    async with db.engine.connect() as first, db.engine.connect() as second:
        await first.begin()
        result = await seal_batch(first, limit=2)
        assert result is not None and result.sealed == 2 and result.more_waiting
        await second.begin()
        assert await asyncio.wait_for(seal_batch(second), timeout=10) is None  # busy: reads and writes nothing
        await second.rollback()
        await first.commit()
        await second.begin()
        result = await seal_batch(second)
        await second.commit()
    assert result is not None and (result.sealed, result.head_seq) == (1, 3)
    assert [s.seq for s in await seals(db)] == [1, 2, 3]
    assert (await verify(db))["ok"] is True


async def test_only_recent_ids_are_scanned_and_the_full_sweep_finds_long_transactions(db: SealDb):
    now = [0.0]
    sealer = JournalSealer(monotonic=lambda: now[0])
    settings = db.with_(journal_seal_settle_seconds=0, journal_seal_full_sweep_seconds=3600)
    async with db.engine.connect() as long_open:
        await long_open.begin()
        await long_open.execute(insert(journal).values(**journal_values()))
        await insert_rows(db.engine, 1, first=1000)
        assert await sealer.tick(db.engine, settings) == 1  # the first tick is a full sweep
        await long_open.commit()
    now[0] = 1.0
    assert await sealer.tick(db.engine, settings) == 0  # below the floor: not scanned every second
    assert (await verify(db))["unsealed"] == 1
    now[0] = 3601.0
    assert await sealer.tick(db.engine, settings) == 1  # the full sweep
    report = await verify(db)
    assert report["ok"] is True and (report["sealed"], report["unsealed"]) == (2, 0)


async def test_the_worker_task_signature(db: SealDb):
    from accounts.journal_seal import checkpoint_journal, seal_journal

    await insert_rows(db.engine, 2)
    ctx = WorkerContext(db.settings, db.engine, ProgrammeClock(db.engine), Outbox("accounts"))
    assert await seal_journal(ctx) == 2
    path = await checkpoint_journal(ctx)
    assert path is not None and path.name == checkpoint_file_name(2)


# Checkpoints --------------------------------------------------------------------------------------------
async def test_checkpoints_are_signed_written_when_the_head_moves_and_announced(db: SealDb):
    directory = db.settings.journal_checkpoint_dir
    assert await checkpoint(db) is None  # nothing sealed yet
    await insert_rows(db.engine, 3)
    await seal_all(db)
    checkpointer = JournalCheckpointer()
    path = await checkpointer.tick(db.engine, db.settings, Outbox("accounts"))
    assert path == directory / "checkpoint-000000000003.json"
    document = json.loads(path.read_text())
    head = (await seals(db))[-1]
    assert (document["seq"], document["chain_hash"], document["journal_id"]) == (3, head.chain_hash, head.journal_id)
    assert document["database"] == db.settings.db_name
    assert checkpoint_signature_valid(document, KEY.encode())
    assert not checkpoint_signature_valid(document, b"another key, another signature")

    async with db.engine.connect() as conn:
        events = (await conn.execute(text(
            "SELECT envelope FROM outbox WHERE envelope->>'type' = 'accounts.journal_checkpointed' "
            "AND envelope->'payload'->>'file' = :file"), {"file": str(path)})).scalars().all()
    assert len(events) == 1
    assert events[0]["payload"]["seq"] == 3 and events[0]["payload"]["chain_hash"] == head.chain_hash

    assert await checkpointer.tick(db.engine, db.settings, Outbox("accounts")) is None  # the head did not move
    assert await JournalCheckpointer().tick(db.engine, db.settings, Outbox("accounts")) is None  # nor after restart
    await insert_rows(db.engine, 1, first=500)
    await seal_all(db)
    slow = db.with_(journal_checkpoint_interval_seconds=3600)
    assert await checkpointer.tick(db.engine, slow, Outbox("accounts")) is None  # moved, but too soon
    assert await checkpointer.tick(db.engine, db.settings, Outbox("accounts")) == directory / checkpoint_file_name(4)
    assert sorted(p.name for p in directory.iterdir()) == [checkpoint_file_name(3), checkpoint_file_name(4)]
    report = await verify(db)
    assert report["ok"] is True and report["checkpoints_checked"] == 2


async def test_forged_or_foreign_checkpoints(db: SealDb):
    await insert_rows(db.engine, 2)
    await seal_all(db)
    path = await checkpoint(db)
    assert path is not None
    document = json.loads(path.read_text())

    forged = {**document, "seq": 1, "chain_hash": "f" * 64}  # rewritten without the key
    (path.parent / checkpoint_file_name(1)).write_text(json.dumps(forged))
    other_key = sign_checkpoint({**document, "seq": 5}, b"not the configured key at all")
    (path.parent / checkpoint_file_name(5)).write_text(json.dumps(other_key))
    (path.parent / checkpoint_file_name(7)).write_text("{not json")
    foreign = sign_checkpoint({**document, "database": "another_database", "seq": 9, "chain_hash": "e" * 64},
                              KEY.encode())
    (path.parent / checkpoint_file_name(9)).write_text(json.dumps(foreign))

    report = await verify(db)
    assert report["ok"] is False
    assert {(d["code"], d["seq"]) for d in report["discrepancies"]} == {
        ("journal.checkpoint_signature_invalid", 1), ("journal.checkpoint_signature_invalid", 5),
        ("journal.checkpoint_signature_invalid", 7)}
    assert report["checkpoints_skipped"] == 1  # another database's, validly signed: not ours to judge


# Tampering ----------------------------------------------------------------------------------------------
async def test_an_edited_row_is_caught(db: SealDb):
    ids = await insert_rows(db.engine, 5)
    await seal_all(db)
    assert (await verify(db))["ok"] is True

    await tamper(db, "journal", "UPDATE journal SET quantity = quantity + 1 WHERE id = $1", ids[2])

    report = await verify(db)
    assert report["ok"] is False
    assert found(report) == {("journal.row_changed", 3, ids[2])}  # exactly the edited row, no echo


async def test_an_edited_row_whose_successors_were_rehashed_is_caught_by_a_signed_checkpoint(db: SealDb):
    ids = await insert_rows(db.engine, 2)
    await seal_all(db)
    assert (await checkpoint(db)).name == checkpoint_file_name(2)  # before the edited row
    ids += await insert_rows(db.engine, 3, first=100)
    await seal_all(db)
    assert (await checkpoint(db)).name == checkpoint_file_name(5)  # covers it

    # The intruder edits row 3 and rewrites its seal and every later one so the chain is consistent again.
    await tamper(db, "journal", "UPDATE journal SET to_account_id = 'TRD-INTRUDER' WHERE id = $1", ids[2])
    async with db.engine.connect() as conn:
        rows = {r["id"]: r for r in (await conn.execute(select(journal))).mappings()}
    stored = await seals(db)
    previous = stored[1].chain_hash
    for seal in stored[2:]:
        digest = row_hash(rows[seal.journal_id])
        previous = chain_hash(previous, digest)
        await tamper(db, "journal_seals", "UPDATE journal_seals SET row_hash = $1, chain_hash = $2 WHERE seq = $3",
                     digest, previous, seal.seq)

    # Seals alone no longer show anything: without the checkpoints the edit would pass.
    empty = db.settings.journal_checkpoint_dir.parent / "no-checkpoints"
    assert (await verify(db, empty))["ok"] is True

    report = await verify(db)
    assert report["ok"] is False
    assert found(report) == {("journal.checkpoint_mismatch", 5, ids[4])}  # not the one at seq 2


async def test_a_deleted_last_row_is_caught(db: SealDb):
    ids = await insert_rows(db.engine, 3)
    await seal_all(db)
    await tamper(db, "journal", "DELETE FROM journal WHERE id = $1", ids[-1])
    report = await verify(db)
    assert report["ok"] is False
    assert found(report) == {("journal.row_missing", 3, ids[-1])}


async def test_a_deleted_last_row_and_its_seal_are_caught_by_a_checkpoint(db: SealDb):
    ids = await insert_rows(db.engine, 3)
    await seal_all(db)
    assert (await checkpoint(db)).name == checkpoint_file_name(3)
    await tamper(db, "journal", "DELETE FROM journal WHERE id = $1", ids[-1])
    await tamper(db, "journal_seals", "DELETE FROM journal_seals WHERE seq = 3")

    report = await verify(db)
    assert report["ok"] is False
    assert found(report) == {("journal.checkpoint_ahead", 3, ids[-1])}
    assert report["head"]["seq"] == 2
    # What it cannot see: the same deletion after the newest checkpoint (hence checkpoints every minute).
    assert (await verify(db, db.settings.journal_checkpoint_dir.parent / "none"))["ok"] is True


async def test_a_rewritten_or_deleted_seal_breaks_the_chain(db: SealDb):
    ids = await insert_rows(db.engine, 5)
    await seal_all(db)
    await tamper(db, "journal_seals", "UPDATE journal_seals SET chain_hash = $1 WHERE seq = 2", "a" * 64)
    assert found(await verify(db)) == {("journal.chain_broken", 2, ids[1]), ("journal.chain_broken", 3, ids[2])}

    await tamper(db, "journal_seals", "DELETE FROM journal_seals WHERE seq = 4")
    report = await verify(db)
    assert ("journal.chain_broken", 5, ids[4]) in found(report)
    assert any(d["detail"] == "seals 4..4 are missing" for d in report["discrepancies"])


async def test_unsealed_rows_are_a_warning_not_tampering(db: SealDb):
    await insert_rows(db.engine, 1, recorded_at=datetime.now(UTC) - timedelta(hours=1))
    await insert_rows(db.engine, 1, first=100)
    report = await verify(db, grace_seconds=60)
    assert report["ok"] is True and report["discrepancies"] == []
    assert report["unsealed"] == 2
    assert [(w["code"], w["count"]) for w in report["warnings"]] == [("journal.seal_missing", 1)]


async def test_verification_pages_through_the_journal(db: SealDb):
    ids = await insert_rows(db.engine, 25)
    await seal_all(db)
    await checkpoint(db)
    await tamper(db, "journal", "UPDATE journal SET actor = 'someone else' WHERE id = $1", ids[17])
    report = await verify(db, page_size=4)
    assert report["sealed"] == 25
    assert found(report) == {("journal.row_changed", 18, ids[17]), ("journal.checkpoint_mismatch", 25, ids[24])}


# The route ----------------------------------------------------------------------------------------------
async def test_the_verify_route(db: SealDb, token_for: Callable[..., str]):
    ids = await insert_rows(db.engine, 3)
    await seal_all(db)
    app = create_app(replace(DEFINITION, routers=[journal_router]), db.settings)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://accounts") as client:
        async def get(*roles: str) -> httpx.Response:
            return await client.get("/api/v1/ledger/journal/verify", headers={
                "Authorization": f"Bearer {token_for('journal-reader', *roles)}", "Accept-Language": "en"})

        for role in ("authority", "authority-readonly", "administrator"):
            answer = await get(role)
            assert answer.status_code == 200, answer.text
            assert answer.json()["ok"] is True and answer.json()["sealed"] == 3
        for role in ("installation", "verifier", "intermediary"):
            refused = await get(role)
            assert refused.status_code == 403 and refused.json()["code"] == "auth.forbidden"
        assert (await client.get("/api/v1/ledger/journal/verify")).status_code == 401

        await tamper(db, "journal", "UPDATE journal SET reason = 'edited' WHERE id = $1", ids[0])
        answer = await get("authority-readonly")
        assert answer.status_code == 200
        assert answer.json()["ok"] is False
        assert answer.json()["discrepancies"] == [{"code": "journal.row_changed", "seq": 1, "journal_id": ids[0],
                                                   "detail": f"journal row {ids[0]} differs from what was sealed "
                                                             "at seq 1"}]


# The key ------------------------------------------------------------------------------------------------
def test_the_checkpoint_key(tmp_path: Path):
    configured = SimpleNamespace(environment=Environment.PRODUCTION, journal_checkpoint_key=SecretStr(KEY))
    assert checkpoint_key(configured) == KEY.encode()  # type: ignore[arg-type]
    with pytest.raises(UnsafeConfiguration):
        checkpoint_key(SimpleNamespace(environment=Environment.PRODUCTION,  # type: ignore[arg-type]
                                       journal_checkpoint_key=None))
    with pytest.raises(UnsafeConfiguration):
        checkpoint_key(SimpleNamespace(environment=Environment.DEVELOPMENT,  # type: ignore[arg-type]
                                       journal_checkpoint_key="short"))

    development = SimpleNamespace(environment=Environment.DEVELOPMENT, journal_checkpoint_key=None)
    key_file = tmp_path / "secrets" / "journal_checkpoint.key"
    key = checkpoint_key(development, key_file=key_file)  # type: ignore[arg-type]
    assert len(key) == 32
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert checkpoint_key(development, key_file=key_file) == key  # type: ignore[arg-type]
    assert [p.name for p in key_file.parent.iterdir()] == [key_file.name]  # no temporary left behind
