"""The pilot's three periods (2020, 2021, 2022) driven as their users would, on the programme clock.

Each installation gets the same allocation every period; its emissions and what it surrenders follow its
part in the story: the first installation buys (a transfer, the auction, an intermediary) to cover emissions
above its allocation; the second surrenders short every period (non-compliant); the third reports nothing
for 2020 (non-compliant) and is compliant afterwards; the fourth sells; the others emit a little less than
they receive and bank the rest. The demo checks each outcome against this plan and fails if the registry
answered otherwise.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from registry_cli.client import CliError, error_from_response

from registry_demo.client import Actor, DemoFailure, programme_now, wait_for_clock, wait_until
from registry_demo.population import Population
from registry_demo.show import Show

ZONE = ZoneInfo("America/Mexico_City")
PERIODS = ("2020", "2021", "2022")
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
AUCTION_QUANTITY = 6000
PAST = {"accept": "accepted", "reject": "rejected", "cancel": "cancelled"}
# A service that has not heard of a new account or representative yet answers one of these; sent again.
NOT_KNOWN_YET = ("transfer.unknown_account", "transfer.not_sender", "transfer.not_receiver",
                 "transfer.sender_not_active", "transfer.receiver_not_open", "transfer.sender_not_eligible",
                 "transfer.receiver_not_eligible", "compliance.not_representative", "compliance.not_a_verifier",
                 "compliance.not_an_installation", "compliance.account_not_active", "compliance.no_delivery_account",
                 "auction.not_representative", "auction.not_a_bidder_account", "unknown_installation")


def local(year: int, month: int, day: int, hour: int = 9, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=ZONE)


@dataclass
class Plan:
    """Allocation, emissions and surrender of installation ``index`` (0-based) in each period."""

    count: int

    def allocation(self, index: int) -> int:
        return 1000 + 100 * (index % 5)

    def emissions(self, index: int, period: str) -> int | None:
        a = self.allocation(index)
        if index == 0:  # the buyer
            return a + {"2020": 150, "2021": 1500, "2022": 800}[period]
        if index == 2 and period == "2020":  # reports nothing for 2020
            return None
        if index == 3:  # the seller
            return a - 400
        return a - 50 - 10 * (index % 3)

    def surrendered(self, index: int, period: str) -> int:
        emissions = self.emissions(index, period)
        if emissions is None:
            return 0
        return emissions - 120 if index == 1 else emissions

    def expected(self, index: int, period: str) -> tuple[str, str | None]:
        if self.emissions(index, period) is None:
            return "non_compliant", "no_attested_report"
        if index == 1:
            return "non_compliant", "shortfall"
        return "compliant", None

    def cap(self) -> int:
        total = sum(self.allocation(i) for i in range(self.count)) + AUCTION_QUANTITY
        return int(math.ceil(total * 1.1 / 1000) * 1000)


@dataclass
class Programme:
    population: Population
    show: Show
    plan: Plan
    timeout: float = 120.0
    clock_version: int = 0
    transfer_ids: dict[str, str] = field(default_factory=dict)  # outcome → transfer id

    # People -------------------------------------------------------------------------------------------------
    @property
    def a(self) -> Actor:
        return self.population.authority[0]

    @property
    def b(self) -> Actor:
        return self.population.authority[1]

    @property
    def admin(self) -> Actor:
        assert self.population.administrator is not None
        return self.population.administrator

    @property
    def installations(self) -> list[Actor]:
        return self.population.installations

    def name(self, actor: Actor) -> str:
        return self.population.sites.get(actor.account_id, actor.account_id)

    # The programme clock ------------------------------------------------------------------------------------
    def move_clock(self, when: datetime, why: str) -> None:
        """The administrator moves the programme clock forward; waits until every process has heard of it."""
        now = programme_now(self.admin)
        if when <= now:
            raise DemoFailure(f"the programme clock is at {now.isoformat()}, past {when.isoformat()}: "
                              "`make demo` needs a freshly started registry (see README, The demo)")
        try:
            moved = self.admin.call("PUT", "/api/v1/programme/clock",
                                    json={"programme_now": when.astimezone(UTC).isoformat(), "reason": why}).json()
        except CliError:  # no answer, then resent and refused: the first one may have moved it
            if programme_now(self.admin) < when:
                raise
            moved = self.admin.get("/api/v1/programme/clock")
        self.clock_version = int(moved["version"])
        wait_for_clock(self.admin, self.clock_version, self.timeout)
        self.show.step(why, when.astimezone(ZONE).strftime("%d %b %Y %H:%M") + " programme time")

    # Four eyes ----------------------------------------------------------------------------------------------
    def second_pair_of_eyes(self, service: str, request: dict[str, Any], what: str) -> None:
        """The requester may not approve its own request; the other authority user does, confirming the hash."""
        path = f"/api/v1/{service}/approvals/{request['approval_id']}/approve"
        mine = self.a.call("POST", path, json={"payload_hash": request["payload_hash"]}, ok=(403,)).json()
        self.show.check(mine.get("code") == "approval.self_approval", f"{what}: the requester cannot approve it",
                        f"{what}: self-approval answered {mine.get('code')}")
        self.b.call("POST", path, json={"payload_hash": request["payload_hash"]}, ok=(200,))
        self.show.done(f"{what}: approved by {self.b.display_name}")

    # Issuance -----------------------------------------------------------------------------------------------
    def generate_cap(self, period: str) -> None:
        cap = self.plan.cap()
        reserves = {"price_containment": cap // 20, "new_entrants": cap // 50}
        request = self.a.post(f"/api/v1/periods/{period}/cap-generations",
                              {"cap": cap, "reserves": reserves, "reason": f"Tope del periodo {period}"},
                              key=True, ok=(202,))
        self.show.done(f"cap {cap:,} and reserves {reserves} for {period} asked by {self.a.display_name}")
        self.second_pair_of_eyes("issuance", request, f"cap generation {period}")

        def generated() -> dict[str, Any] | None:
            items = self.a.get(f"/api/v1/periods/{period}/cap-generations")["items"]
            return next((g for g in items if g["id"] == request["generation_id"] and g["state"] == "generated"), None)

        wait_until(generated, self.timeout, f"the cap of {period} to be generated")
        vintage = int(period)
        cap_held = self.a.holdings("SYS-CAP").get(("allowance", vintage), 0)
        reserve = self.a.holdings("SYS-RES-PRICE_CONTAINMENT").get(("allowance", vintage), 0)
        self.show.check(cap_held == cap and reserve == reserves["price_containment"],
                        f"SYS-CAP holds {cap_held:,} of vintage {vintage}; the price containment reserve "
                        f"{reserve:,}", f"SYS-CAP holds {cap_held:,} and the reserve {reserve:,} of {vintage}")

    def allocation_table(self, period: str) -> str:
        """The authority fills the allocation table (.xlsx), uploads it, checks the dry run and submits it;
        the other authority user approves; it runs by itself on 1 October."""
        book = Workbook()
        sheet = book.active
        sheet.title = f"Asignación {period}"
        sheet.append(["installation_account_id", "period", "quantity"])
        for index, actor in enumerate(self.installations):
            sheet.append([actor.account_id, period, self.plan.allocation(index)])
        buffer = io.BytesIO()
        book.save(buffer)
        data = buffer.getvalue()
        filename = f"asignacion-{period}.xlsx"
        with self.show.progress() as progress:
            task = progress.add_task(f"uploading {filename}", total=len(data))

            def upload() -> Any:
                answer = self.a.registry.upload("/api/v1/allocation-tables", data, content_type=XLSX,
                                                params={"method": "table", "filename": filename},
                                                progress=lambda sent: progress.advance(task, sent))
                if answer.status_code == 201:
                    return answer.json()
                error = error_from_response(answer)
                codes = {e.get("code") for e in error.problem.get("errors") or []}
                if error.problem.get("code") == "allocation.invalid_table" and codes == {"unknown_installation"}:
                    progress.reset(task)  # issuance has not heard of every installation yet: send it again
                    return None
                raise error

            table = wait_until(upload, self.timeout, "issuance to know every installation")
        total = sum(self.plan.allocation(i) for i in range(len(self.installations)))
        self.show.check(table["total"] == total and table["line_count"] == len(self.installations),
                        f"table {filename} valid: {table['line_count']} lines, {table['total']:,} allowances, "
                        f"SHA-256 {table['sha256'][:16]}…", f"table {filename}: {table}")
        dry = self.a.get(f"/api/v1/allocation-tables/{table['id']}/dry-run")
        self.show.info(f"dry run: {len(dry['lines'])} lines, {dry['total']:,} from {dry.get('source_holds', 0):,} "
                       "in SYS-CAP")
        request = self.a.post(f"/api/v1/allocation-tables/{table['id']}/submit",
                              {"note": f"Asignación gratuita {period}"}, key=True, ok=(202,))
        self.second_pair_of_eyes("issuance", request, f"allocation table {period}")
        state = self.a.get(f"/api/v1/allocation-tables/{table['id']}")["state"]
        self.show.check(state == "approved", "the table waits for the allocation date (1 October)",
                        f"the approved table is {state}")
        return str(table["id"])

    def allocation_runs(self, table_id: str, period: str) -> None:
        """Follows the scheduled run line by line; every installation receives its allocation."""
        with self.show.progress() as progress:
            task = progress.add_task(f"allocation {period}", total=len(self.installations))

            def finished() -> dict[str, Any] | None:
                table = self.a.get(f"/api/v1/allocation-tables/{table_id}")
                dry = self.a.get(f"/api/v1/allocation-tables/{table_id}/dry-run")
                done = sum(1 for line in dry["lines"] if line.get("state") in ("delivered", "refused"))
                progress.update(task, completed=done, description=f"allocation {period}: {table['state']}")
                return table if table["state"] in ("completed", "completed_with_refusals") else None

            table = wait_until(finished, self.timeout, f"the allocation of {period} to run")
        self.show.check(table["state"] == "completed" and table.get("run_trigger") == "schedule",
                        f"allocation {period} ran by itself on the programme clock ({table['state']})",
                        f"allocation {period}: {table['state']}, trigger {table.get('run_trigger')}")
        held = [a.holdings().get(("allowance", int(period)), 0) for a in self.installations]
        wrong = [(self.name(a), units, self.plan.allocation(i)) for i, (a, units) in
                 enumerate(zip(self.installations, held, strict=True)) if units < self.plan.allocation(i)]
        self.show.check(not wrong, f"{len(self.installations)} installations hold their {period} allocation",
                        f"allocation {period} missing: {wrong}")

    # Transfers ----------------------------------------------------------------------------------------------
    def request_transfer(self, sender: Actor, receiver: Actor, quantity: int) -> dict[str, Any]:
        created = sender.post("/api/v1/transfers", {
            "sender_account_id": sender.account_id, "receiver_account_id": receiver.account_id,
            "unit_type": "allowance", "quantity": quantity}, key=True, ok=(201,), retry=NOT_KNOWN_YET,
            within=self.timeout)
        return self.transfer_reaches(created["id"], sender, {"awaiting_acceptance"})

    def transfer_reaches(self, transfer_id: str, who: Actor, states: set[str]) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            row = who.get(f"/api/v1/transfers/{transfer_id}")
            if row["state"] in {"failed"} - states:
                raise DemoFailure(f"transfer {transfer_id} failed: {row.get('failure_code')}")
            return row if row["state"] in states else None

        return wait_until(check, self.timeout, f"transfer {transfer_id} to be {' or '.join(sorted(states))}")

    def transfers(self) -> None:
        buyer, short, quiet, seller = self.installations[:4]
        broker, other_broker = self.population.intermediaries
        cases = [("accepted", seller, buyer, 200, buyer, "accept"),
                 ("rejected", short, other_broker, 100, other_broker, "reject"),
                 ("cancelled", quiet, seller, 50, quiet, "cancel")]
        for outcome, sender, receiver, quantity, actor, action in cases:
            transfer = self.request_transfer(sender, receiver, quantity)
            actor.post(f"/api/v1/transfers/{transfer['id']}/{action}", {}, ok=(200,), retry=NOT_KNOWN_YET)
            final = self.transfer_reaches(transfer["id"], sender, {"completed", "reversed"})
            wanted = ("completed", None) if outcome == "accepted" else ("reversed", outcome)
            self.transfer_ids[outcome] = transfer["id"]
            self.show.check((final["state"], final.get("reason")) == wanted,
                            f"transfer of {quantity} from {self.name(sender)} to {self.name(receiver)}: "
                            f"{PAST[action]} by {actor.display_name} → {final['state']}"
                            + (f" ({final['reason']})" if final.get("reason") else ""),
                            f"transfer {outcome}: {final['state']} {final.get('reason')}")
        expiring = self.request_transfer(seller, broker, 75)
        self.transfer_ids["expired"] = expiring["id"]
        self.show.done(f"transfer of 75 from {self.name(seller)} to {self.name(broker)} awaits acceptance until "
                       f"{expiring['acceptance_deadline']}; nobody answers")

    def transfer_expires(self) -> None:
        seller = self.installations[3]
        final = self.transfer_reaches(self.transfer_ids["expired"], seller, {"completed", "reversed"})
        self.show.check((final["state"], final.get("reason")) == ("reversed", "expired"),
                        "the unanswered transfer expired; its 75 units went back to the seller",
                        f"the unanswered transfer is {final['state']} ({final.get('reason')})")

    def broker_sells(self) -> None:
        broker, buyer = self.population.intermediaries[0], self.installations[0]
        transfer = self.request_transfer(broker, buyer, 1000)
        buyer.post(f"/api/v1/transfers/{transfer['id']}/accept", {}, ok=(200,), retry=NOT_KNOWN_YET)
        final = self.transfer_reaches(transfer["id"], broker, {"completed", "reversed"})
        self.transfer_ids["accepted_from_auction"] = transfer["id"]
        self.show.check(final["state"] == "completed",
                        f"{self.name(broker)} sells 1,000 auctioned allowances to {self.name(buyer)}: completed",
                        f"the intermediary's transfer is {final['state']}")

    # The auction --------------------------------------------------------------------------------------------
    def auction(self) -> None:
        """Second period: the authority schedules an auction from the cap (four eyes), bidders apply and are
        qualified by the administrator, bid sealed; after the close the authority clears, another authority
        user approves the results, payments are confirmed and the ledger delivers."""
        now = programme_now(self.admin)
        terms = {"vintage": 2021, "quantity": AUCTION_QUANTITY, "currency": "MXN", "reserve_price": "15.00",
                 "price_step": "0.10", "purchase_limit_share": "0.5", "unsold": "price_containment",
                 "bidding_opens_at": now.isoformat(), "bidding_closes_at": (now + timedelta(hours=3)).isoformat(),
                 "payment_deadline": (now + timedelta(days=7)).isoformat()}
        request = self.a.post("/api/v1/auctions", terms, key=True, ok=(202,))
        self.show.done(f"auction of {AUCTION_QUANTITY:,} allowances of 2021 from SYS-CAP scheduled, reserve price "
                       "MXN 15.00, bidding for three hours")
        self.second_pair_of_eyes("auctions", request, "auction consignment")
        auction_id = request["auction_id"]
        self.auction_reaches(auction_id, "scheduled")
        broker, other_broker = self.population.intermediaries
        buyer = self.installations[0]
        for bidder in (broker, other_broker, buyer):
            bidder.post(f"/api/v1/auctions/{auction_id}/applications", {"account_id": bidder.account_id},
                        ok=(201,), retry=NOT_KNOWN_YET, within=self.timeout)
            self.admin.post(f"/api/v1/auctions/{auction_id}/applications/{bidder.account_id}/qualify",
                            {"guarantee_reference": f"Carta de crédito {bidder.account_id}"}, ok=(200,))
        self.show.done("three bidders applied and were qualified by the administrator (guarantees on file)")
        bids = [(broker, "17.50", 2000), (broker, "16.90", 1000), (buyer, "17.20", 2000), (other_broker, "17.10", 3000)]
        for bidder, price, quantity in bids:
            bidder.post(f"/api/v1/auctions/{auction_id}/bids",
                        {"account_id": bidder.account_id, "price": price, "quantity": quantity}, key=True, ok=(201,))
        self.show.table("sealed bids", ["bidder", "price (MXN)", "quantity"],
                        [(self.name(b), p, q) for b, p, q in bids])
        self.move_clock(datetime.fromisoformat(terms["bidding_closes_at"]) + timedelta(minutes=5),
                        "Bidding closed: clearing the auction")
        cleared = self.a.post(f"/api/v1/auctions/{auction_id}/clear", {}, key=True, ok=(200,))
        self.show.check((cleared["clearing_price"], cleared["sold"]) == ("17.10", AUCTION_QUANTITY),
                        f"cleared at MXN {cleared['clearing_price']}: {cleared['sold']:,} sold, "
                        f"{cleared['unsold']:,} unsold", f"auction cleared as {cleared}")
        self.second_pair_of_eyes("auctions", cleared, "auction results")
        awards = self.a.get(f"/api/v1/auctions/{auction_id}/results")["awards"]
        for award in awards:
            self.admin.post(f"/api/v1/auctions/{auction_id}/awards/{award['account_id']}/payment",
                            {"reference": f"SPEI {award['account_id']}"}, key=True, ok=(202,))
        settled = self.auction_reaches(auction_id, "settled")
        awards = self.a.get(f"/api/v1/auctions/{auction_id}/results")["awards"]
        self.show.table("awards", ["bidder", "awarded", "amount due (MXN)", "state"],
                        [(self.population.sites.get(w["account_id"], w["account_id"]), w["awarded"],
                          w.get("amount_due"), w["state"]) for w in awards])
        got = {w["account_id"]: (w["awarded"], w["state"]) for w in awards}
        wanted = {broker.account_id: (2000, "delivered"), buyer.account_id: (2000, "delivered"),
                  other_broker.account_id: (2000, "delivered")}
        self.show.check(got == wanted and settled["state"] == "settled",
                        "payments confirmed; the ledger delivered every award; the auction is settled",
                        f"auction awards {got}")
        public = self.a.call("GET", f"/api/v1/public/auctions/{auction_id}", ok=(200,), public=True).json()
        self.show.info(f"public summary: clearing price {public.get('clearing_price')}, volume "
                       f"{public.get('volume_sold')}, bid-to-cover {public.get('bid_to_cover')}")

    def auction_reaches(self, auction_id: str, state: str) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            shown = self.a.get(f"/api/v1/auctions/{auction_id}")
            return shown if shown["state"] == state else None

        return wait_until(check, self.timeout, f"auction {auction_id} to be {state}")

    # Compliance ---------------------------------------------------------------------------------------------
    def reports(self, period: str) -> None:
        """September of the following year: each installation reports its emissions to its verifier, who
        attests them (one figure is returned first and corrected)."""
        submitted: list[tuple[Actor, Actor, dict[str, Any]]] = []
        for index, actor in enumerate(self.installations):
            emissions = self.plan.emissions(index, period)
            if emissions is None:
                self.show.info(f"{self.name(actor)} does not report for {period}")
                continue
            verifier = self.population.verifiers[index % 2]
            typo = index == 3 and period == "2020"
            body = {"installation_account_id": actor.account_id, "period": period,
                    "emissions": emissions * 10 if typo else emissions,
                    "rene_reference": f"RENE-{period}-{index + 1:04d}", "verifier_account_id": verifier.account_id}
            report = actor.post("/api/v1/emission-reports", body, ok=(201,), retry=NOT_KNOWN_YET, within=self.timeout)
            if typo:
                verifier.post(f"/api/v1/emission-reports/{report['id']}/attestation",
                              {"decision": "return", "comments": "La cifra no coincide con el RENE"}, ok=(200,))
                self.show.info(f"{verifier.display_name} returned {self.name(actor)}'s figure "
                               f"({emissions * 10:,} t); corrected to {emissions:,} t")
                report = actor.post("/api/v1/emission-reports", {**body, "emissions": emissions}, ok=(201,))
            submitted.append((actor, verifier, report))
        for _actor, verifier, report in submitted:
            attested = verifier.post(f"/api/v1/emission-reports/{report['id']}/attestation", {"decision": "attest"},
                                     ok=(200,), retry=NOT_KNOWN_YET)
            if attested["state"] != "attested":
                self.show.problem(f"report {report['id']} is {attested['state']}")
        total = sum(self.plan.emissions(i, period) or 0 for i in range(len(self.installations)))
        self.show.done(f"{len(submitted)} emission reports for {period} ({total:,} tCO2e) attested by "
                       f"{len(self.population.verifiers)} verifiers")

    def surrenders(self, period: str) -> None:
        with self.show.progress() as progress:
            task = progress.add_task(f"surrender for {period}", total=len(self.installations))
            for index, actor in enumerate(self.installations):
                quantity = self.plan.surrendered(index, period)
                if quantity:
                    asked = actor.post("/api/v1/surrenders", {"central_account_id": actor.account_id,
                                                              "unit_type": "allowance", "quantity": quantity},
                                       key=True, ok=(202,), retry=NOT_KNOWN_YET, within=self.timeout)

                    def decided(asked: dict[str, Any] = asked, actor: Actor = actor) -> dict[str, Any] | None:
                        row = actor.get(f"/api/v1/surrenders/{asked['id']}")
                        return row if row["state"] != "requested" else None

                    row = wait_until(decided, self.timeout, f"surrender {asked['id']}")
                    if row["state"] != "completed" or row.get("period") != period:
                        self.show.problem(f"{self.name(actor)}: surrender {row['state']} {row.get('code')} "
                                          f"for {row.get('period')}")
                progress.advance(task)
        units = sum(self.plan.surrendered(i, period) for i in range(len(self.installations)))
        self.show.done(f"{units:,} allowances surrendered for {period} into the installations' delivery accounts "
                       "before 1 November")

    def evaluation(self, period: str) -> None:
        """The surrender deadline has passed: compliance evaluates the period by itself and cancels what was
        surrendered."""
        path = f"/api/v1/compliance/periods/{period}/evaluations"

        def completed() -> dict[str, Any] | None:
            answer = self.a.call("GET", path, ok=(200, 404))
            body = answer.json()
            return body if answer.status_code == 200 and body.get("state") == "completed" else None

        evaluation = wait_until(completed, self.timeout, f"the evaluation of {period}")
        self.show.check(evaluation.get("trigger") == "deadline",
                        f"evaluation of {period} ran by itself at the deadline",
                        f"evaluation of {period} was triggered by {evaluation.get('trigger')}")
        enforcement = self.population.enforcement or self.a
        report = enforcement.get(f"/api/v1/compliance/periods/{period}/report")
        lines = {line["installation_account_id"]: line for line in report["installations"]}
        rows, wrong = [], []
        for index, actor in enumerate(self.installations):
            line = lines.get(actor.account_id)
            if line is None:
                wrong.append(f"{self.name(actor)} missing from the report")
                continue
            cancelled = sum(s["quantity"] for s in line["cancelled_serials"])
            rows.append((self.name(actor), line["status"], line.get("reason"), line["obligation"],
                         line["counted_allowances"], line["shortfall"], cancelled))
            if (line["status"], line.get("reason")) != self.plan.expected(index, period):
                wrong.append(f"{self.name(actor)}: {line['status']} ({line.get('reason')}), expected "
                             f"{self.plan.expected(index, period)}")
            if not line["cancellation_complete"] or line["ledger_refusals"]:
                wrong.append(f"{self.name(actor)}: cancellation incomplete {line['ledger_refusals']}")
        self.show.table(f"compliance {period} (as the enforcement office reads it)",
                        ["installation", "status", "reason", "obligation", "counted", "shortfall", "cancelled"], rows)
        summary = report["summary"]
        self.show.check(not wrong, f"{summary['compliant']} compliant, {summary['non_compliant']} non-compliant; "
                        f"{summary['cancelled_units']:,} surrendered allowances cancelled automatically",
                        "; ".join(wrong))

    def banked(self, period: str) -> None:
        """What the installations keep of the evaluated period's vintage (and older) for later periods."""
        vintage = int(period)
        banked = sum(q for a in self.installations for (t, v), q in a.holdings().items()
                     if t == "allowance" and v <= vintage)
        self.show.done(f"{banked:,} allowances of vintage {vintage} or older stay banked in the installations' "
                       "accounts for later periods")

    # Cancellation previews (banking limit, end of the programme) -----------------------------------------
    def cancellation(self, kind: str, period: str, what: str) -> None:
        """A published preview (every account's units to cancel, with their serial blocks) → the notice
        period → the execution asked by one authority user and approved by the other → the ledger cancels."""
        path = "/api/v1/compliance/cancellation-previews"
        answer = self.a.call("POST", path, json={"kind": kind, "period": period}, key=True,
                             ok=(200, 201, 404, 405, 409, 501))
        body = answer.json() if answer.content else {}
        if answer.status_code == 409 and body.get("code") == "compliance.nothing_to_cancel":
            self.show.done(f"{what}: nothing to cancel for {period} ({body.get('detail') or body.get('title')})")
            return
        if answer.status_code not in (200, 201):
            self.show.unavailable(f"{what} ({kind}, {period}): the registry answered {answer.status_code} "
                                  f"{body.get('code') or ''}".rstrip())
            return
        preview = body
        accounts = len({b.get("account_id") for b in preview.get("blocks") or [] if isinstance(b, dict)})
        self.show.done(f"{what}: preview published for {period}: {preview_units(preview):,} units in "
                       f"{accounts} accounts, executable from {preview.get('executable_from')}")
        early = self.a.call("POST", f"{path}/{preview['id']}/execute", json={}, key=True, ok=(202, 409))
        if early.status_code == 202:
            self.show.problem(f"{what}: execution accepted before the notice had passed")
            return
        self.show.info(f"execution refused during the notice: {early.json().get('code')}")
        notice = notice_end(preview) or programme_now(self.admin) + timedelta(days=31)
        self.move_clock(max(notice, programme_now(self.admin)) + timedelta(hours=1),
                        f"{what}: the notice period has passed")
        request = self.a.post(f"{path}/{preview['id']}/execute", {}, key=True, ok=(202,))
        self.second_pair_of_eyes("compliance", request, what)

        def executed() -> dict[str, Any] | None:
            shown = self.a.get(f"{path}/{preview['id']}")
            return shown if shown.get("state") == "completed" else None

        final = wait_until(executed, self.timeout, f"the {kind} cancellation to complete")
        refusals = final.get("refusals") or []
        self.show.check(not refusals and final.get("cancelled") == preview_units(preview),
                        f"{what}: {final.get('cancelled', 0):,} units cancelled into SYS-CANCEL",
                        f"{what}: {final.get('cancelled')} of {preview_units(preview)} cancelled, refusals {refusals}")

    def publish(self, period: str) -> None:
        """The authority publishes the period's summary; anyone reads it without signing in."""
        answer = self.a.call("POST", f"/api/v1/compliance/periods/{period}/publication", json={},
                             ok=(200, 201, 404, 405))
        if answer.status_code not in (200, 201):
            self.show.unavailable(f"publication of {period}: the registry answered {answer.status_code}")
            return
        public = self.a.call("GET", f"/api/v1/public/compliance/periods/{period}", ok=(200,), public=True).json()
        lines = public.get("installations") or []
        self.show.done(f"summary of {period} published: {len(lines)} installations, readable without signing in "
                       f"at /api/v1/public/compliance/periods/{period}")


def preview_units(preview: dict[str, Any]) -> int:
    for key in ("total", "units", "quantity", "total_units", "cancelled_units"):
        if isinstance(preview.get(key), int):
            return int(preview[key])
    lines = preview.get("lines") or preview.get("items") or []
    return sum(int(line.get("quantity", 0)) for line in lines if isinstance(line, dict))


def notice_end(*documents: dict[str, Any]) -> datetime | None:
    """The end of the notice period as the preview or the execution request states it (a field whose name
    speaks of notice or of when it may be executed), if either does."""
    for document in documents:
        for key, value in document.items():
            if isinstance(value, str) and any(w in key for w in ("notice", "executable", "effective", "not_before")):
                try:
                    return datetime.fromisoformat(value)
                except ValueError:
                    continue
    return None


def run(programme: Programme, on_step: Callable[[str], None] | None = None) -> None:
    """The pilot from the start of 2020 to the end of the programme."""
    p, show = programme, programme.show
    step = on_step or (lambda _name: None)

    step("period 2020")
    opening = max(local(2020, 1, 6), programme_now(p.admin).astimezone(ZONE) + timedelta(hours=1))
    p.move_clock(opening, "Period 2020 opens: the authority generates the cap")
    p.generate_cap("2020")
    p.move_clock(local(2020, 9, 14), "Allocation table 2020")
    table_2020 = p.allocation_table("2020")
    p.move_clock(local(2020, 10, 1, 8), "1 October 2020: the free allocation runs")
    p.allocation_runs(table_2020, "2020")
    p.move_clock(local(2020, 10, 5), "Trading: transfers accepted, rejected, cancelled, left unanswered")
    p.transfers()
    p.move_clock(local(2020, 10, 6, 10), "A day later: the unanswered transfer expires")
    p.transfer_expires()

    step("period 2021")
    p.move_clock(local(2021, 1, 11), "Period 2021 opens: cap and reserves")
    p.generate_cap("2021")
    p.move_clock(local(2021, 2, 10, 10), "Auction of 2021 allowances (second period)")
    p.auction()
    p.move_clock(local(2021, 9, 6), "September 2021: emissions of 2020 reported and attested")
    p.reports("2020")
    table_2021 = p.allocation_table("2021")
    p.move_clock(local(2021, 10, 1, 8), "1 October 2021: the free allocation runs")
    p.allocation_runs(table_2021, "2021")
    p.move_clock(local(2021, 10, 15), "Surrender for 2020 (by 1 November)")
    p.surrenders("2020")
    p.move_clock(local(2021, 11, 2), "2 November 2021: the deadline has passed; 2020 is evaluated")
    p.evaluation("2020")
    p.publish("2020")
    p.banked("2020")

    step("period 2022")
    p.move_clock(local(2022, 1, 10), "Period 2022 opens: cap and reserves")
    p.generate_cap("2022")
    p.move_clock(local(2022, 9, 5), "September 2022: emissions of 2021; an intermediary sells")
    p.reports("2021")
    p.broker_sells()
    table_2022 = p.allocation_table("2022")
    p.move_clock(local(2022, 10, 1, 8), "1 October 2022: the free allocation runs")
    p.allocation_runs(table_2022, "2022")
    p.move_clock(local(2022, 10, 14), "Surrender for 2021 (by 1 November)")
    p.surrenders("2021")
    p.move_clock(local(2022, 11, 2), "2 November 2022: the deadline has passed; 2021 is evaluated")
    p.evaluation("2021")
    p.publish("2021")
    p.banked("2021")
    p.cancellation("banking_excess", "2021", "Banking: allowances above the banking limit")

    step("end of the programme")
    p.move_clock(local(2023, 9, 4), "September 2023: emissions of 2022 reported and attested")
    p.reports("2022")
    p.move_clock(local(2023, 10, 13), "Surrender for 2022, the final period (by 1 November)")
    p.surrenders("2022")
    p.move_clock(local(2023, 11, 2), "2 November 2023: the final period is evaluated")
    p.evaluation("2022")
    p.publish("2022")
    p.cancellation("programme_end", "2022", "End of the programme: what is left is cancelled")
    del show
