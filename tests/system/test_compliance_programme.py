"""Compliance, part two, with every process separate and a registry of this module's own: the pilot's three
periods run through with the programme clock. The live status and the projection agree with the evaluation
that follows; the public summary shows nothing before publication and exactly the evaluated figures after;
a banking share below 100 % cancels the excess after a published preview, the notice and a second person;
units kept are banked and count in the next period; the end-of-programme preview lists exactly what the
cancellation then moves; the ledger audit stays clean throughout."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from registry_common.testing.compliance import ComplianceWorld, compliance_world, local
from registry_common.testing.fixtures import wait_for
from registry_common.testing.registry_client import Party
from registry_common.testing.webhook_receiver import Receiver, https_receiver

pytestmark = [pytest.mark.system, pytest.mark.integration]
NOTICE_DAYS = 14
AUTHORITY_EMAIL = "fin-de-programa@semarnat.example.mx"


@pytest.fixture(scope="module")
def hooks(webhook_ca, tmp_path_factory) -> Iterator[tuple[Receiver, str]]:
    with https_receiver(webhook_ca[0], tmp_path_factory.mktemp("programme-hooks")) as running:
        yield running


@pytest.fixture(scope="module")
async def world(registry_env, tmp_path_factory, token_for, mailbox, webhook_ca) -> AsyncIterator[ComplianceWorld]:
    env = {"REGISTRY_EVALUATE_INTERVAL_SECONDS": "0.2", "REGISTRY_AUTO_EVALUATE": "true",
           "REGISTRY_BANKING_SHARE": "0.5", "REGISTRY_CANCELLATION_NOTICE_SECONDS": str(NOTICE_DAYS * 86400),
           "REGISTRY_SMTP_HOST": mailbox.host, "REGISTRY_SMTP_PORT": str(mailbox.port),
           "REGISTRY_WEBHOOK_CA_FILE": str(webhook_ca[1]), "REGISTRY_DELIVERY_POLL_SECONDS": "0.2",
           "REGISTRY_AUTHORITY_EMAILS": AUTHORITY_EMAIL}
    async with compliance_world(registry_env, tmp_path_factory.mktemp("programme-system"), "p", env,
                                token_for) as world:
        yield world


async def evaluated(world: ComplianceWorld, period: str) -> dict[str, Any]:
    async def completed() -> dict[str, Any] | None:
        answer = await world.call("GET", f"/api/v1/compliance/periods/{period}/evaluations", world.registry.authority)
        return answer.json() if answer.status_code == 200 and answer.json()["state"] == "completed" else None

    return await wait_for(completed, timeout=60, what=f"the evaluation of {period}")


async def status(world: ComplianceWorld, party: Party) -> dict[str, Any]:
    return (await world.call("GET", f"/api/v1/compliance/installations/{party.account_id}/status", party.headers,
                             expect=200)).json()


async def report_and_attest(world: ComplianceWorld, party: Party, period: str, emissions: int) -> None:
    assert world.verifier is not None
    report = (await world.call("POST", "/api/v1/emission-reports", party.headers, {
        "installation_account_id": party.account_id, "period": period, "emissions": emissions,
        "rene_reference": f"RENE-{period}-{party.account_id}", "verifier_account_id": world.verifier.account_id},
        expect=201)).json()
    await world.call("POST", f"/api/v1/emission-reports/{report['id']}/attestation", world.verifier.headers,
                     {"decision": "attest"}, expect=200)


async def cancel_with_preview(world: ComplianceWorld, kind: str, period: str, second: dict[str, str]
                              ) -> dict[str, Any]:
    """Publish the preview, show that it cannot run before the notice nor without a second person, run it;
    returns the completed preview."""
    authority = world.registry.authority
    preview = (await world.call("POST", "/api/v1/compliance/cancellation-previews", authority,
                                {"kind": kind, "period": period}, key=True, expect=201)).json()
    early = await world.call("POST", f"/api/v1/compliance/cancellation-previews/{preview['id']}/execute", authority,
                             key=True)
    assert early.status_code == 409 and early.json()["code"] == "compliance.notice_not_passed"
    now = (await world.call("GET", "/api/v1/programme/clock", authority, expect=200)).json()["programme_now"]
    await world.move_clock((datetime.fromisoformat(now) + timedelta(days=NOTICE_DAYS, hours=1)).isoformat())
    asked = (await world.call("POST", f"/api/v1/compliance/cancellation-previews/{preview['id']}/execute",
                              authority, key=True, expect=202)).json()
    decision = {"payload_hash": asked["payload_hash"]}
    alone = await world.call("POST", f"/api/v1/compliance/approvals/{asked['approval_id']}/approve", authority,
                             decision)
    assert alone.status_code == 403 and alone.json()["code"] == "approval.self_approval"
    unchanged = (await world.call("GET", f"/api/v1/compliance/cancellation-previews/{preview['id']}", authority,
                                  expect=200)).json()
    assert unchanged["state"] == "approval_requested" and unchanged["cancelled"] == 0
    await world.call("POST", f"/api/v1/compliance/approvals/{asked['approval_id']}/approve", second, decision,
                     expect=200)

    async def done() -> dict[str, Any] | None:
        row = (await world.call("GET", f"/api/v1/compliance/cancellation-previews/{preview['id']}", authority,
                                expect=200)).json()
        return row if row["state"] == "completed" else None

    finished = await wait_for(done, timeout=60, what=f"the {kind} cancellation")
    assert finished["refusals"] == [] and finished["cancelled"] == preview["total"]
    return finished


async def blocks_in(world: ComplianceWorld, account_id: str) -> list[tuple[str, int, int, int]]:
    answer = await world.call("GET", f"/api/v1/accounts/{account_id}/holdings", world.registry.authority, expect=200)
    return sorted((line["unit_type"], line["vintage"], b["start"], b["end"])
                  for line in answer.json()["by_type_and_vintage"] for b in line["blocks"])


async def test_three_periods_banking_status_projection_summary_and_the_end_of_the_programme(
        world: ComplianceWorld, token_for, mailbox, hooks) -> None:
    registry, authority = world.registry, world.registry.authority
    second = {"Authorization": f"Bearer {token_for('authority-2', 'authority')}"}
    a = await registry.party("installation", "installation")
    b = await registry.party("installation", "installation")
    trader = await registry.party("intermediary", "intermediary")
    world.verifier = await registry.party("verifier", "verifier")
    for party in (a, b, trader, world.verifier):
        await world.knows(party.account_id)
    app, base = hooks
    names = {a.account_id: "a", b.account_id: "b", trader.account_id: "trader"}
    for party in (a, b, trader):
        answer = await world.call("POST", "/api/v1/webhook-subscriptions", party.headers,
                                  {"account_id": party.account_id, "url": f"{base}/hook/p-{names[party.account_id]}"},
                                  expect=201)
        with app.lock:
            app.secrets[f"p-{names[party.account_id]}"] = answer.json()["secret"]
    await world.issue(a, "allowance", 2020, 1000)
    await world.issue(a, "allowance", 2021, 700)
    await world.issue(b, "allowance", 2020, 300)
    sold = (await registry.transfer(a, trader, 200, vintage=2021)).json()  # a trader buys 200 from A
    await registry.reaches(sold["id"], trader, "awaiting_acceptance")
    await registry.act(sold["id"], "accept", trader)
    await registry.reaches(sold["id"], trader, "completed")
    assert (await status(world, a))["status"] == "no_verified_emissions"

    # Period 2020: reported in September 2021, surrendered, evaluated at the deadline.
    await world.move_clock(local(2021, 9, 10, 12))
    await report_and_attest(world, a, "2020", 400)
    await report_and_attest(world, b, "2020", 300)
    current = await status(world, a)
    assert (current["period"], current["status"], current["to_surrender"]) == ("2020", "must_surrender", 400)
    projected = (await world.call("GET", f"/api/v1/compliance/installations/{b.account_id}/projection",
                                  b.headers, expect=200)).json()
    assert current["intermediate"] is None and projected["intermediate"] is None  # annual: no intermediate year
    assert projected["if_everything_eligible_is_surrendered"]["status"] == "compliant"
    assert projected["if_nothing_more_is_surrendered"]["shortfall"] == 300
    for party, quantity in ((a, 400), (b, 200)):
        answer = await world.surrender(party, "allowance", quantity, 2020)
        assert (await world.surrendered(answer.json()["id"], party))["state"] == "completed"
    assert (await status(world, a))["status"] == "covered"
    live_b = await status(world, b)
    assert (live_b["status"], live_b["to_surrender"]) == ("must_surrender", 100)
    projected_b = (await world.call("GET", f"/api/v1/compliance/installations/{b.account_id}/projection",
                                    b.headers, expect=200)).json()
    assert projected_b["if_nothing_more_is_surrendered"]["shortfall"] == 100
    assert projected_b["if_everything_eligible_is_surrendered"]["shortfall"] == 0  # 100 more in its central account

    public = await world.call("GET", "/api/v1/public/compliance/periods/2020", {})
    assert public.status_code == 404
    await world.move_clock(local(2021, 11, 2, 9))
    await evaluated(world, "2020")
    report = (await world.call("GET", "/api/v1/compliance/periods/2020/report", authority, expect=200)).json()
    lines = {line["installation_account_id"]: line for line in report["installations"]}
    assert (lines[a.account_id]["status"], lines[a.account_id]["shortfall"]) == ("compliant", 0)
    assert (lines[b.account_id]["status"], lines[b.account_id]["shortfall"]) == ("non_compliant",
                                                                                 live_b["to_surrender"])
    assert lines[b.account_id]["shortfall"] == projected_b["if_nothing_more_is_surrendered"]["shortfall"]

    # The public summary: nothing before publication, exactly the evaluated figures after.
    assert (await world.call("GET", "/api/v1/public/compliance/periods/2020", {})).status_code == 404
    by_participant = await world.call("POST", "/api/v1/compliance/periods/2020/publication", a.headers)
    assert by_participant.status_code == 403
    await world.call("POST", "/api/v1/compliance/periods/2020/publication", authority, expect=201)
    summary = (await world.call("GET", "/api/v1/public/compliance/periods/2020", {}, expect=200)).json()
    shown = {line["installation_account_id"]: line for line in summary["installations"]}
    for party in (a, b):
        line, result = shown[party.account_id], lines[party.account_id]
        assert (line["verified_emissions"], line["surrendered"], line["status"]) == (
            result["emissions"], result["counted_allowances"] + result["counted_offsets"], result["status"])
    csv_text = (await world.call("GET", "/api/v1/public/compliance/periods/2020", {}, params={"format": "csv"},
                                 expect=200)).text
    assert csv_text.splitlines()[0].startswith("installation_account_id") and a.account_id in csv_text

    # Banking at 50 %: the excess of each account, oldest vintage first, after a preview and four eyes.
    before = {p.account_id: await blocks_in(world, p.account_id) for p in (a, b, trader)}
    finished = await cancel_with_preview(world, "banking_excess", "2020", second)
    previewed = {(x["account_id"], x["unit_type"], x["vintage"], x["start"], x["end"]) for x in finished["blocks"]}
    totals = {p.account_id: sum(e - s + 1 for _, _, s, e in before[p.account_id]) for p in (a, b, trader)}
    for party in (a, b, trader):
        after = await world.holdings(party.account_id)
        assert after == totals[party.account_id] // 2, party.account_id  # floor(50 %) kept
    assert {x[0] for x in previewed} == {a.account_id, b.account_id, trader.account_id}
    assert await world.holdings(a.account_id) == 550  # 50 of 2020 and 500 of 2021 banked
    assert (await registry.ledger_audit())["ok"]

    # Period 2021: the banked units count; B reports nothing.
    await world.move_clock(local(2022, 9, 10, 12))
    await report_and_attest(world, a, "2021", 550)
    answer = await world.surrender(a, "allowance", 550)
    assert (await world.surrendered(answer.json()["id"], a))["state"] == "completed"
    assert (await status(world, a))["status"] == "covered"
    await world.move_clock(local(2022, 11, 2, 9))
    await evaluated(world, "2021")
    report = (await world.call("GET", f"/api/v1/compliance/periods/2021/installations/{a.account_id}", a.headers,
                               expect=200)).json()["installation"]
    assert (report["status"], report["counted_allowances"]) == ("compliant", 550)
    assert {c["vintage"] for c in report["counted"]} == {2020, 2021}  # the banked 2020 units counted first

    # Period 2022, the last: evaluated at its deadline; then the end of the programme.
    await world.move_clock(local(2023, 11, 2, 9))
    await evaluated(world, "2022")
    # From the final deadline the programme's units no longer transfer.
    late = await registry.transfer(trader, a, 10)
    assert late.status_code == 409 and late.json()["code"] == "transfer.programme_ended", late.text
    remaining = {p.account_id: await blocks_in(world, p.account_id) for p in (a, b, trader)}
    finished = await cancel_with_preview(world, "programme_end", "2022", second)
    previewed = sorted((x["account_id"], x["unit_type"], x["vintage"], x["start"], x["end"])
                       for x in finished["blocks"])
    held_before = sorted((account, *block) for account, blocks in remaining.items() for block in blocks)
    assert previewed == held_before  # exactly what the participants held
    for party in (a, b, trader):
        assert await world.holdings(party.account_id) == 0
    again = await world.call("POST", "/api/v1/compliance/cancellation-previews", authority,
                             {"kind": "programme_end", "period": "2022"}, key=True)
    assert again.status_code == 409 and again.json()["code"] == "compliance.nothing_to_cancel"
    audit = await registry.ledger_audit()
    assert audit["ok"], audit["discrepancies"]

    # Holders and the authority were told at each preview and each cancellation, by e-mail and webhook;
    # the installation of its status changes.
    kinds = ("compliance.banking_excess_previewed", "compliance.banking_excess_cancelled",
             "compliance.programme_end_previewed", "compliance.programme_units_cancelled")

    def hooked(name: str) -> set[str]:
        return {p["type"].rsplit(".", 1)[0] for p in app.distinct(f"p-{name}").values()}

    async def everyone_told() -> bool:
        emails = {account: (await world.call("GET", f"/api/v1/users/{party.user_id}", registry.admin)).json()["email"]
                  for account, party in ((a.account_id, a), (b.account_id, b), (trader.account_id, trader))}
        for account, email in emails.items():
            subjects = [str(m["Subject"]) for m in mailbox.received() if m["To"] == email]
            banking = [s for s in subjects if "acumulación" in s or "banking" in s]
            if len(banking) < 2:
                return False
            if account != a.account_id and len([s for s in subjects if "programa" in s or "programme" in s]) < 2:
                return False
        if not set(kinds[:2]) <= hooked("trader") or not set(kinds) <= hooked("b"):
            return False
        if "compliance.installation_status_changed" not in hooked("a"):
            return False
        authority = [str(m["Subject"]) for m in mailbox.received() if m["To"] == AUTHORITY_EMAIL]
        return len(authority) >= 3 + 3 + 2 + 2  # banking preview and done for 3 accounts, end for 2

    await wait_for(everyone_told, timeout=60, what="holders and the authority told by e-mail and webhook")
