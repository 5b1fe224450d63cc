"""Tamper evidence for the journal: seals in commit order off the hot path, signed checkpoints outside the
database, and a verification that recomputes everything.

**Sealing.** Movements only insert journal rows; nothing is hashed on the hot path. A worker task
(:data:`seal_journal`, every second) takes a transaction-level advisory lock (``pg_try_advisory_xact_lock``;
if another sealer holds it, this tick does nothing, so two workers never interleave), reads the last seal,
selects journal rows without a seal in id order (a batch of ``journal_seal_batch_size``) and, in the same
transaction, inserts for each::

    row_hash   = sha256(canonical_row_bytes(row))              (hex)
    chain_hash = sha256(ascii(prev_chain_hash + row_hash))     (hex; prev of seq 1 = GENESIS, 64 zeros)
    seq        = prev seq + 1

**Chain order is seal order, not id order.** Identity values are handed out when a row is inserted, but the
row becomes visible when its transaction commits: a movement that took id 100 and committed after the one
that took id 101 is sealed by a later tick, with a higher ``seq``. Nothing waits for it and nothing is
reordered; the chain records the order in which rows became visible to the sealer (commit order, as far as
anyone can observe it).

Scanning only recent ids: each sealer remembers a *floor* below which every visible row is sealed. A row
with an id under the floor can only appear later if its transaction stayed open longer than
``journal_seal_settle_seconds`` after taking its id; a full sweep (every ``journal_seal_full_sweep_seconds``,
and at start) finds those too. The verification reports rows left unsealed longer than
``journal_seal_grace_seconds`` (a warning, not tampering).

**Canonical row serialisation** (:func:`canonical_row_bytes`): a JSON object of exactly the columns in
:data:`JOURNAL_HASH_COLUMNS` (every column of ``journal``), keys sorted, separators ``,`` and ``:``, UTF-8,
no insignificant whitespace; integers as JSON integers; UUIDs as lower-case hyphenated strings; timestamps
in UTC as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (always six fractional digits); ``serials`` as the sorted list of
inclusive ``[first, last]`` pairs of the set of serials (adjacent or overlapping runs merged, so a set has
one form whatever ranges describe it); ``None`` as ``null``.

**Checkpoints.** Another task (:data:`checkpoint_journal`) writes the current head ``{seq, chain_hash,
journal_id, at}`` as ``checkpoint-<seq:012d>.json`` under ``journal_checkpoint_dir`` (default
``var/checkpoints/<database>/``), signed with HMAC-SHA256 under a key from configuration that is never
stored in the database (:func:`checkpoint_key`), at most every ``journal_checkpoint_interval_seconds`` and
only when the head moved, and announces it with ``accounts.journal_checkpointed`` through the outbox. A
checkpoint pins the chain: whoever edits a row and re-hashes every later seal cannot re-sign the files.

**Verification** (:func:`verify_journal`, ``GET /api/v1/ledger/journal/verify``): every seal in seq order,
joined to its row, keyset pages of 10,000. ``journal.row_changed``: the row's hash differs from its seal
(an edited row). ``journal.chain_broken``: a seal's chain hash is not ``sha256(previous seal's chain hash +
its row hash)``, or seals are missing in the middle (a seal rewritten or deleted). ``journal.row_missing``:
a seal whose row is gone. ``journal.checkpoint_mismatch``: a valid checkpoint whose ``chain_hash`` differs
from the chain recomputed from the rows at that seq (an edit whose successors were re-hashed).
``journal.checkpoint_ahead``: a valid checkpoint beyond the last seal (rows and seals deleted at the end).
``journal.checkpoint_signature_invalid``: a checkpoint file that does not carry a valid signature.
Unsealed rows are counted; those older than the grace period are a ``journal.seal_missing`` warning.
What it cannot see: rows and seals deleted at the end after the newest checkpoint.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fastapi import APIRouter, Request
from pydantic import BaseModel, SecretStr
from sqlalchemy import exists, func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from accounts.tables import journal, journal_seals
from registry_common.routes import Overseer, ReadConn
from registry_common.settings import REPO_ROOT, Environment, RegistrySettings, UnsafeConfiguration
from registry_contracts.accounts import JournalCheckpointed

if TYPE_CHECKING:
    from registry_common.worker import WorkerContext

log = logging.getLogger("accounts.journal_seal")

GENESIS = "0" * 64
JOURNAL_HASH_COLUMNS: tuple[str, ...] = (
    "id", "movement_id", "kind", "from_account_id", "to_account_id", "hold_id", "unit_type", "vintage",
    "origin", "serials", "quantity", "actor", "reason", "correlation_id", "causation_id", "at", "recorded_at",
)
"""The columns a row hash covers: every column of ``journal`` (a unit test keeps the two equal, so a new
column is a conscious decision and, if hashed, a new format)."""

SEAL_LOCK_KEY = 0x4A524E4C5345414C  # "JRNLSEAL": one sealer at a time
CHECKPOINT_LOCK_KEY = 0x4A524E4C43484B50  # "JRNLCHKP": one checkpoint writer at a time
CHECKPOINT_FORMAT = "registro.journal_checkpoint.v1"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d{12,})\.json$")
MAX_REPORTED = 1000  # discrepancies listed in a report (all are counted)

# Defaults of the settings (accounts/settings.py), so the module works before they are added there.
DEFAULTS: dict[str, Any] = {
    "journal_seal_batch_size": 5000,
    "journal_seal_settle_seconds": 30.0,
    "journal_seal_full_sweep_seconds": 300.0,
    "journal_seal_grace_seconds": 60.0,
    "journal_checkpoint_interval_seconds": 60.0,
    "journal_checkpoint_dir": None,
    "journal_checkpoint_key": None,
}


def _setting(settings: Any, name: str) -> Any:
    value = getattr(settings, name, None)
    return DEFAULTS[name] if value is None else value


# Canonical serialisation and hashes (pure) ---------------------------------------------------------------
def canonical_serials(value: Any) -> list[list[int]]:
    """The set of serials as sorted, merged, inclusive ``[first, last]`` pairs. Accepts what the driver
    returns (SQLAlchemy ``Range`` items, asyncpg ``Range``) and plain inclusive ``(first, last)`` pairs."""
    pairs: list[tuple[int, int]] = []
    for item in value:
        if isinstance(item, list | tuple):
            first, last = int(item[0]), int(item[1])
        elif hasattr(item, "bounds"):  # sqlalchemy.dialects.postgresql.Range
            if item.empty:
                continue
            if item.lower is None or item.upper is None:
                raise ValueError("an unbounded serial range cannot be hashed")
            first = item.lower if item.bounds[0] == "[" else item.lower + 1
            last = item.upper if item.bounds[1] == "]" else item.upper - 1
        elif hasattr(item, "lower_inc"):  # asyncpg.Range
            if item.isempty:
                continue
            if item.lower is None or item.upper is None:
                raise ValueError("an unbounded serial range cannot be hashed")
            first = item.lower if item.lower_inc else item.lower + 1
            last = item.upper if item.upper_inc else item.upper - 1
        else:
            raise TypeError(f"not a serial range: {item!r}")
        if first <= last:
            pairs.append((int(first), int(last)))
    merged: list[list[int]] = []
    for first, last in sorted(pairs):
        if merged and first <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return merged


def canonical_time(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("a journal time must carry its time zone")
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"  # drops "+00:00"


def _plain(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"cannot serialise {type(value).__name__} as a journal value")
    return value


def _uuid(value: Any) -> str:
    return str(value if isinstance(value, UUID) else UUID(str(value)))


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "movement_id": _uuid, "hold_id": _uuid, "serials": canonical_serials, "at": canonical_time,
    "recorded_at": canonical_time,
}
_CONVERTERS = tuple((name, _CONVERT.get(name, _plain)) for name in JOURNAL_HASH_COLUMNS)
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _canonical_values(values: Iterable[Any]) -> bytes:
    """The canonical bytes of the hashed columns' values, in :data:`JOURNAL_HASH_COLUMNS` order."""
    document = {name: None if value is None else convert(value)
                for (name, convert), value in zip(_CONVERTERS, values, strict=True)}
    return _ENCODER.encode(document).encode("utf-8")


def canonical_row_bytes(row: Mapping[str, Any]) -> bytes:
    """The bytes a row hash is taken of (see the module docstring). Keys outside
    :data:`JOURNAL_HASH_COLUMNS` are ignored; a missing column is an error."""
    try:
        values = [row[name] for name in JOURNAL_HASH_COLUMNS]
    except KeyError as exc:
        raise KeyError(f"journal row lacks {exc}") from None
    return _canonical_values(values)


def row_hash(row: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_row_bytes(row)).hexdigest()


def _row_hash_values(values: Iterable[Any]) -> str:
    return hashlib.sha256(_canonical_values(values)).hexdigest()


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def chain_hash(previous: str, row_digest: str) -> str:
    """``sha256`` of the ASCII concatenation of the previous chain hash and this row's hash (both hex)."""
    if not (_HEX64.match(previous) and _HEX64.match(row_digest)):
        raise ValueError("chain and row hashes are 64 lower-case hex digits")
    return _chain(previous, row_digest)


def _chain(previous: str, row_digest: str) -> str:
    """:func:`chain_hash` without the checks (verification must digest whatever a tampered seal holds)."""
    return hashlib.sha256((previous + row_digest).encode("utf-8")).hexdigest()


def chain_of(row_hashes: Iterable[str], start: str = GENESIS) -> list[str]:
    """The chain hashes of consecutive row hashes after ``start``."""
    chain, previous = [], start
    for digest in row_hashes:
        previous = chain_hash(previous, digest)
        chain.append(previous)
    return chain


# Signed checkpoints (pure) ---------------------------------------------------------------------------------
def key_id(key: bytes) -> str:
    """A short fingerprint naming which key signed (reveals nothing usable about the key)."""
    return hashlib.sha256(b"registro.journal_checkpoint.key_id\x00" + key).hexdigest()[:16]


def _signed_bytes(body: Mapping[str, Any]) -> bytes:
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign_checkpoint(body: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """``body`` plus ``signature``: HMAC-SHA256 over the canonical JSON of everything but the signature."""
    mac = hmac.new(key, _signed_bytes(body), hashlib.sha256).hexdigest()
    return {**{k: v for k, v in body.items() if k != "signature"},
            "signature": {"alg": "HMAC-SHA256", "key_id": key_id(key), "value": mac}}


def checkpoint_signature_valid(document: Mapping[str, Any], key: bytes) -> bool:
    signature = document.get("signature")
    if not isinstance(signature, Mapping) or signature.get("alg") != "HMAC-SHA256":
        return False
    value = signature.get("value")
    if not isinstance(value, str):
        return False
    expected = hmac.new(key, _signed_bytes(document), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, value)


def checkpoint_file_name(seq: int) -> str:
    return f"checkpoint-{seq:012d}.json"


# Configuration -----------------------------------------------------------------------------------------
def default_key_file() -> Path:
    return REPO_ROOT / "var" / "secrets" / "journal_checkpoint.key"


def checkpoint_dir(settings: RegistrySettings) -> Path:
    """``journal_checkpoint_dir``, or ``var/checkpoints/<database>/`` (one folder per database, so test
    runs and checkouts sharing a machine never mix their checkpoints)."""
    configured = _setting(settings, "journal_checkpoint_dir")
    return Path(configured) if configured else REPO_ROOT / "var" / "checkpoints" / settings.db_name


def checkpoint_key(settings: RegistrySettings, key_file: Path | None = None) -> bytes:
    """The HMAC key: ``journal_checkpoint_key`` (``REGISTRY_JOURNAL_CHECKPOINT_KEY``); unset, the development
    and test profiles use ``var/secrets/journal_checkpoint.key`` (32 random bytes, hex, mode 0600, created
    once); production refuses to run without a configured key."""
    configured = _setting(settings, "journal_checkpoint_key")
    if isinstance(configured, SecretStr):
        configured = configured.get_secret_value()
    if configured:
        key = configured.encode("utf-8") if isinstance(configured, str) else bytes(configured)
        if len(key) < 16:
            raise UnsafeConfiguration("REGISTRY_JOURNAL_CHECKPOINT_KEY must be at least 16 characters")
        return key
    if settings.environment not in (Environment.DEVELOPMENT, Environment.TEST):
        raise UnsafeConfiguration("REGISTRY_JOURNAL_CHECKPOINT_KEY must be set outside development and test")
    return _development_key(key_file or default_key_file())


def _development_key(path: Path) -> bytes:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
        try:
            os.link(temporary, path)  # atomic: the first writer wins, nobody reads a half-written key
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return bytes.fromhex(path.read_text().strip())


# Sealing --------------------------------------------------------------------------------------------------
def _hashed_columns() -> list[Any]:
    return [journal.c[name] for name in JOURNAL_HASH_COLUMNS]


@dataclass
class SealResult:
    sealed: int
    head_seq: int
    head_chain: str
    more_waiting: bool  # the batch was full: more rows may be waiting


async def seal_batch(conn: AsyncConnection, *, after_id: int = 0, limit: int = 5000) -> SealResult | None:
    """Seal up to ``limit`` unsealed rows with ``id > after_id`` in the caller's transaction. ``None`` when
    another sealer holds the lock (then nothing was read or written)."""
    locked = (await conn.execute(select(func.pg_try_advisory_xact_lock(SEAL_LOCK_KEY)))).scalar_one()
    if not locked:
        return None
    head = (await conn.execute(
        select(journal_seals.c.seq, journal_seals.c.chain_hash).order_by(journal_seals.c.seq.desc()).limit(1)
    )).first()
    seq, previous = (head.seq, head.chain_hash) if head is not None else (0, GENESIS)
    rows = (await conn.execute(
        select(*_hashed_columns())
        .where(journal.c.id > after_id,
               ~exists().where(journal_seals.c.journal_id == journal.c.id))
        .order_by(journal.c.id)
        .limit(limit)
    )).all()
    seals = []
    for row in rows:  # the hashed columns, in order: row[0] is the id
        seq += 1
        digest = _row_hash_values(row)
        previous = chain_hash(previous, digest)
        seals.append({"seq": seq, "journal_id": row[0], "row_hash": digest, "chain_hash": previous})
    if seals:
        await conn.execute(insert(journal_seals), seals)
    return SealResult(len(seals), seq, previous, len(rows) >= limit)


@dataclass
class _SealerState:
    floor: int = 0
    last_full_sweep: float | None = None
    seen: deque[tuple[float, int]] = field(default_factory=deque)  # (when, highest visible id)


class JournalSealer:
    """The periodic sealing task (one instance per process; state per database). Each tick seals batches
    (one transaction each) until the backlog is gone or ``max_batches`` ran."""

    def __init__(self, *, max_batches: int = 20, monotonic: Callable[[], float] = time.monotonic):
        self.max_batches = max_batches
        self.monotonic = monotonic
        self._states: dict[str, _SealerState] = {}

    async def __call__(self, ctx: WorkerContext) -> int:
        return await self.tick(ctx.engine, ctx.settings)

    async def tick(self, engine: Any, settings: Any) -> int:
        state = self._states.setdefault(str(engine.url), _SealerState())
        now = self.monotonic()
        full = (state.last_full_sweep is None
                or now - state.last_full_sweep >= _setting(settings, "journal_seal_full_sweep_seconds"))
        after_id = 0 if full else state.floor
        async with engine.connect() as conn:
            highest = (await conn.execute(select(func.coalesce(func.max(journal.c.id), 0)))).scalar_one()
            await conn.commit()
        state.seen.append((now, highest))
        batch_size = int(_setting(settings, "journal_seal_batch_size"))
        total, complete = 0, False
        for _ in range(self.max_batches):
            async with engine.begin() as conn:
                result = await seal_batch(conn, after_id=after_id, limit=batch_size)
            if result is None:  # another sealer is at work
                return total
            total += result.sealed
            if not result.more_waiting:
                complete = True
                break
        if complete:
            if full:
                state.last_full_sweep = now
            # Every row visible a settle period ago was visible to this complete scan, so it is sealed.
            settled = now - _setting(settings, "journal_seal_settle_seconds")
            while state.seen and state.seen[0][0] <= settled:
                state.floor = max(state.floor, state.seen.popleft()[1])
        if total:
            log.debug("journal sealed", extra={"sealed": total})
        return total


# Checkpoints ---------------------------------------------------------------------------------------------
def _checkpoint_files(directory: Path) -> list[tuple[int, Path]]:
    if not directory.is_dir():
        return []
    found = []
    for entry in os.scandir(directory):
        match = CHECKPOINT_NAME.match(entry.name)
        if match and entry.is_file():
            found.append((int(match.group(1)), Path(entry.path)))
    return sorted(found)


def _latest_checkpoint(directory: Path) -> tuple[int, datetime] | None:
    files = _checkpoint_files(directory)
    for seq, path in reversed(files):
        try:
            document = json.loads(path.read_text())
            return seq, datetime.fromisoformat(document["signed_at"].replace("Z", "+00:00"))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
    return None


def _write_checkpoint(directory: Path, seq: int, document: Mapping[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / checkpoint_file_name(seq)
    temporary = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    with temporary.open("w") as handle:
        handle.write(json.dumps(document, indent=2, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)  # readers see the whole file or none of it
    folder = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(folder)  # the new name survives a crash
    finally:
        os.close(folder)
    return path


async def journal_head(conn: AsyncConnection) -> dict[str, Any] | None:
    row = (await conn.execute(
        select(journal_seals.c.seq, journal_seals.c.journal_id, journal_seals.c.chain_hash,
               journal_seals.c.sealed_at).order_by(journal_seals.c.seq.desc()).limit(1)
    )).mappings().first()
    return dict(row) if row is not None else None


class JournalCheckpointer:
    """The periodic checkpoint task: writes the signed head when it moved and the interval has passed
    (real time), and announces it through the outbox in the same database transaction."""

    def __init__(self) -> None:
        self._last: dict[Path, tuple[int, datetime] | None] = {}

    async def __call__(self, ctx: WorkerContext) -> Path | None:
        return await self.tick(ctx.engine, ctx.settings, ctx.outbox)

    async def tick(self, engine: Any, settings: Any, outbox: Any) -> Path | None:
        directory = checkpoint_dir(settings)
        key = await asyncio.to_thread(checkpoint_key, settings)
        if directory not in self._last:
            self._last[directory] = await asyncio.to_thread(_latest_checkpoint, directory)
        async with engine.begin() as conn:
            locked = (await conn.execute(select(func.pg_try_advisory_xact_lock(CHECKPOINT_LOCK_KEY)))).scalar_one()
            if not locked:
                return None
            head = await journal_head(conn)
            if head is None:
                return None
            last = self._last[directory]
            now = datetime.now(UTC)
            if last is not None:
                if head["seq"] < last[0]:
                    log.error("journal head %s is behind checkpoint %s: verify the journal", head["seq"], last[0])
                    return None
                interval = timedelta(seconds=float(_setting(settings, "journal_checkpoint_interval_seconds")))
                if head["seq"] == last[0] or now - last[1] < interval:
                    return None
            if await asyncio.to_thread((directory / checkpoint_file_name(head["seq"])).exists):
                self._last[directory] = (head["seq"], now)  # another worker wrote it
                return None
            database = (await conn.execute(select(func.current_database()))).scalar_one()
            document = sign_checkpoint({
                "format": CHECKPOINT_FORMAT,
                "database": database,
                "seq": head["seq"],
                "chain_hash": head["chain_hash"],
                "journal_id": head["journal_id"],
                "at": canonical_time(head["sealed_at"]),
                "signed_at": canonical_time(now),
            }, key)
            path = await asyncio.to_thread(_write_checkpoint, directory, head["seq"], document)
            await outbox.add(conn, JournalCheckpointed(seq=head["seq"], chain_hash=head["chain_hash"],
                                                       file=str(path), signed_at=now))
        self._last[directory] = (head["seq"], now)
        log.info("journal checkpoint written", extra={"seq": head["seq"], "file": str(path)})
        return path


seal_journal = JournalSealer()
"""Periodic task: ``("journal-sealer", 1.0, seal_journal)``."""
checkpoint_journal = JournalCheckpointer()
"""Periodic task: ``("journal-checkpoint", 5.0, checkpoint_journal)`` (the setting sets the real cadence)."""


# Verification --------------------------------------------------------------------------------------------
@dataclass
class _Checkpoint:
    seq: int
    chain_hash: str
    journal_id: int | None
    file: str


def _load_checkpoints(directory: Path, key: bytes, database: str
                      ) -> tuple[list[_Checkpoint], list[dict[str, Any]], int]:
    """Valid checkpoints of this database, discrepancies for invalid files, and how many belong to another
    database (skipped)."""
    valid: list[_Checkpoint] = []
    invalid: list[dict[str, Any]] = []
    foreign = 0
    for seq, path in _checkpoint_files(directory):
        try:
            document = json.loads(path.read_text())
            ok = isinstance(document, dict) and checkpoint_signature_valid(document, key)
        except (OSError, ValueError):
            document, ok = None, False
        if not ok or document.get("format") != CHECKPOINT_FORMAT or document.get("seq") != seq \
                or not isinstance(document.get("chain_hash"), str):
            journal_id = document.get("journal_id") if isinstance(document, dict) else None
            invalid.append(_discrepancy("journal.checkpoint_signature_invalid", seq, journal_id,
                                        f"{path.name}: the signature does not verify with the configured key"))
            continue
        if document.get("database") != database:
            foreign += 1
            continue
        valid.append(_Checkpoint(seq, document["chain_hash"], document.get("journal_id"), path.name))
    return valid, invalid, foreign


def _discrepancy(code: str, seq: int | None, journal_id: int | None, detail: str) -> dict[str, Any]:
    return {"code": code, "seq": seq, "journal_id": journal_id, "detail": detail}


class _Findings:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []
        self.total = 0
        self.by_code: dict[str, int] = {}

    def add(self, item: dict[str, Any]) -> None:
        self.total += 1
        self.by_code[item["code"]] = self.by_code.get(item["code"], 0) + 1
        if len(self.items) < MAX_REPORTED:
            self.items.append(item)


async def verify_journal(conn: AsyncConnection, checkpoint_directory: Path, key: bytes, *,
                         grace_seconds: float = 60.0, page_size: int = 10_000) -> dict[str, Any]:
    """Recompute every row hash and the chain, check every checkpoint; see the module docstring."""
    findings = _Findings()
    database = (await conn.execute(select(func.current_database()))).scalar_one()
    checkpoints, invalid, foreign = await asyncio.to_thread(_load_checkpoints, checkpoint_directory, key, database)
    for item in invalid:
        findings.add(item)
    head = await journal_head(conn)  # after reading the files: a genuine checkpoint is never ahead of it
    head_seq = head["seq"] if head is not None else 0
    pending: dict[int, list[_Checkpoint]] = {}
    for checkpoint in checkpoints:
        if checkpoint.seq > head_seq:
            findings.add(_discrepancy(
                "journal.checkpoint_ahead", checkpoint.seq, checkpoint.journal_id,
                f"{checkpoint.file}: signed at seq {checkpoint.seq}, but the last seal is {head_seq}"))
        else:
            pending.setdefault(checkpoint.seq, []).append(checkpoint)

    columns = [journal_seals.c.seq, journal_seals.c.journal_id.label("seal_journal_id"),
               journal_seals.c.row_hash.label("seal_row_hash"), journal_seals.c.chain_hash.label("seal_chain_hash"),
               *_hashed_columns()]
    stored_previous = recomputed = GENESIS
    last_seq, sealed = 0, 0
    while last_seq < head_seq:
        page = (await conn.execute(
            select(*columns)
            .select_from(journal_seals.outerjoin(journal, journal.c.id == journal_seals.c.journal_id))
            .where(journal_seals.c.seq > last_seq, journal_seals.c.seq <= head_seq)
            .order_by(journal_seals.c.seq)
            .limit(page_size)
        )).all()
        if not page:
            break
        for seq, journal_id, sealed_row_hash, sealed_chain_hash, *values in page:
            sealed += 1
            gap = seq != last_seq + 1
            if gap:  # checkpoints signed at a seq whose seal is gone
                for missing_seq in sorted(s for s in pending if last_seq < s < seq):
                    for checkpoint in pending.pop(missing_seq):
                        findings.add(_discrepancy(
                            "journal.checkpoint_mismatch", missing_seq, checkpoint.journal_id,
                            f"{checkpoint.file}: the seal at seq {missing_seq} is gone"))
            if values[0] is None:  # the joined journal row's id
                findings.add(_discrepancy("journal.row_missing", seq, journal_id,
                                          f"journal row {journal_id} sealed at seq {seq} no longer exists"))
                actual = sealed_row_hash
            else:
                actual = _row_hash_values(values)
                if actual != sealed_row_hash:
                    findings.add(_discrepancy("journal.row_changed", seq, journal_id,
                                              f"journal row {journal_id} differs from what was sealed at seq {seq}"))
            if gap or _chain(stored_previous, sealed_row_hash) != sealed_chain_hash:
                detail = (f"seals {last_seq + 1}..{seq - 1} are missing" if gap
                          else f"the seal at seq {seq} does not follow from the one before it")
                findings.add(_discrepancy("journal.chain_broken", seq, journal_id, detail))
            recomputed = _chain(recomputed, actual)
            stored_previous = sealed_chain_hash
            for checkpoint in pending.pop(seq, []):
                if checkpoint.chain_hash != recomputed or (
                        checkpoint.journal_id is not None and checkpoint.journal_id != journal_id):
                    findings.add(_discrepancy(
                        "journal.checkpoint_mismatch", seq, journal_id,
                        f"{checkpoint.file}: signed chain hash {checkpoint.chain_hash[:16]}… at seq {seq}, "
                        f"recomputed from the journal {recomputed[:16]}…"))
            last_seq = seq
    for seq, left in sorted(pending.items()):  # seals at the end vanished while we read (or a gap at the end)
        for checkpoint in left:
            findings.add(_discrepancy("journal.checkpoint_mismatch", seq, checkpoint.journal_id,
                                      f"{checkpoint.file}: the seal at seq {seq} is gone"))

    unsealed = (await conn.execute(
        select(func.count(),
               func.count().filter(journal.c.recorded_at < func.now() - timedelta(seconds=grace_seconds)),
               func.min(journal.c.id))
        .where(~exists().where(journal_seals.c.journal_id == journal.c.id))
    )).one()
    warnings = []
    if unsealed[1]:
        warnings.append({"code": "journal.seal_missing", "count": int(unsealed[1]),
                         "detail": f"{unsealed[1]} journal rows older than {grace_seconds:g} s have no seal yet "
                                   f"(lowest id {unsealed[2]}); not tampering, the sealer is behind or stopped"})
    return {
        "ok": findings.total == 0,
        "sealed": sealed,
        "unsealed": int(unsealed[0]),
        "head": None if head is None else {
            "seq": head["seq"], "journal_id": head["journal_id"], "chain_hash": head["chain_hash"],
            "recomputed_chain_hash": recomputed if sealed else None,
            "sealed_at": canonical_time(head["sealed_at"])},
        "checkpoints_checked": len(checkpoints) + len(invalid),
        "checkpoints_skipped": foreign,
        "discrepancies": findings.items,
        "discrepancies_total": findings.total,
        "discrepancies_by_code": findings.by_code,
        "warnings": warnings,
    }


# The route ------------------------------------------------------------------------------------------------
class Discrepancy(BaseModel):
    code: str
    seq: int | None
    journal_id: int | None
    detail: str


class JournalHead(BaseModel):
    seq: int
    journal_id: int
    chain_hash: str
    recomputed_chain_hash: str | None
    sealed_at: str


class VerificationWarning(BaseModel):
    code: str
    count: int
    detail: str


class JournalVerification(BaseModel):
    ok: bool
    sealed: int
    unsealed: int
    head: JournalHead | None
    checkpoints_checked: int
    checkpoints_skipped: int
    discrepancies: list[Discrepancy]
    discrepancies_total: int
    discrepancies_by_code: dict[str, int]
    warnings: list[VerificationWarning]


journal_router = APIRouter(prefix="/api/v1/ledger", tags=["ledger"])


@journal_router.get("/journal/verify", response_model=JournalVerification, operation_id="ledger-verify-journal",
                    summary="Recompute the journal's hashes and chain and check the signed checkpoints")
async def verify_journal_route(request: Request, conn: ReadConn, _who: Overseer) -> dict[str, Any]:
    """200 with the report; ``ok`` is false when anything was found (the first 1,000 are listed)."""
    settings = request.app.state.settings
    key = await asyncio.to_thread(checkpoint_key, settings)
    return await verify_journal(conn, checkpoint_dir(settings), key,
                                grace_seconds=float(_setting(settings, "journal_seal_grace_seconds")))
