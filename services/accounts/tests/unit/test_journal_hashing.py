"""The journal's canonical row hash, the chain and checkpoint signatures: pure functions, no I/O."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import pytest
from sqlalchemy.dialects.postgresql import Range

from accounts.journal_seal import (
    GENESIS,
    JOURNAL_HASH_COLUMNS,
    canonical_row_bytes,
    canonical_serials,
    chain_hash,
    chain_of,
    checkpoint_signature_valid,
    row_hash,
    sign_checkpoint,
)
from accounts.tables import journal

ROW: dict[str, Any] = {
    "id": 42,
    "movement_id": UUID("0b6f2a8e-3c1d-4e5f-9a7b-1c2d3e4f5a6b"),
    "kind": "transfer_settle",
    "from_account_id": "CEN-000001",
    "to_account_id": "TRD-000007",
    "hold_id": UUID("9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a"),
    "unit_type": "allowance",
    "vintage": 2021,
    "origin": "",
    "serials": [Range(1, 6, bounds="[)"), Range(10, 20, bounds="[)")],
    "quantity": 15,
    "actor": "user-7",
    "reason": "Transferencia núm. 7",
    "correlation_id": "corr-1",
    "causation_id": None,
    "at": datetime(2021, 3, 1, 12, 0, tzinfo=UTC),
    "recorded_at": datetime(2026, 11, 23, 13, 0, 0, 123456, tzinfo=UTC),
}

# A value different from ROW's for every column.
CHANGED: dict[str, Any] = {
    "id": 43,
    "movement_id": UUID("0b6f2a8e-3c1d-4e5f-9a7b-1c2d3e4f5a6c"),
    "kind": "transfer_release",
    "from_account_id": "CEN-000002",
    "to_account_id": None,
    "hold_id": None,
    "unit_type": "offset",
    "vintage": 2022,
    "origin": "PRJ-1",
    "serials": [Range(1, 6, bounds="[)"), Range(10, 21, bounds="[)")],
    "quantity": 16,
    "actor": "user-8",
    "reason": None,
    "correlation_id": "corr-2",
    "causation_id": "cause-1",
    "at": datetime(2021, 3, 1, 12, 0, 0, 1, tzinfo=UTC),
    "recorded_at": datetime(2026, 11, 23, 13, 0, 0, 123457, tzinfo=UTC),
}


def test_the_hash_covers_exactly_the_journal_columns():
    assert set(JOURNAL_HASH_COLUMNS) == set(journal.c.keys())
    assert set(CHANGED) == set(JOURNAL_HASH_COLUMNS)


def test_canonical_form_is_the_documented_one():
    assert canonical_row_bytes(ROW) == (
        '{"actor":"user-7","at":"2021-03-01T12:00:00.000000Z","causation_id":null,"correlation_id":"corr-1",'
        '"from_account_id":"CEN-000001","hold_id":"9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a","id":42,'
        '"kind":"transfer_settle","movement_id":"0b6f2a8e-3c1d-4e5f-9a7b-1c2d3e4f5a6b","origin":"",'
        '"quantity":15,"reason":"Transferencia núm. 7","recorded_at":"2026-11-23T13:00:00.123456Z",'
        '"serials":[[1,5],[10,19]],"to_account_id":"TRD-000007","unit_type":"allowance","vintage":2021}'
    ).encode()
    assert row_hash(ROW) == hashlib.sha256(canonical_row_bytes(ROW)).hexdigest()


def test_hash_is_stable_across_key_order_and_ignores_other_keys():
    reordered = dict(reversed(list(ROW.items())))
    assert row_hash(reordered) == row_hash(ROW)
    assert row_hash({**ROW, "seq": 9, "row_hash": "x"}) == row_hash(ROW)


@pytest.mark.parametrize("column", JOURNAL_HASH_COLUMNS)
def test_hash_changes_when_any_column_changes(column: str):
    assert row_hash({**ROW, column: CHANGED[column]}) != row_hash(ROW)


def test_null_and_empty_string_differ():
    assert row_hash({**ROW, "reason": ""}) != row_hash({**ROW, "reason": None})


def test_a_missing_column_is_an_error():
    row = dict(ROW)
    del row["recorded_at"]
    with pytest.raises(KeyError):
        row_hash(row)


def test_same_instant_in_any_time_zone_hashes_alike_and_naive_times_are_refused():
    mexico = timezone(timedelta(hours=-6))
    assert row_hash({**ROW, "at": ROW["at"].astimezone(mexico)}) == row_hash(ROW)
    with pytest.raises(ValueError):
        row_hash({**ROW, "at": datetime(2021, 3, 1, 12, 0)})


def test_serials_are_a_set_whatever_ranges_describe_it():
    expected = [[1, 5], [10, 19]]
    assert canonical_serials([Range(1, 6, bounds="[)"), Range(10, 20, bounds="[)")]) == expected
    assert canonical_serials([Range(1, 5, bounds="[]"), Range(9, 19, bounds="(]")]) == expected
    assert canonical_serials([(10, 14), (1, 5), (15, 19)]) == expected  # unsorted, adjacent runs merged
    assert canonical_serials([Range(empty=True), (1, 5), (10, 19)]) == expected
    assert row_hash({**ROW, "serials": [(10, 19), (1, 5)]}) == row_hash(ROW)
    with pytest.raises(ValueError):
        canonical_serials([Range(None, 5, bounds="[)")])


def test_chain_starts_at_genesis_and_depends_on_order_and_every_link():
    a, b, c = (row_hash({**ROW, "id": i}) for i in (1, 2, 3))
    first = hashlib.sha256((GENESIS + a).encode("ascii")).hexdigest()
    assert GENESIS == "0" * 64
    assert chain_hash(GENESIS, a) == first
    assert chain_of([a, b, c]) == [first, chain_hash(first, b), chain_hash(chain_hash(first, b), c)]
    assert chain_of([a, b, c])[-1] != chain_of([b, a, c])[-1]
    assert chain_of([a, b, c])[-1] != chain_of([a, row_hash({**ROW, "id": 2, "quantity": 1}), c])[-1]
    assert chain_of([b, c], start=first) == chain_of([a, b, c])[1:]
    with pytest.raises(ValueError):
        chain_hash(GENESIS, "not-a-hash")


def test_checkpoint_signature_binds_every_field_and_the_key():
    key, other = b"k" * 32, b"o" * 32
    body = {"format": "registro.journal_checkpoint.v1", "database": "db", "seq": 7, "chain_hash": "a" * 64,
            "journal_id": 9, "at": "2026-11-23T13:00:00.000000Z", "signed_at": "2026-11-23T13:00:01.000000Z"}
    signed = sign_checkpoint(body, key)
    assert checkpoint_signature_valid(signed, key)
    assert sign_checkpoint(signed, key) == signed  # re-signing replaces, never nests
    assert not checkpoint_signature_valid(signed, other)
    for name, value in (("seq", 8), ("chain_hash", "b" * 64), ("journal_id", 10), ("database", "x")):
        assert not checkpoint_signature_valid({**signed, name: value}, key)
    assert not checkpoint_signature_valid(body, key)
    assert not checkpoint_signature_valid({**signed, "signature": {**signed["signature"], "alg": "none"}}, key)
