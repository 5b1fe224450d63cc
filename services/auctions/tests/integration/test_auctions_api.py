"""Auctions' HTTP face in-process on its real database: scheduling with four-eyes consignment, bad input
with its codes, applications and qualification, sealed bids (not even the authority sees them before the
close), clearing stored set-based, approval refused to the clearer, one result event per bidder, payment and
delivery, and the published summary. The ledger's answers and the read models' events are handed to the
handlers directly (the broker is the system tests' business)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text

from auctions import service
from auctions.definition import DEFINITION
from issuance.domain.periods import PILOT
from registry_common.api import create_app
from registry_common.clock import ProgrammeClock
from registry_common.db import make_engine
from registry_common.messaging.consumer import HandlerContext
from registry_common.messaging.envelope import Envelope
from registry_common.testing.fixtures import settings_from_env, wait_for
from registry_contracts.accounts import (
    AccountOpened,
    MovedBlock,
    MovementRefused,
    RepresentativeLinked,
    SerialRange,
    UnitsMoved,
)
from registry_contracts.issuance import PeriodScheduled

ZONE = "America/Mexico_City"

pytestmark = pytest.mark.integration


class Api:
    def __init__(self, client: httpx.AsyncClient, token_for: Callable[..., str], engine: Any, settings: Any):
        self.client, self.engine, self.settings, self.token_for = client, engine, settings, token_for
        self.a = {"Authorization": f"Bearer {token_for('auc-authority-a', 'authority')}", "Accept-Language": "en"}
        self.b = {"Authorization": f"Bearer {token_for('auc-authority-b', 'authority')}"}
        self.admin = {"Authorization": f"Bearer {token_for('auc-admin', 'administrator')}"}

    async def sql(self, statement: str, **params: Any) -> Any:
        async with self.engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return result.all() if result.returns_rows else None

    async def deliver(self, message: Any) -> None:
        ctx = HandlerContext(envelope=Envelope.wrap(message, producer="accounts"), outbox=service.OUTBOX,
                             clock=ProgrammeClock(None), settings=self.settings)
        async with self.engine.begin() as conn:
            await service.SUBSCRIPTIONS[type(message)](conn, message, ctx)

    async def now(self) -> datetime:
        async with self.engine.connect() as conn:
            return await service.programme_now(conn)

    async def bidder(self, kind: str = "central", role: str = "installation") -> tuple[str, dict[str, str]]:
        account_id, user_id = f"{'CEN' if kind == 'central' else 'TRD'}-{uuid4().hex[:8]}", uuid4()
        await self.deliver(AccountOpened(account_id=account_id, kind=kind, name=account_id))
        await self.deliver(RepresentativeLinked(account_id=account_id, user_id=user_id,
                                                rights=["initiate", "approve", "view"]))
        return account_id, {"Authorization": f"Bearer {self.token_for(str(user_id), role)}", "Accept-Language": "en"}

    async def post(self, path: str, who: dict[str, str], body: Any = None, **kw: Any) -> httpx.Response:
        return await self.client.post(path, json=body if body is not None else {},
                                      headers={**who, "Idempotency-Key": str(uuid4())}, **kw)

    async def approve(self, answer: dict[str, Any], who: dict[str, str]) -> httpx.Response:
        return await self.client.post(f"/api/v1/auctions/approvals/{answer['approval_id']}/approve",
                                      json={"payload_hash": answer["payload_hash"]}, headers=who)

    async def outbox(self, routing_key: str, correlation_id: str) -> list[dict[str, Any]]:
        rows = await self.sql("SELECT envelope->'payload' FROM outbox WHERE routing_key = :k "
                              "AND (envelope->>'correlation_id' = :c OR envelope->'payload'->>'auction_id' = :c)",
                              k=routing_key, c=correlation_id)
        return [r[0] for r in rows]


@pytest.fixture(scope="module")
async def api(provisioned_services: dict[str, str], token_for) -> AsyncIterator[Api]:
    # auctions from the first period here, so the pilot's 2020 can be auctioned at the provisioned clock
    settings = settings_from_env(provisioned_services, "auctions", auctions_from_period=1)
    owner = make_engine(settings.owner_database_url, pool_size=0, application_name="auctions-test")
    app = create_app(DEFINITION, settings)
    async with LifespanManager(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                                       base_url="http://auctions") as client:
        api = Api(client, token_for, owner, settings)
        for spec in PILOT:  # the pilot's periods, exactly as issuance publishes them
            await api.deliver(PeriodScheduled(period=spec.code, vintage=spec.vintage, final=spec.final,
                                              timezone=ZONE, local_dates=spec.local_dates(), **spec.instants(ZONE)))
        yield api
    await owner.dispose()


def terms(now: datetime, **overrides: Any) -> dict[str, Any]:
    body = {"vintage": 2020, "quantity": 10_000, "currency": "USD", "reserve_price": "16.68", "price_step": "0.01",
            "purchase_limit_share": "0.5", "bidding_opens_at": now.isoformat(),
            "bidding_closes_at": (now + timedelta(seconds=8)).isoformat(),
            "payment_deadline": (now + timedelta(days=10)).isoformat(), "unsold": "price_containment"}
    return {**body, **overrides}


async def test_bad_terms_are_refused_with_their_code(api: Api):
    now = await api.now()
    cases = [({"reserve_price": "0"}, "auction.invalid_price"), ({"reserve_price": "-1.00"}, "auction.invalid_price"),
             ({"reserve_price": "16.685"}, "auction.invalid_price"), ({"quantity": 0}, "auction.invalid_quantity"),
             ({"quantity": 1500}, "auction.invalid_quantity"), ({"currency": "usd"}, "auction.invalid_currency"),
             ({"purchase_limit_share": "1.5"}, "auction.invalid_purchase_limit"),
             ({"source": "moon"}, "auction.unknown_source"), ({"unsold": "moon"}, "auction.unknown_destination"),
             ({"bidding_closes_at": (now - timedelta(hours=1)).isoformat()}, "auction.invalid_window"),
             ({"vintage": 2031}, "auction.unknown_vintage"),
             ({"vintage": 2022}, "auction.future_vintage_not_allowed")]
    before = await api.sql("SELECT count(*) FROM auctions")
    for change, code in cases:
        answer = await api.post("/api/v1/auctions", api.a, terms(now, **change))
        assert answer.status_code == 422 and answer.json()["code"] == code, (change, answer.text)
    assert await api.sql("SELECT count(*) FROM auctions") == before
    participant = await api.post("/api/v1/auctions", {"Authorization": f"Bearer {api.token_for('p', 'installation')}"},
                                 terms(now))
    assert participant.status_code == 403


async def test_an_auction_from_scheduling_to_delivery(api: Api):
    now = await api.now()
    asked = await api.post("/api/v1/auctions", api.a, terms(now))
    assert asked.status_code == 202, asked.text
    request = asked.json()
    auction_id = request["auction_id"]
    assert (await api.approve(request, api.a)).json()["code"] == "approval.self_approval"
    assert (await api.approve(request, api.b)).status_code == 200
    [consign] = await api.outbox("accounts.move_units.v1", auction_id)
    assert (consign["kind"], consign["from_account_id"], consign["to_account_id"], consign["quantity"],
            consign["vintage"]) == ("auction_consignment", "SYS-CAP", "SYS-AUCTION", 10_000, 2020)

    a, a_rep = await api.bidder()
    b, b_rep = await api.bidder("trading", "intermediary")
    c, c_rep = await api.bidder()
    for account, rep in ((a, a_rep), (b, b_rep), (c, c_rep)):
        applied = await api.post(f"/api/v1/auctions/{auction_id}/applications", rep, {"account_id": account})
        assert applied.status_code == 201, applied.text
    not_mine = await api.post(f"/api/v1/auctions/{auction_id}/applications", a_rep, {"account_id": b})
    assert not_mine.status_code == 403 and not_mine.json()["code"] == "auction.not_representative"
    for account in (a, b):
        qualified = await api.post(f"/api/v1/auctions/{auction_id}/applications/{account}/qualify", api.admin,
                                   {"guarantee_reference": f"guarantee {account}"})
        assert qualified.status_code == 200 and qualified.json()["state"] == "qualified", qualified.text

    bid = {"account_id": a, "price": "20.00", "quantity": 4000}
    early = await api.post(f"/api/v1/auctions/{auction_id}/bids", a_rep, bid)
    assert early.status_code == 409 and early.json()["code"] == "auction.not_open"  # not consigned yet
    moved = UnitsMoved(movement_id=consign["movement_id"], movement_kind="auction_consignment",
                       from_account_id="SYS-CAP", to_account_id="SYS-AUCTION", quantity=10_000,
                       blocks=[MovedBlock(unit_type="allowance", vintage=2020,
                                          ranges=[SerialRange(start=1, end=10_000)], quantity=10_000)])
    await api.deliver(moved)
    await api.deliver(moved)  # a repeat changes nothing
    assert len(await api.outbox("auctions.auction_scheduled.v1", auction_id)) == 1

    bad = [({"price": "0"}, 422, "auction.invalid_price"), ({"price": "-20.00"}, 422, "auction.invalid_price"),
           ({"quantity": 0}, 422, "auction.invalid_quantity"), ({"quantity": -1000}, 422, "auction.invalid_quantity"),
           ({"price": "16.67"}, 422, "auction.below_reserve"), ({"price": "20.001"}, 422, "auction.invalid_price"),
           ({"quantity": 1500}, 422, "auction.off_lot_size"), ({"quantity": 6000}, 422, "auction.over_purchase_limit"),
           ({"account_id": c}, 403, "auction.not_qualified")]
    for change, status, code in bad:
        answer = await api.post(f"/api/v1/auctions/{auction_id}/bids", a_rep if "account_id" not in change else c_rep,
                                {**bid, **change})
        assert answer.status_code == status and answer.json()["code"] == code, (change, answer.text)
    placed = await api.post(f"/api/v1/auctions/{auction_id}/bids", a_rep, bid)
    assert placed.status_code == 201, placed.text
    over = await api.post(f"/api/v1/auctions/{auction_id}/bids", a_rep, {**bid, "quantity": 2000})
    assert over.status_code == 422 and over.json()["code"] == "auction.over_purchase_limit"
    changed = await api.client.put(f"/api/v1/auctions/{auction_id}/bids/{placed.json()['id']}",
                                   json={"price": "21.00", "quantity": 5000}, headers=a_rep)
    assert changed.status_code == 200 and changed.json()["price"] == "21.00", changed.text
    for price, quantity in (("20.00", 3000), ("18.00", 1000)):
        assert (await api.post(f"/api/v1/auctions/{auction_id}/bids", b_rep,
                               {"account_id": b, "price": price, "quantity": quantity})).status_code == 201
    extra = await api.post(f"/api/v1/auctions/{auction_id}/bids", b_rep, {"account_id": b, "price": "30.00",
                                                                          "quantity": 1000})
    withdrawn = await api.client.delete(f"/api/v1/auctions/{auction_id}/bids/{extra.json()['id']}", headers=b_rep)
    assert withdrawn.status_code == 200 and withdrawn.json()["state"] == "withdrawn"
    sealed = await api.client.get(f"/api/v1/auctions/{auction_id}/bids", headers=api.a)
    assert sealed.status_code == 409 and sealed.json()["code"] == "auction.bids_sealed"
    own = await api.client.get(f"/api/v1/auctions/{auction_id}/bids", params={"account_id": a}, headers=a_rep)
    assert [x["quantity"] for x in own.json()["items"]] == [5000]
    assert (await api.client.get(f"/api/v1/auctions/{auction_id}/bids", params={"account_id": a},
                                 headers=b_rep)).status_code == 403
    audit = await api.sql("SELECT details::text FROM audit_log WHERE entity_id = :a AND action LIKE 'auction.bid%'",
                          a=auction_id)
    assert audit and not any("21.00" in r[0] or "2100" in r[0] for r in audit)  # the log keeps bids sealed
    early_clear = await api.post(f"/api/v1/auctions/{auction_id}/clear", api.a)
    assert early_clear.status_code == 409 and early_clear.json()["code"] == "auction.not_closed"

    async def closed() -> bool:
        shown = (await api.client.get(f"/api/v1/auctions/{auction_id}", headers=api.a)).json()
        return shown["bidding"] == "closed"

    await wait_for(closed, timeout=30, what="the bidding window to close")
    late = await api.post(f"/api/v1/auctions/{auction_id}/bids", b_rep, {"account_id": b, "price": "25.00",
                                                                         "quantity": 1000})
    assert late.status_code == 409 and late.json()["code"] == "auction.closed"
    cleared = await api.post(f"/api/v1/auctions/{auction_id}/clear", api.a)
    assert cleared.status_code == 200, cleared.text
    result = cleared.json()
    # a 5,000 @ 21.00; b 3,000 @ 20.00 and 1,000 @ 18.00: undersubscribed, 9,000 sold at 18.00, 1,000 unsold
    assert (result["clearing_price"], result["sold"], result["unsold"], result["bidders"]) == ("18.00", 9000, 1000, 2)
    by_clearer = await api.approve(result, api.a)
    assert by_clearer.status_code == 403 and by_clearer.json()["code"] == "approval.self_approval"
    public = await api.client.get(f"/api/v1/public/auctions/{auction_id}")
    assert public.status_code == 404  # not before the approval
    approved = await api.approve(result, api.b)
    assert approved.status_code == 200, approved.text
    events = await api.outbox("auctions.auction_results_approved.v1", auction_id)
    assert sorted((e["bidder_account_id"], e["awarded_quantity"], e["amount_due"]) for e in events) == sorted(
        [(a, 5000, "90000.00"), (b, 4000, "72000.00")])
    [unsold] = [m for m in await api.outbox("accounts.move_units.v1", auction_id) if m["kind"] == "unsold_return"]
    assert (unsold["from_account_id"], unsold["to_account_id"], unsold["quantity"]) == \
        ("SYS-AUCTION", "SYS-RES-PRICE_CONTAINMENT", 1000)
    public = (await api.client.get(f"/api/v1/public/auctions/{auction_id}")).json()
    assert (public["clearing_price"], public["volume_sold"], public["bidders"], public["bid_to_cover"]) == \
        ("18.00", 9000, 2, "0.90")
    viewed = await api.client.get(f"/api/v1/auctions/{auction_id}/bids", headers=api.a)
    assert viewed.status_code == 200 and len(viewed.json()["items"]) == 4
    assert await api.sql("SELECT count(*) FROM audit_log WHERE entity_id = :a AND action = 'auction.bids_viewed'",
                         a=auction_id) == [(1,)]

    paid = await api.post(f"/api/v1/auctions/{auction_id}/awards/{a}/payment", api.admin, {"reference": "SPEI 1"})
    assert paid.status_code == 202 and paid.json()["state"] == "paid", paid.text
    again = await api.post(f"/api/v1/auctions/{auction_id}/awards/{a}/payment", api.admin, {})
    assert again.status_code == 409 and again.json()["code"] == "auction.award_wrong_state"
    [delivery] = [m for m in await api.outbox("accounts.move_units.v1", auction_id) if m["kind"] == "auction_delivery"]
    assert (delivery["from_account_id"], delivery["to_account_id"], delivery["quantity"]) == ("SYS-AUCTION", a, 5000)
    await api.deliver(UnitsMoved(movement_id=delivery["movement_id"], movement_kind="auction_delivery",
                                 from_account_id="SYS-AUCTION", to_account_id=a, quantity=5000, blocks=[]))
    mine = (await api.client.get(f"/api/v1/auctions/{auction_id}/results", params={"account_id": a},
                                 headers=a_rep)).json()
    assert mine["awards"][0]["state"] == "delivered" and mine["awards"][0]["awarded"] == 5000
    assert len(await api.outbox("auctions.auction_units_delivered.v1", auction_id)) == 1


async def consigned(api: Api, **change: Any) -> tuple[str, dict[str, Any]]:
    now = await api.now()
    request = (await api.post("/api/v1/auctions", api.a, terms(now, **change))).json()
    assert (await api.approve(request, api.b)).status_code == 200
    [consign] = await api.outbox("accounts.move_units.v1", request["auction_id"])
    await api.deliver(UnitsMoved(movement_id=consign["movement_id"], movement_kind="auction_consignment",
                                 from_account_id=consign["from_account_id"], to_account_id="SYS-AUCTION",
                                 quantity=consign["quantity"], blocks=[]))
    return request["auction_id"], consign


async def test_concurrent_bids_never_exceed_the_purchase_limit(api: Api):
    auction_id, _ = await consigned(api, purchase_limit_share="0.3")  # 3,000 per bidder
    a, a_rep = await api.bidder()
    await api.post(f"/api/v1/auctions/{auction_id}/applications", a_rep, {"account_id": a})
    await api.post(f"/api/v1/auctions/{auction_id}/applications/{a}/qualify", api.admin, {"guarantee_reference": "g"})
    answers = await asyncio.gather(*(api.post(f"/api/v1/auctions/{auction_id}/bids", a_rep,
                                              {"account_id": a, "price": "17.00", "quantity": 1000})
                                     for _ in range(6)))
    assert sorted(r.status_code for r in answers) == [201, 201, 201, 422, 422, 422]
    assert {r.json()["code"] for r in answers if r.status_code == 422} == {"auction.over_purchase_limit"}
    live = await api.sql("SELECT sum(quantity) FROM auction_bids WHERE auction_id = :a AND state = 'live'",
                         a=auction_id)
    assert live == [(3000,)]


async def test_a_refused_consignment_takes_no_bids(api: Api):
    now = await api.now()
    request = (await api.post("/api/v1/auctions", api.a, terms(now, source="new_entrants"))).json()
    assert (await api.approve(request, api.b)).status_code == 200
    [consign] = await api.outbox("accounts.move_units.v1", request["auction_id"])
    assert consign["from_account_id"] == "SYS-RES-NEW_ENTRANTS"
    refusal = MovementRefused(command="move_units", reference_id=consign["movement_id"],
                              code="ledger.insufficient_units")
    await api.deliver(refusal)
    await api.deliver(refusal)
    shown = (await api.client.get(f"/api/v1/auctions/{request['auction_id']}", headers=api.a)).json()
    assert (shown["state"], shown["code"]) == ("consignment_refused", "ledger.insufficient_units")
    assert not await api.outbox("auctions.auction_scheduled.v1", request["auction_id"])
    a, a_rep = await api.bidder()
    applied = await api.post(f"/api/v1/auctions/{request['auction_id']}/applications", a_rep, {"account_id": a})
    assert applied.status_code == 409 and applied.json()["code"] == "auction.wrong_state"


async def test_rejected_results_can_be_cleared_again_once(api: Api):
    auction_id, _ = await consigned(api)
    a, a_rep = await api.bidder()
    await api.post(f"/api/v1/auctions/{auction_id}/applications", a_rep, {"account_id": a})
    await api.post(f"/api/v1/auctions/{auction_id}/applications/{a}/qualify", api.admin, {"guarantee_reference": "g"})
    assert (await api.post(f"/api/v1/auctions/{auction_id}/bids", a_rep,
                           {"account_id": a, "price": "17.00", "quantity": 2000})).status_code == 201

    async def closed() -> bool:
        return (await api.client.get(f"/api/v1/auctions/{auction_id}", headers=api.a)).json()["bidding"] == "closed"

    await wait_for(closed, timeout=30, what="the bidding window to close")
    first = (await api.post(f"/api/v1/auctions/{auction_id}/clear", api.a)).json()
    twice = await api.post(f"/api/v1/auctions/{auction_id}/clear", api.a)
    assert twice.status_code == 409 and twice.json()["code"] == "auction.wrong_state"  # awaiting approval
    rejected = await api.client.post(f"/api/v1/auctions/approvals/{first['approval_id']}/reject",
                                     json={"reason": "recount"}, headers=api.b)
    assert rejected.status_code == 200
    shown = (await api.client.get(f"/api/v1/auctions/{auction_id}", headers=api.a)).json()
    assert shown["state"] == "cleared" and shown["results"]["results_approval_state"] == "rejected"
    second = await api.post(f"/api/v1/auctions/{auction_id}/clear", api.b)
    assert second.status_code == 200 and second.json()["approval_id"] != first["approval_id"]
    assert second.json()["results_hash"] == first["results_hash"]  # the same bids clear the same way
    assert await api.sql("SELECT count(*) FROM auction_awards WHERE auction_id = :a", a=auction_id) == [(1,)]
    by_second_clearer = await api.approve(second.json(), api.b)
    assert by_second_clearer.status_code == 403
    assert (await api.approve(second.json(), api.a)).status_code == 200
    assert len(await api.outbox("auctions.auction_results_approved.v1", auction_id)) == 1
