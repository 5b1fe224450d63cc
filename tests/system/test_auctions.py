"""Auctions with every process separate, through the gateway: four-eyes consignment from the cap, hand-worked
clearings (undersubscribed with the unsold units returned to a reserve, oversubscribed with a tie at the
clearing price shared pro rata, a binding purchase limit; bids below the reserve refused), results approved
by another authority user (never the one who cleared), payment and delivery in the ledger, an unpaid award
forfeited on the programme clock with its units returned, the public summary, bad input answered with its
code and changing nothing, every bidder told by e-mail, inbox and signed webhook; and a clean ledger audit."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from registry_common.launcher import SystemPlan
from registry_common.settings import SERVICES
from registry_common.testing.fixtures import wait_for
from registry_common.testing.private_system import private_system
from registry_common.testing.registry_client import Party, RegistryClient
from registry_common.testing.webhook_receiver import Receiver, https_receiver

pytestmark = [pytest.mark.system, pytest.mark.integration]
RESERVE = "SYS-RES-PRICE_CONTAINMENT"
AUTHORITY_EMAIL = "subastas-autoridad@example.mx"


@pytest.fixture(scope="module")
def receiver(webhook_ca, tmp_path_factory) -> Iterator[tuple[Receiver, str]]:
    with https_receiver(webhook_ca[0], tmp_path_factory.mktemp("auction-receiver")) as running:
        yield running


class Auctions:
    """The shared client (``registry``: parties, requests) with the auction steps and who takes them: two
    authority users (``a`` schedules and clears, ``b`` approves), an operator (``ops``); auctions' database."""

    def __init__(self, plan: SystemPlan, registry: RegistryClient, b: dict[str, str], ops: dict[str, str]):
        self.plan, self.registry, self.http = plan, registry, registry.http
        self.call, self.party = registry.call, registry.party
        self.a = {**registry.authority, "Accept-Language": "en"}
        self.b, self.ops = {**b, "Accept-Language": "en"}, {**ops, "Accept-Language": "en"}
        self.db = registry.databases["auctions"]

    # The programme clock ------------------------------------------------------------------------------
    async def programme_now(self) -> datetime:
        answer = await self.call("GET", "/api/v1/programme/clock", self.a, expect=200)
        return datetime.fromisoformat(answer.json()["programme_now"])

    async def move_clock_to(self, target: datetime) -> None:
        moved = (await self.call("PUT", "/api/v1/programme/clock", self.a,
                                 {"programme_now": target.isoformat()}, expect=200)).json()
        urls = [self.plan.api_url(s) for s in SERVICES] + [self.plan.worker_url(s) for s in SERVICES]

        async def everyone() -> bool:
            for url in urls:
                clock = (await self.http.get(f"{url}/health")).json()["clock"]
                if clock["version"] < moved["version"]:
                    return False
            return True

        await wait_for(everyone, timeout=60, what="every process to hear of the clock move")

    # Ledger -------------------------------------------------------------------------------------------
    async def holds(self, account_id: str, vintage: int) -> int:
        answer = await self.call("GET", f"/api/v1/accounts/{account_id}/holdings", self.a, expect=200)
        return sum(e["quantity"] for e in answer.json()["by_type_and_vintage"] if e["vintage"] == vintage)

    # Auctions -----------------------------------------------------------------------------------------
    async def schedule(self, terms: dict[str, Any]) -> str:
        asked = await self.call("POST", "/api/v1/auctions", self.a, terms, key=True, expect=202)
        request = asked.json()
        mine = await self.call("POST", f"/api/v1/auctions/approvals/{request['approval_id']}/approve", self.a,
                               {"payload_hash": request["payload_hash"]})
        assert mine.status_code == 403 and mine.json()["code"] == "approval.self_approval", mine.text
        await self.call("POST", f"/api/v1/auctions/approvals/{request['approval_id']}/approve", self.b,
                        {"payload_hash": request["payload_hash"]}, expect=200)
        return request["auction_id"]

    async def auction(self, auction_id: str) -> dict[str, Any]:
        return (await self.call("GET", f"/api/v1/auctions/{auction_id}", self.a, expect=200)).json()

    async def reaches(self, auction_id: str, state: str) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            shown = await self.auction(auction_id)
            return shown if shown["state"] == state else None

        return await wait_for(check, timeout=60, what=f"auction {auction_id} to be {state}")

    async def qualify(self, auction_id: str, party: Party) -> None:
        await self.call("POST", f"/api/v1/auctions/{auction_id}/applications", party.headers,
                        {"account_id": party.account_id}, expect=201)
        await self.call("POST", f"/api/v1/auctions/{auction_id}/applications/{party.account_id}/qualify", self.ops,
                        {"guarantee_reference": f"garantía {party.account_id}"}, expect=200)

    async def bid(self, auction_id: str, party: Party, price: str, quantity: int) -> httpx.Response:
        return await self.call("POST", f"/api/v1/auctions/{auction_id}/bids", party.headers,
                               {"account_id": party.account_id, "price": price, "quantity": quantity}, key=True)

    async def own_bids(self, auction_id: str, party: Party) -> list[dict[str, Any]]:
        return (await self.call("GET", f"/api/v1/auctions/{auction_id}/bids", party.headers,
                                params={"account_id": party.account_id}, expect=200)).json()["items"]

    async def clear_and_approve(self, auction_id: str) -> dict[str, Any]:
        cleared = (await self.call("POST", f"/api/v1/auctions/{auction_id}/clear", self.a, key=True,
                                   expect=200)).json()
        by_clearer = await self.call("POST", f"/api/v1/auctions/approvals/{cleared['approval_id']}/approve", self.a,
                                     {"payload_hash": cleared["payload_hash"]})
        assert by_clearer.status_code == 403 and by_clearer.json()["code"] == "approval.self_approval"
        assert (await self.auction(auction_id))["state"] == "cleared"  # nothing changed
        await self.call("POST", f"/api/v1/auctions/approvals/{cleared['approval_id']}/approve", self.b,
                        {"payload_hash": cleared["payload_hash"]}, expect=200)
        return cleared

    async def awards(self, auction_id: str) -> dict[str, dict[str, Any]]:
        shown = (await self.call("GET", f"/api/v1/auctions/{auction_id}/results", self.a, expect=200)).json()
        return {a["account_id"]: a for a in shown["awards"]}


@pytest.fixture(scope="module")
async def reg(registry_env, tmp_path_factory, mailbox, webhook_ca, token_for) -> AsyncIterator[Auctions]:
    """A system of its own (its programme clock moves a year and more here; the authority has an address).
    Parties are handed out once auctions and notifications, too, know them."""
    env = {"REGISTRY_SMTP_HOST": mailbox.host, "REGISTRY_SMTP_PORT": str(mailbox.port),
           "REGISTRY_WEBHOOK_CA_FILE": str(webhook_ca[1]), "REGISTRY_DELIVERY_POLL_SECONDS": "0.2",
           "REGISTRY_AUTHORITY_EMAILS": AUTHORITY_EMAIL, "REGISTRY_SWEEP_INTERVAL_SECONDS": "0.2"}
    tag = secrets.token_hex(3)
    async with private_system(registry_env, tmp_path_factory.mktemp("auctions-system"), "u", env) as (plan, own), \
            RegistryClient.of(plan.gateway_url, own, databases=["auctions", "notifications"],
                              authority_token=token_for(f"auction-authority-a-{tag}", "authority")) as registry:
        yield Auctions(plan, registry,
                       b={"Authorization": f"Bearer {token_for(f'auction-authority-b-{tag}', 'authority')}"},
                       ops={"Authorization": f"Bearer {token_for(f'auction-admin-{tag}', 'administrator')}"})


async def test_auctions_clear_settle_forfeit_and_tell_every_bidder(reg: Auctions, mailbox, receiver):
    # The programme: auctions are allowed from its second period (the pilot's 2021).
    periods = await wait_for(lambda: reg.db.fetch("SELECT period, vintage, starts_at, ends_at FROM known_periods "
                                                  "ORDER BY starts_at"), timeout=60, what="auctions to know periods")
    second = periods[1]
    now = await reg.programme_now()
    if now < second["starts_at"]:
        early = await reg.call("POST", "/api/v1/auctions", reg.a, {
            "vintage": periods[0]["vintage"], "quantity": 4000, "currency": "MXN", "reserve_price": "10.00",
            "bidding_opens_at": now.isoformat(), "bidding_closes_at": (now + timedelta(hours=1)).isoformat(),
            "payment_deadline": (now + timedelta(hours=2)).isoformat()}, key=True)
        assert early.status_code == 422 and early.json()["code"] == "auction.not_allowed_yet", early.text
        await reg.move_clock_to(second["starts_at"] + timedelta(days=1))
        now = await reg.programme_now()
    vintage = next(p["vintage"] for p in periods if p["starts_at"] <= now < p["ends_at"])
    await reg.call("POST", "/api/v1/ledger/movements", reg.a, {
        "kind": "issuance", "to_account_id": "SYS-CAP", "unit_type": "allowance", "vintage": vintage,
        "quantity": 30_000}, key=True, expect=201)
    before = {a: await reg.holds(a, vintage) for a in ("SYS-CAP", "SYS-AUCTION", RESERVE)}

    p1, p2 = await reg.party(language="es"), await reg.party(language="en")
    p3 = await reg.party("intermediary", "intermediary", language="en")
    p4 = await reg.party("intermediary", "intermediary", language="es")
    outsider = await reg.party(language="en")
    bidders = (p1, p2, p3, p4)
    hooks = {p.account_id: f"auction-{p.account_id}" for p in bidders}
    for party in bidders:
        await reg.registry.webhook(party, receiver, hooks[party.account_id])

    window = {"currency": "MXN", "vintage": vintage, "bidding_opens_at": now.isoformat(),
              "bidding_closes_at": (now + timedelta(hours=1)).isoformat(),
              "payment_deadline": (now + timedelta(hours=3)).isoformat()}
    under = await reg.schedule({**window, "quantity": 10_000, "reserve_price": "10.00", "purchase_limit_share": "0.5",
                                "unsold": "price_containment"})
    tie = await reg.schedule({**window, "quantity": 10_000, "reserve_price": "10.00", "purchase_limit_share": "1",
                              "unsold": "price_containment"})
    limit = await reg.schedule({**window, "quantity": 10_000, "reserve_price": "10.00", "price_step": "0.05",
                                "purchase_limit_share": "0.3", "unsold": "stay"})
    for auction_id in (under, tie, limit):
        shown = await reg.reaches(auction_id, "scheduled")
        assert shown["source_account_id"] == "SYS-CAP" and shown["bidding"] == "open"
        for party in bidders:
            await reg.qualify(auction_id, party)
    assert await reg.holds("SYS-AUCTION", vintage) == before["SYS-AUCTION"] + 30_000
    assert await reg.holds("SYS-CAP", vintage) == before["SYS-CAP"] - 30_000

    # Bad input: a 4xx with its code, and nothing stored.
    refusals = [(p1, "0", 1000, 422, "auction.invalid_price"), (p1, "-12.00", 1000, 422, "auction.invalid_price"),
                (p1, "12.00", 0, 422, "auction.invalid_quantity"),
                (p1, "12.00", -1000, 422, "auction.invalid_quantity"),
                (p1, "12.003", 1000, 422, "auction.invalid_price"), (p1, "12.00", 1500, 422, "auction.off_lot_size"),
                (p1, "9.99", 1000, 422, "auction.below_reserve"),
                (outsider, "12.00", 1000, 403, "auction.not_qualified")]
    for party, price, quantity, status, code in refusals:
        answer = await reg.bid(tie, party, price, quantity)
        assert answer.status_code == status and answer.json()["code"] == code, (price, quantity, answer.text)
    off_step = await reg.bid(limit, p1, "12.02", 1000)
    assert off_step.status_code == 422 and off_step.json()["code"] == "auction.off_price_step"
    assert await reg.own_bids(tie, p1) == [] and await reg.own_bids(limit, p1) == []
    sealed = await reg.call("GET", f"/api/v1/auctions/{tie}/bids", reg.a)
    assert sealed.status_code == 409 and sealed.json()["code"] == "auction.bids_sealed"

    # Undersubscribed: every bid at or above the reserve wins; 5,000 unsold go back to the reserve.
    for party, price, quantity in ((p1, "12.00", 3000), (p2, "10.50", 2000)):
        assert (await reg.bid(under, party, price, quantity)).status_code == 201
    # Oversubscribed, tie at 12.00: p1 takes 4,000 at 15.00; 6,000 left for 9,000 bid at 12.00.
    for party, price, quantity in ((p1, "15.00", 4000), (p1, "11.00", 2000), (p2, "12.00", 3000),
                                   (p3, "12.00", 5000), (p4, "12.00", 1000)):
        assert (await reg.bid(tie, party, price, quantity)).status_code == 201
    # Binding purchase limit (3,000 each): p1 cannot bid past it; the lower bids fill the rest.
    assert (await reg.bid(limit, p1, "20.00", 3000)).status_code == 201
    over = await reg.bid(limit, p1, "19.00", 1000)
    assert over.status_code == 422 and over.json()["code"] == "auction.over_purchase_limit"
    for party, price, quantity in ((p2, "15.00", 3000), (p3, "14.00", 3000), (p4, "13.00", 3000)):
        assert (await reg.bid(limit, party, price, quantity)).status_code == 201

    await reg.move_clock_to(now + timedelta(hours=1, minutes=1))
    late = await reg.bid(tie, p4, "30.00", 1000)
    assert late.status_code == 409 and late.json()["code"] == "auction.closed"
    assert len(await reg.own_bids(tie, p4)) == 1
    for auction_id in (under, tie, limit):
        assert (await reg.call("GET", f"/api/v1/public/auctions/{auction_id}", {})).status_code == 404

    cleared = {a: await reg.clear_and_approve(a) for a in (under, tie, limit)}
    assert (cleared[under]["clearing_price"], cleared[under]["sold"], cleared[under]["unsold"]) == ("10.50", 5000, 5000)
    assert (cleared[tie]["clearing_price"], cleared[tie]["sold"], cleared[tie]["unsold"]) == ("12.00", 10_000, 0)
    assert (cleared[limit]["clearing_price"], cleared[limit]["sold"]) == ("13.00", 10_000)
    assert {k: v["awarded"] for k, v in (await reg.awards(under)).items()} == {p1.account_id: 3000,
                                                                               p2.account_id: 2000}
    tie_awards = await reg.awards(tie)
    # floors 2,000 + 3,333 + 666; the last unit to the largest remainder (p4: 6,000,000 mod 9,000 = 6,000)
    assert {k: v["awarded"] for k, v in tie_awards.items()} == {
        p1.account_id: 4000, p2.account_id: 2000, p3.account_id: 3333, p4.account_id: 667}
    assert tie_awards[p3.account_id]["amount_due"] == "39996.00"
    assert {k: v["awarded"] for k, v in (await reg.awards(limit)).items()} == {
        p1.account_id: 3000, p2.account_id: 3000, p3.account_id: 3000, p4.account_id: 1000}
    public = (await reg.call("GET", f"/api/v1/public/auctions/{tie}", {}, expect=200)).json()
    assert (public["clearing_price"], public["volume_sold"], public["bidders"], public["bid_to_cover"]) == \
        ("12.00", 10_000, 4, "1.50")
    viewed = await reg.call("GET", f"/api/v1/auctions/{tie}/bids", reg.a, expect=200)
    assert len(viewed.json()["items"]) == 5
    audit = (await reg.call("GET", "/api/v1/auctions/audit-log", reg.a,
                            params={"entity_id": tie, "action": "auction.bids_viewed"}, expect=200)).json()
    assert len(audit["items"]) == 1

    # Payment by the deadline: the ledger delivers; p4's tie award is never paid.
    for auction_id, awards in ((under, (p1, p2)), (tie, (p1, p2, p3)), (limit, bidders)):
        for party in awards:
            await reg.call("POST", f"/api/v1/auctions/{auction_id}/awards/{party.account_id}/payment", reg.ops,
                           {"reference": f"SPEI {party.account_id}"}, key=True, expect=202)

    async def delivered() -> bool:
        states = [a["state"] for auction_id in (under, tie, limit) for a in (await reg.awards(auction_id)).values()]
        return states.count("delivered") == 9

    await wait_for(delivered, timeout=60, what="nine deliveries")
    await reg.reaches(under, "settled")
    await reg.reaches(limit, "settled")
    assert (await reg.auction(tie))["state"] == "approved"  # p4 has not paid yet

    await reg.move_clock_to(now + timedelta(hours=3, minutes=1))
    settled = await reg.reaches(tie, "settled")
    assert settled["results"]["sold"] == 10_000
    assert (await reg.awards(tie))[p4.account_id]["state"] == "forfeited"
    late_payment = await reg.call("POST", f"/api/v1/auctions/{tie}/awards/{p4.account_id}/payment", reg.ops, {},
                                  key=True)
    assert late_payment.status_code == 409 and late_payment.json()["code"] == "auction.award_wrong_state"

    # Units conserved: the winners hold their awards, the forfeited 667 and the 5,000 unsold are in the reserve.
    expected = {p1.account_id: 3000 + 4000 + 3000, p2.account_id: 2000 + 2000 + 3000, p3.account_id: 3333 + 3000,
                p4.account_id: 1000}
    for account, units in expected.items():
        assert await reg.holds(account, vintage) == units, account
    assert await reg.holds(RESERVE, vintage) == before[RESERVE] + 5000 + 667
    assert await reg.holds("SYS-AUCTION", vintage) == before["SYS-AUCTION"]
    report = (await reg.call("GET", "/api/v1/ledger/audit", reg.a, expect=200)).json()
    assert report["ok"], report["discrepancies"]

    # Every bidder told: results of each auction it bid in, each delivery, the forfeiture; by e-mail in its
    # language, in its inbox and by signed webhook.
    app, _ = receiver
    expected_types = {p1.account_id: ["auction_results"] * 3 + ["auction_delivered"] * 3,
                      p2.account_id: ["auction_results"] * 3 + ["auction_delivered"] * 3,
                      p3.account_id: ["auction_results"] * 2 + ["auction_delivered"] * 2,
                      p4.account_id: ["auction_results"] * 2 + ["auction_delivered", "auction_forfeited"]}
    for party in bidders:
        wanted = sorted(expected_types[party.account_id])
        count = len(wanted)
        mails = await wait_for(lambda party=party, count=count: len(mailbox.to(party.email)) >= count
                               and mailbox.to(party.email), timeout=60, what=f"e-mails to {party.email}")
        assert len(mails) == count and {m["Content-Language"] for m in mails} == {party.language}
        hooks_seen = await wait_for(lambda party=party, count=count: len(app.distinct(hooks[party.account_id]))
                                    >= count and app.distinct(hooks[party.account_id]), timeout=60,
                                    what=f"webhooks for {party.account_id}")
        assert sorted(h["data"]["notification_type"] for h in hooks_seen.values()) == wanted
        assert {h["data"]["account_id"] for h in hooks_seen.values()} == {party.account_id}
        inbox = (await reg.call("GET", "/api/v1/notifications", party.headers, params={"limit": 50},
                                expect=200)).json()
        assert sorted(i["notification_type"] for i in inbox["items"]) == wanted
        assert {m["X-Registry-Event-ID"] for m in mails} == {h["data"]["event_id"] for h in hooks_seen.values()}
    forfeit_mail = [m for m in mailbox.to(p4.email) if m["Subject"].startswith("Adjudicación perdida")]
    assert len(forfeit_mail) == 1
    # The authority's configured recipient hears of each consigned auction and of the forfeiture.
    authority = await wait_for(lambda: len(mailbox.to(AUTHORITY_EMAIL)) >= 4
                               and mailbox.to(AUTHORITY_EMAIL), timeout=60, what="the authority's e-mails")
    subjects = sorted(m["Subject"].split(":")[0] for m in authority)
    assert subjects == ["Adjudicación perdida"] + ["Subasta programada"] * 3, subjects
