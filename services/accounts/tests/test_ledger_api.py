"""The ledger's HTTP face on a real database, in-process: issuance, allocation, 200 concurrent holds
against 100 units, settle and release, refusals that change nothing, idempotency, unit history, freeze."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import uuid4

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text

from accounts.definition import DEFINITION
from registry_common.api import create_app
from registry_common.db import make_engine
from registry_common.testing.fixtures import settings_from_env

pytestmark = pytest.mark.integration


class Ledger:
    """A client of the ledger API with this test's accounts (unique ids, so the shared database is fine)."""

    def __init__(self, client: httpx.AsyncClient, token_for: Callable[..., str], prefix: str):
        self.client = client
        self.authority = {"Authorization": f"Bearer {token_for('authority-1', 'authority')}"}
        self.prefix = prefix

    def account(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    async def post(self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None,
                   key: str | None = None) -> httpx.Response:
        return await self.client.post(path, json=body, headers={
            **(headers or self.authority), "Idempotency-Key": key or str(uuid4()), "Accept-Language": "en"})

    async def move(self, kind: str, to: str, quantity: Any, frm: str | None = None, **extra: Any) -> httpx.Response:
        body = {"kind": kind, "to_account_id": to, "unit_type": "allowance", "quantity": quantity, **extra}
        if frm is not None:
            body["from_account_id"] = frm
        return await self.post("/api/v1/ledger/movements", body)

    async def hold(self, sender: str, receiver: str, quantity: Any, headers: dict[str, str] | None = None,
                   **extra: Any) -> httpx.Response:
        return await self.post("/api/v1/ledger/holds", {
            "sender_account_id": sender, "receiver_account_id": receiver, "unit_type": "allowance",
            "quantity": quantity, **extra}, headers)

    async def total(self, account: str) -> int:
        answer = await self.client.get(f"/api/v1/accounts/{account}/holdings", headers=self.authority)
        return answer.json()["total"]

    async def audit(self) -> dict[str, Any]:
        return (await self.client.get("/api/v1/ledger/audit", headers=self.authority)).json()


@pytest.fixture(scope="module")
async def ledger_api(provisioned_services: dict[str, str], token_for) -> AsyncIterator[Ledger]:
    settings = settings_from_env(provisioned_services, "accounts")
    prefix = f"T{uuid4().hex[:6].upper()}"
    owner = make_engine(settings.owner_database_url, pool_size=0, application_name="ledger-test-setup")
    async with owner.begin() as conn:
        for name, kind, state in [("CAP", "cap", "active"), ("A", "central", "active"), ("B", "central", "active"),
                                  ("C", "trading", "active"), ("SUSP", "central", "suspended"),
                                  ("CLOSED", "central", "closed"), ("CANCEL", "cancellation", "active")]:
            await conn.execute(text("INSERT INTO accounts (id, kind, name, state) VALUES (:id, :kind, :id, :state)"),
                               {"id": f"{prefix}-{name}", "kind": kind, "state": state})
    await owner.dispose()
    app = create_app(DEFINITION, settings)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://accounts") as client:
        yield Ledger(client, token_for, prefix)


async def test_issue_allocate_and_200_concurrent_holds_against_100_units(ledger_api: Ledger):
    cap, a, b = ledger_api.account("CAP"), ledger_api.account("A"), ledger_api.account("B")
    issued = await ledger_api.move("issuance", cap, 1000, vintage=2021)
    assert issued.status_code == 201, issued.text
    serials = issued.json()["serial_range"]
    assert serials["end"] - serials["start"] + 1 == 1000
    allocated = await ledger_api.move("allocation", a, 100, frm=cap)
    assert allocated.status_code == 201, allocated.text

    answers = await asyncio.gather(*(ledger_api.hold(a, b, 1) for _ in range(200)))
    codes = sorted(r.status_code for r in answers)
    assert codes.count(201) == 100 and codes.count(409) == 100, codes
    assert {r.json()["code"] for r in answers if r.status_code == 409} == {"ledger.insufficient_units"}
    assert await ledger_api.total(a) == 0
    report = await ledger_api.audit()
    assert report["ok"], report["discrepancies"]

    held = [r.json()["transfer_id"] for r in answers if r.status_code == 201]
    for transfer_id in held[:60]:
        settled = await ledger_api.client.post(f"/api/v1/ledger/holds/{transfer_id}/settle",
                                               headers=ledger_api.authority)
        assert settled.json()["state"] == "settled"
    for transfer_id in held[60:]:
        released = await ledger_api.client.post(f"/api/v1/ledger/holds/{transfer_id}/release",
                                                headers=ledger_api.authority)
        assert released.json()["state"] == "released"
    assert (await ledger_api.total(a), await ledger_api.total(b)) == (40, 60)
    holdings = (await ledger_api.client.get(f"/api/v1/accounts/{b}/holdings", headers=ledger_api.authority)).json()
    assert len(holdings["by_type_and_vintage"][0]["blocks"]) <= 60  # adjacent serials merge into blocks
    assert (await ledger_api.audit())["ok"]

    history = (await ledger_api.client.get(f"/api/v1/units/{serials['start']}", headers=ledger_api.authority)).json()
    assert [h["kind"] for h in history["history"]][:2] == ["issuance", "allocation"]
    assert history["readable"] == f"MX-DE-2021-{serials['start']:012d}"


@pytest.mark.parametrize(("quantity", "field"), [(0, "quantity"), (-5, "quantity"), (1.5, "quantity"),
                                                 ("10", "quantity")])
async def test_bad_quantities_are_refused_naming_the_field(ledger_api: Ledger, quantity: Any, field: str):
    answer = await ledger_api.hold(ledger_api.account("A"), ledger_api.account("B"), quantity)
    assert answer.status_code == 422
    assert field in [e["field"] for e in answer.json()["errors"]]


async def test_refusals_leave_the_ledger_unchanged(ledger_api: Ledger, token_for):
    a, b, cap = ledger_api.account("A"), ledger_api.account("B"), ledger_api.account("CAP")
    await ledger_api.move("allocation", a, 10, frm=cap)
    before = (await ledger_api.audit())["supply"], await ledger_api.total(a)
    stranger = {"Authorization": f"Bearer {token_for(str(uuid4()), 'installation')}"}
    cases = [
        (await ledger_api.hold(a, "NO-SUCH-ACCOUNT", 1), 404, "ledger.account_not_found"),
        (await ledger_api.hold(ledger_api.account("SUSP"), b, 1), 409, "ledger.sender_not_active"),
        (await ledger_api.hold(a, ledger_api.account("CLOSED"), 1), 409, "ledger.receiver_not_open"),
        (await ledger_api.hold(a, b, 1_000_000), 409, "ledger.insufficient_units"),
        (await ledger_api.hold(a, b, 1, stranger), 404, "account.not_found"),  # others' accounts are unseen
        (await ledger_api.hold(a, ledger_api.account("CANCEL"), 1), 422, "ledger.receiver_kind_not_allowed"),
        (await ledger_api.move("issuance", a, 5, vintage=2021), 422, "ledger.receiver_kind_not_allowed"),
        (await ledger_api.post("/api/v1/ledger/movements", {"kind": "issuance", "to_account_id": cap,
                                                            "unit_type": "offset", "quantity": 5, "vintage": 2021}),
         422, "ledger.unit_type_not_allowed"),
        (await ledger_api.move("surrender", b, 1, frm=a), 422, "ledger.receiver_kind_not_allowed"),
    ]
    for answer, status, code in cases:
        assert (answer.status_code, answer.json()["code"]) == (status, code), answer.text
    assert ((await ledger_api.audit())["supply"], await ledger_api.total(a)) == before


async def test_idempotency_key_replays_and_refuses_a_different_body(ledger_api: Ledger):
    a, b, cap = ledger_api.account("A"), ledger_api.account("B"), ledger_api.account("CAP")
    await ledger_api.move("allocation", a, 3, frm=cap)
    before = await ledger_api.total(a)
    key = str(uuid4())
    body = {"sender_account_id": a, "receiver_account_id": b, "unit_type": "allowance", "quantity": 2,
            "transfer_id": str(uuid4())}
    first = await ledger_api.post("/api/v1/ledger/holds", body, key=key)
    again = await ledger_api.post("/api/v1/ledger/holds", body, key=key)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert await ledger_api.total(a) == before - 2
    other = await ledger_api.post("/api/v1/ledger/holds", {**body, "quantity": 1}, key=key)
    assert (other.status_code, other.json()["code"]) == (422, "request.idempotency_key_reused")
    missing = await ledger_api.client.post("/api/v1/ledger/holds", json=body, headers=ledger_api.authority)
    assert missing.status_code == 422 and "Idempotency-Key" in [e["field"] for e in missing.json()["errors"]]


async def test_freeze_refuses_movements_until_lifted(ledger_api: Ledger):
    a, b, cap = ledger_api.account("A"), ledger_api.account("B"), ledger_api.account("CAP")
    await ledger_api.move("allocation", a, 1, frm=cap)
    frozen = await ledger_api.client.post("/api/v1/ledger/freeze", json={"reason": "incident 42"},
                                          headers=ledger_api.authority)
    assert frozen.status_code == 200
    try:
        refused = await ledger_api.hold(a, b, 1)
        assert (refused.status_code, refused.json()["code"]) == (423, "ledger.frozen")
    finally:
        await ledger_api.client.post("/api/v1/ledger/unfreeze", json={"reason": "resolved"},
                                     headers=ledger_api.authority)
    assert (await ledger_api.hold(a, b, 1)).status_code == 201


async def test_a_correction_needs_a_second_authority_user(ledger_api: Ledger, token_for):
    a, b, cap = ledger_api.account("A"), ledger_api.account("B"), ledger_api.account("CAP")
    await ledger_api.move("allocation", a, 5, frm=cap)
    before = (await ledger_api.total(a), await ledger_api.total(b))
    asked = await ledger_api.move("correction", b, 2, frm=a, reason="units credited to the wrong account")
    assert asked.status_code == 202, asked.text
    approval = asked.json()
    assert (await ledger_api.total(a), await ledger_api.total(b)) == before  # nothing moves yet

    url = f"/api/v1/accounts/approvals/{approval['approval_id']}/approve"
    own = await ledger_api.client.post(url, json={"payload_hash": approval["payload_hash"]},
                                       headers=ledger_api.authority)
    assert own.status_code == 403 and own.json()["code"] == "approval.self_approval"
    second = {"Authorization": f"Bearer {token_for('authority-2', 'authority')}"}
    approved = await ledger_api.client.post(url, json={"payload_hash": approval["payload_hash"]}, headers=second)
    assert approved.status_code == 200, approved.text
    assert (await ledger_api.total(a), await ledger_api.total(b)) == (before[0] - 2, before[1] + 2)
    assert (await ledger_api.audit())["ok"]


async def test_a_batch_applies_each_line_or_refuses_it_in_one_transaction(ledger_api: Ledger, provisioned_services):
    from accounts.commands import on_move_units_batch
    from registry_common.clock import ProgrammeClock
    from registry_common.messaging.consumer import HandlerContext
    from registry_common.messaging.envelope import Envelope
    from registry_common.messaging.outbox import Outbox
    from registry_contracts.accounts import MoveUnits, MoveUnitsBatch

    a, c, cap = ledger_api.account("A"), ledger_api.account("C"), ledger_api.account("CAP")
    await ledger_api.move("issuance", cap, 4, vintage=2021)  # not counting on what earlier tests left
    await ledger_api.move("allocation", a, 4, frm=cap)
    start_a, start_c = await ledger_api.total(a), await ledger_api.total(c)
    settings = settings_from_env(provisioned_services, "accounts")
    batch = MoveUnitsBatch(batch_id=uuid4(), lines=[
        MoveUnits(movement_id=uuid4(), kind="correction", from_account_id=a, to_account_id=c, unit_type="allowance",
                  quantity=q, actor="authority-1") for q in (3, 10**9, 1)])
    engine = make_engine(settings.app_database_url, pool_size=0, application_name="batch-test")
    context = HandlerContext(Envelope.wrap(batch, producer="issuance"), Outbox("accounts"), ProgrammeClock(None),
                             settings)
    async with engine.begin() as conn:
        await on_move_units_batch(conn, batch, context)
        rows = (await conn.execute(text(
            "SELECT routing_key, envelope->'payload' AS p FROM outbox WHERE envelope->>'causation_id' = :m "
            "ORDER BY id"), {"m": str(context.envelope.message_id)})).all()
    await engine.dispose()
    assert [r.routing_key for r in rows] == ["accounts.units_moved_batch.v1"]  # one answer, a result per line
    results = rows[0].p["results"]
    assert rows[0].p["batch_id"] == str(batch.batch_id)
    assert [(r["moved"], r["code"]) for r in results] == [(True, None), (False, "ledger.insufficient_units"),
                                                         (True, None)]
    assert (await ledger_api.total(a), await ledger_api.total(c)) == (start_a - 4, start_c + 4)
    assert (await ledger_api.audit())["ok"]


async def test_a_large_batch_is_set_based_and_keeps_every_invariant(ledger_api: Ledger, provisioned_services):
    from accounts.commands import on_move_units_batch
    from registry_common.clock import ProgrammeClock
    from registry_common.messaging.consumer import HandlerContext
    from registry_common.messaging.envelope import Envelope
    from registry_common.messaging.outbox import Outbox
    from registry_contracts.accounts import MoveUnits, MoveUnitsBatch

    cap, a, b, c = (ledger_api.account(n) for n in ("CAP", "A", "B", "C"))
    await ledger_api.move("issuance", cap, 1000, vintage=2021)  # not counting on what earlier tests left
    await ledger_api.move("issuance", cap, 500, vintage=2022)
    before = {x: await ledger_api.total(x) for x in (cap, a, b, c)}
    repeated = uuid4()

    def line(to: str, quantity: int, movement_id: Any = None, **extra: Any) -> MoveUnits:
        return MoveUnits(movement_id=movement_id or uuid4(), kind="allocation", from_account_id=cap, to_account_id=to,
                         unit_type="allowance", quantity=quantity, actor="authority-1", **extra)

    lines = [line(a if n % 2 else b, 3) for n in range(300)]
    lines += [line(a, 5, repeated), line(a, 5, repeated),  # the second is a duplicate
              line("NO-SUCH", 1), line(c, 1),  # unknown account; a trading account cannot receive allocation
              line(b, 7, vintage=2022), line(a, 10**9)]  # a vintage-specific line; more than the cap holds
    batch = MoveUnitsBatch(batch_id=uuid4(), lines=lines)
    settings = settings_from_env(provisioned_services, "accounts")
    engine = make_engine(settings.app_database_url, pool_size=0, application_name="batch-test")
    context = HandlerContext(Envelope.wrap(batch, producer="issuance"), Outbox("accounts"), ProgrammeClock(None),
                             settings)
    async with engine.begin() as conn:
        await on_move_units_batch(conn, batch, context)
        answer = (await conn.execute(text(
            "SELECT envelope->'payload' AS p FROM outbox WHERE envelope->>'causation_id' = :m"),
            {"m": str(context.envelope.message_id)})).one()
        journalled = (await conn.execute(text(
            "SELECT movement_id, to_account_id, quantity, reason, actor FROM journal "
            "WHERE movement_id = ANY(CAST(:ids AS uuid[])) ORDER BY id"),
            {"ids": [str(line.movement_id) for line in lines]})).all()
    await engine.dispose()
    results = answer.p["results"]
    assert [r["movement_id"] for r in results] == [str(line.movement_id) for line in lines]
    refused = [r["code"] for r in results if not r["moved"]]
    assert refused == ["ledger.duplicate_movement", "ledger.account_not_found", "ledger.receiver_kind_not_allowed",
                       "ledger.insufficient_units"]
    # Journalled in the order of the lines, each with its destination, quantity, actor and (absent) reason.
    moved_lines = [lines[i] for i, r in enumerate(results) if r["moved"]]
    per_movement: dict[Any, list[Any]] = {}
    for row in journalled:
        per_movement.setdefault(row.movement_id, []).append(row)
    assert list(per_movement) == [line.movement_id for line in moved_lines]
    for moved_line in moved_lines:
        rows = per_movement[moved_line.movement_id]
        assert sum(r.quantity for r in rows) == moved_line.quantity
        assert {(r.to_account_id, r.reason, r.actor) for r in rows} == {(moved_line.to_account_id, None, "authority-1")}
    moved = 300 * 3 + 5 + 7
    after = {x: await ledger_api.total(x) for x in (cap, a, b, c)}
    assert after[cap] == before[cap] - moved and after[c] == before[c]
    assert after[a] + after[b] == before[a] + before[b] + moved
    assert (await ledger_api.audit())["ok"]


async def test_serial_numbers_beyond_32_bits_move_merge_and_audit(ledger_api: Ledger, provisioned_services):
    """Serials are 64-bit: once the registry has issued more than 2^31 units, issuing, moving, holding,
    settling and merging neighbour blocks work the same (every statement binds them as BIGINT)."""
    settings = settings_from_env(provisioned_services, "accounts")
    owner = make_engine(settings.owner_database_url, pool_size=0, application_name="ledger-test-serials")
    async with owner.begin() as conn:
        await conn.execute(text("UPDATE ledger_settings SET next_serial = greatest(next_serial, 5000000000) "
                                "WHERE id = 1"))
    await owner.dispose()
    cap, a, b = ledger_api.account("CAP"), ledger_api.account("A"), ledger_api.account("B")
    issued = await ledger_api.move("issuance", cap, 1000, vintage=2029)
    assert issued.status_code == 201, issued.text
    assert issued.json()["serial_range"]["start"] >= 5_000_000_000
    for _ in range(3):  # each allocation lands next to the previous one in A: merged into one block
        moved = await ledger_api.move("allocation", a, 10, frm=cap, vintage=2029)
        assert moved.status_code == 201, moved.text
    held = await ledger_api.hold(a, b, 5, vintage=2029)
    assert held.status_code == 201, held.text
    settled = await ledger_api.client.post(f"/api/v1/ledger/holds/{held.json()['transfer_id']}/settle",
                                           headers=ledger_api.authority)
    assert settled.json()["state"] == "settled", settled.text
    holdings = (await ledger_api.client.get(f"/api/v1/accounts/{a}/holdings", headers=ledger_api.authority)).json()
    line = next(h for h in holdings["by_type_and_vintage"] if h["vintage"] == 2029)
    assert line["quantity"] == 25 and len(line["blocks"]) == 1 and line["blocks"][0]["start"] >= 5_000_000_000
    assert (await ledger_api.audit())["ok"]


async def test_the_hold_commands_on_the_broker_face_merge_journal_and_refuse_without_writing(
        ledger_api: Ledger, provisioned_services):
    """hold_units, settle_hold and release_hold as the worker runs them (no savepoint: each refuses before
    its first write). A hold taken from three blocks keeps adjacent serials of one vintage as one block and
    journals a row per vintage; settling merges them into the receiver's blocks; refusals, in the same
    transaction, publish their event and change nothing."""
    from accounts.commands import on_hold_units, on_release_hold, on_settle_hold
    from registry_common.clock import ProgrammeClock
    from registry_common.messaging.consumer import HandlerContext
    from registry_common.messaging.envelope import Envelope
    from registry_common.messaging.outbox import Outbox
    from registry_contracts.accounts import HoldUnits, ReleaseHold, SettleHold

    settings = settings_from_env(provisioned_services, "accounts")
    sender, receiver = ledger_api.account("HS"), ledger_api.account("HR")
    base = 2 * 10**15 + int(uuid4().int % 10**9) * 1000  # far from every other test's serials, above 2^31
    owner = make_engine(settings.owner_database_url, pool_size=0, application_name="hold-commands-setup")
    async with owner.begin() as conn:
        for account in (sender, receiver):
            await conn.execute(text("INSERT INTO accounts (id, kind, name, state) VALUES (:id, 'central', :id, "
                                    "'active')"), {"id": account})
        for account, vintage, start, end in [(sender, 2021, base, base + 4), (sender, 2021, base + 5, base + 9),
                                             (sender, 2022, base + 20, base + 29),
                                             (receiver, 2021, base + 10, base + 19)]:
            await conn.execute(text("INSERT INTO unit_blocks (account_id, unit_type, vintage, serial_start, "
                                    "serial_end) VALUES (:a, 'allowance', :v, :s, :e)"),
                               {"a": account, "v": vintage, "s": start, "e": end})
            await conn.execute(text(
                "INSERT INTO journal (movement_id, kind, to_account_id, unit_type, vintage, serials, quantity, actor, "
                "at) VALUES (:m, 'issuance', :a, 'allowance', :v, int8multirange(int8range(:s, :e, '[]')), "
                ":q, 't', now())"), {"m": uuid4(), "a": account, "v": vintage, "s": start, "e": end,
                                    "q": end - start + 1})
    await owner.dispose()

    def hold(quantity: int) -> HoldUnits:
        return HoldUnits(transfer_id=uuid4(), sender_account_id=sender, receiver_account_id=receiver,
                         unit_type="allowance", quantity=quantity, actor="authority-1")

    async def handle(handler: Any, message: Any) -> list[tuple[str, dict[str, Any]]]:
        """Run one handler as the worker would; the events it published."""
        context = HandlerContext(Envelope.wrap(message, producer="transfers"), Outbox("accounts"),
                                 ProgrammeClock(None), settings)
        await handler(conn, message, context)
        rows = (await conn.execute(text(
            "SELECT routing_key, envelope->'payload' AS p FROM outbox WHERE envelope->>'causation_id' = :m "
            "ORDER BY id"), {"m": str(context.envelope.message_id)})).all()
        return [(r.routing_key, r.p) for r in rows]

    async def blocks_of(column: str, place: Any) -> list[tuple[int, int, int]]:
        return [tuple(r) for r in (await conn.execute(text(
            f"SELECT vintage, serial_start - {base}, serial_end - {base} FROM unit_blocks WHERE {column} = :p "
            "ORDER BY serial_start"), {"p": place})).all()]

    engine = make_engine(settings.app_database_url, pool_size=0, application_name="hold-commands-test")
    async with engine.begin() as conn:
        too_much = hold(21)
        assert await handle(on_hold_units, too_much) == [("accounts.hold_refused.v1", {
            "transfer_id": str(too_much.transfer_id), "sender_account_id": sender, "receiver_account_id": receiver,
            "quantity": 21, "code": "ledger.insufficient_units", "detail": "requested=21, available=20"})]
        unknown = uuid4()
        [(key, refusal)] = await handle(on_settle_hold, SettleHold(transfer_id=unknown))
        assert (key, refusal["code"]) == ("accounts.movement_refused.v1", "ledger.hold_not_found")
        assert await handle(on_release_hold, ReleaseHold(transfer_id=unknown, reason="x")) == []

        held = hold(17)  # two whole blocks of 2021 (adjacent) and 7 units of the 2022 block
        [(key, event)] = await handle(on_hold_units, held)
        assert key == "accounts.units_held.v1" and event["quantity"] == 17
        assert [(b["vintage"], b["quantity"], [(r["start"] - base, r["end"] - base) for r in b["ranges"]])
                for b in event["blocks"]] == [(2021, 10, [(0, 4), (5, 9)]), (2022, 7, [(20, 26)])]
        hold_id = event["hold_id"]
        assert await blocks_of("hold_id", hold_id) == [(2021, 0, 9), (2022, 20, 26)]
        assert await blocks_of("account_id", sender) == [(2022, 27, 29)]
        journalled = (await conn.execute(text(
            "SELECT kind, vintage, quantity, serials::text AS s FROM journal WHERE hold_id = :h ORDER BY id"),
            {"h": hold_id})).all()
        assert [(j.kind, j.vintage, j.quantity, j.s) for j in journalled] == [
            ("transfer_hold", 2021, 10, f"{{[{base},{base + 10})}}"),
            ("transfer_hold", 2022, 7, f"{{[{base + 20},{base + 27})}}")]
        assert await handle(on_hold_units, held) == []  # a repeated command: its hold is there already

        [(key, event)] = await handle(on_settle_hold, SettleHold(transfer_id=held.transfer_id))
        assert key == "accounts.hold_settled.v1" and event["quantity"] == 17
        assert await blocks_of("hold_id", hold_id) == []
        assert await blocks_of("account_id", receiver) == [(2021, 0, 19), (2022, 20, 26)]
        state = (await conn.execute(text("SELECT state, closed_at IS NOT NULL AS closed FROM holds WHERE id = :h"),
                                    {"h": hold_id})).one()
        assert (state.state, state.closed) == ("settled", True)
        assert await handle(on_settle_hold, SettleHold(transfer_id=held.transfer_id)) == []  # already settled
        assert await handle(on_release_hold, ReleaseHold(transfer_id=held.transfer_id, reason="x")) == []

        returned = hold(2)
        [(key, event)] = await handle(on_hold_units, returned)
        [(key, event)] = await handle(on_release_hold, ReleaseHold(transfer_id=returned.transfer_id, reason="late"))
        assert (key, event["reason"], event["quantity"]) == ("accounts.hold_released.v1", "late", 2)
        assert await blocks_of("account_id", sender) == [(2022, 27, 29)]
        [(key, refusal)] = await handle(on_settle_hold, SettleHold(transfer_id=returned.transfer_id))
        assert (key, refusal["code"]) == ("accounts.movement_refused.v1", "ledger.hold_not_held")
    await engine.dispose()
    assert (await ledger_api.audit())["ok"]
