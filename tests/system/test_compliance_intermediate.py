"""California's intermediate-year surrender, with every process separate and a registry of this module's own:
a programme of one multi-year period, 2021-2022, and ``REGISTRY_INTERMEDIATE_SHARE=0.30``. Reports per year
(the 2021 one in September 2022, the 2022 one in the period's window), a bad year refused with nothing
stored; at 1 November 2022 the programme clock evaluates 2021 by itself: 30 % of the year's attested
emissions counted and cancelled into SYS-CANCEL (the serials in the unit's history), the rest returned, no
borrowing (until then the live status and the projection show what that deadline asks); re-running moves
nothing; the shortfall of 2021 is owed at the period's end, whose evaluation
counts all its years' emissions net of what 2021 already counted; and the ledger audit is clean."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from registry_common.testing.compliance import ComplianceWorld, compliance_world, local
from registry_common.testing.fixtures import wait_for
from registry_common.testing.registry_client import Party

pytestmark = [pytest.mark.system, pytest.mark.integration]
PERIOD = "2021-2022"
PROGRAMME = ('[{"code": "2021-2022", "vintage": 2021, "starts_on": "2021-01-01", "ends_on": "2022-12-31", '
             '"allocation_on": "2021-10-01", "reporting_opens_on": "2023-09-01", "reporting_closes_on": "2023-09-30", '
             '"surrender_deadline_on": "2023-11-01", "final": true}]')
EVALUATIONS = f"/api/v1/compliance/periods/{PERIOD}/evaluations"

# name: (emissions 2021, emissions 2022, [(vintage, surrendered before 1 November 2022)],
#        [(vintage, surrendered for the period's end)])
CASES: dict[str, tuple[int | None, int, list[tuple[int, int]], list[tuple[int, int]]]] = {
    "full": (1000, 800, [(2021, 400)], [(2022, 1500)]),  # 300 counted, 100 back; then 1800 - 300
    "short": (1000, 500, [(2021, 100)], [(2021, 1400)]),  # 100 of 300: 200 short, owed at the end
    "borrower": (100, 100, [(2022, 50)], [(2022, 220)]),  # vintage 2022 cannot count for 2021: all back
    "unreported": (None, 200, [(2021, 60)], [(2021, 200)]),  # no 2021 report: nothing counted, all back
}


@pytest.fixture(scope="module")
async def world(registry_env, tmp_path_factory, token_for) -> AsyncIterator[ComplianceWorld]:
    env = {"REGISTRY_PROGRAMME": PROGRAMME, "REGISTRY_INTERMEDIATE_SHARE": "0.30",
           "REGISTRY_EVALUATE_INTERVAL_SECONDS": "0.2", "REGISTRY_AUTO_EVALUATE": "true"}
    async with compliance_world(registry_env, tmp_path_factory.mktemp("intermediate-system"), "ki", env,
                                token_for) as world:
        yield world


async def completed(world: ComplianceWorld, year: int | None = None) -> dict[str, Any]:
    params = {"year": year} if year else {}

    async def done() -> dict[str, Any] | None:
        answer = await world.call("GET", EVALUATIONS, world.registry.authority, params=params)
        return answer.json() if answer.status_code == 200 and answer.json()["state"] == "completed" else None

    return await wait_for(done, timeout=60, what=f"the evaluation of {PERIOD} {year or ''}")


async def lines(world: ComplianceWorld, year: int | None = None) -> dict[str, dict[str, Any]]:
    report = (await world.call("GET", f"/api/v1/compliance/periods/{PERIOD}/report", world.registry.authority,
                               params={"year": year} if year else {}, expect=200)).json()
    by_account = {line["installation_account_id"]: line for line in report["installations"]}
    return {name: by_account[party.account_id] for name, party in world.installations.items()}


async def surrender_all(world: ComplianceWorld, name: str, lots: list[tuple[int, int]]) -> None:
    party = world.installations[name]
    for vintage, quantity in lots:
        answer = await world.surrender(party, "allowance", quantity, vintage)
        assert answer.status_code == 202, answer.text
        done = await world.surrendered(answer.json()["id"], party)
        assert done["state"] == "completed" and done["period"] == PERIOD, done


async def report(world: ComplianceWorld, party: Party, emissions: int, **year: int) -> dict[str, Any]:
    assert world.verifier is not None
    made = (await world.call("POST", "/api/v1/emission-reports", party.headers, {
        "installation_account_id": party.account_id, "period": PERIOD, "emissions": emissions,
        "rene_reference": f"RENE-{party.account_id}-{year}", "verifier_account_id": world.verifier.account_id,
        **year}, expect=201)).json()
    attested = await world.call("POST", f"/api/v1/emission-reports/{made['id']}/attestation", world.verifier.headers,
                                {"decision": "attest"}, expect=200)
    return attested.json()


async def intermediate(world: ComplianceWorld, name: str) -> tuple[Any, Any]:
    """The ``intermediate`` figures of an installation's live status and projection, through the gateway."""
    party = world.installations[name]
    base = f"/api/v1/compliance/installations/{party.account_id}"
    live = (await world.call("GET", f"{base}/status", party.headers, expect=200)).json()
    projected = (await world.call("GET", f"{base}/projection", party.headers, expect=200)).json()
    assert live["period"] == projected["period"] == PERIOD
    return live["intermediate"], projected["intermediate"]


async def events(world: ComplianceWorld, kind: str) -> list[dict[str, Any]]:
    rows = await world.compliance_db.fetch(
        "SELECT envelope->'payload' AS p FROM outbox WHERE envelope->>'type' = $1 ORDER BY id", kind)
    return [json.loads(r["p"]) for r in rows]


async def test_1_parties_units_and_surrender_during_the_first_year(world: ComplianceWorld) -> None:
    registry = world.registry
    await wait_for(lambda: world.compliance_db.fetchval("SELECT count(*) FROM known_periods WHERE period = $1",
                                                        PERIOD), timeout=30, what="compliance to know the period")
    for name, (_, _, first, later) in CASES.items():
        party = await registry.party("installation", "installation")
        account = (await world.call("GET", f"/api/v1/accounts/{party.account_id}", registry.authority,
                                    expect=200)).json()
        world.installations[name], world.delivery[name] = party, account["paired_account_id"]
        await world.knows(party.account_id)
        for vintage in sorted({v for v, _ in first + later}):
            await world.issue(party, "allowance", vintage, sum(q for v, q in first + later if v == vintage))
    world.verifier = await registry.party("verifier", "verifier")
    await world.knows(world.verifier.account_id)
    await world.move_clock(local(2022, 3, 1, 12))
    for name, (_, _, first, _) in CASES.items():
        await surrender_all(world, name, first)
        assert await world.holdings(world.delivery[name]) == sum(q for _, q in first)


async def test_2_reports_per_year_and_a_bad_year_refused_with_nothing_stored(world: ComplianceWorld) -> None:
    full = world.installations["full"]
    assert world.verifier is not None
    body = {"installation_account_id": full.account_id, "period": PERIOD, "emissions": 1000,
            "rene_reference": "RENE-bad", "verifier_account_id": world.verifier.account_id}
    early = await world.call("POST", "/api/v1/emission-reports", full.headers, {**body, "year": 2021})
    assert early.status_code == 422 and early.json()["code"] == "compliance.year_not_open", early.text
    assert early.json()["field"] == "year"

    await world.move_clock(local(2022, 9, 10, 12))  # September 2022: the window of year 2021
    for year, code in ((2020, "compliance.year_outside_period"), (2023, "compliance.year_outside_period"),
                       (2022, "compliance.year_not_open")):
        bad = await world.call("POST", "/api/v1/emission-reports", full.headers, {**body, "year": year})
        assert bad.status_code == 422 and bad.json()["code"] == code, bad.text
        assert bad.json()["field"] == "year"
    assert await world.compliance_db.fetchval("SELECT count(*) FROM emission_reports") == 0

    for name, (emissions, _, _, _) in CASES.items():
        if emissions is None:
            continue
        named = {"year": 2021} if name != "short" else {}  # without a year: the year whose window is open
        attested = await report(world, world.installations[name], emissions, **named)
        assert (attested["year"], attested["version"], attested["state"]) == (2021, 1, "attested"), name
    # The year's own deadline has not passed: not due yet; the last year is not intermediate.
    early = await world.call("POST", EVALUATIONS, world.registry.authority, params={"year": 2021})
    assert early.status_code == 409 and early.json()["code"] == "compliance.intermediate_not_due", early.text
    last = await world.call("POST", EVALUATIONS, world.registry.authority, params={"year": 2022})
    assert last.status_code == 422 and last.json()["code"] == "compliance.not_intermediate_year"
    assert last.json()["field"] == "year"
    missing = await world.call("GET", EVALUATIONS, world.registry.authority, params={"year": 2021})
    assert missing.status_code == 404

    # Before 1 November the live status and the projection show what 2021's deadline asks, with what each
    # delivery account holds: ceil(30 % of 2021), vintages up to 2021 (nothing for an unreported year).
    due = {  # emissions, obligation, delivered_eligible, shortfall
        "full": (1000, 300, 300, 0), "short": (1000, 300, 100, 200), "borrower": (100, 30, 0, 30),
        "unreported": (None, 0, 0, 0)}
    for name, want in due.items():
        live, projected = await intermediate(world, name)
        assert live == projected, (name, live, projected)
        assert live["year"] == 2021, (name, live)
        assert datetime.fromisoformat(live["deadline"]) == datetime.fromisoformat(local(2022, 11, 1, 23, 59, 59))
        assert (live["emissions"], live["obligation"], live["delivered_eligible"], live["shortfall"]) == want, name


async def test_3_the_clock_evaluates_the_intermediate_year_at_1_november(world: ComplianceWorld) -> None:
    await world.move_clock(local(2022, 11, 2, 9))  # 1 November 2022 23:59:59 has passed
    evaluation = await completed(world, 2021)
    assert (evaluation["intermediate_year"], evaluation["trigger"]) == (2021, "deadline")
    assert evaluation["rules"]["intermediate_share"] == "0.30"
    for name in CASES:  # 2021 was the period's only intermediate year: nothing intermediate is to come
        assert await intermediate(world, name) == (None, None), name
    got = await lines(world, 2021)
    expected = {  # status, reason, emissions, obligation, counted, shortfall, returned
        "full": ("compliant", None, 1000, 300, 300, 0, 100),
        "short": ("non_compliant", "shortfall", 1000, 300, 100, 200, 0),
        "borrower": ("non_compliant", "shortfall", 100, 30, 0, 30, 50),
        "unreported": ("non_compliant", "no_attested_report", None, 0, 0, 0, 60),
    }
    for name, want in expected.items():
        line = got[name]
        assert (line["status"], line["reason"], line["emissions"], line["obligation"],
                line["counted_allowances"] + line["counted_offsets"], line["shortfall"],
                sum(r["quantity"] for r in line["returned"])) == want, (name, line)
        assert line["cancellation_complete"] and not line["ledger_refusals"], name
        assert sum(s["quantity"] for s in line["cancelled_serials"]) == want[4], name
        assert await world.holdings(world.delivery[name]) == 0, name
        still_held = sum(q for _, q in CASES[name][3])  # issued for the period's end, not yet surrendered
        assert await world.holdings(world.installations[name].account_id) == still_held + want[6], name
    assert got["borrower"]["future_vintage"] == 50
    assert await world.holdings("SYS-CANCEL") == 400
    serial = got["full"]["cancelled_serials"][0]
    history = (await world.call("GET", f"/api/v1/units/{serial['start']}", world.registry.authority,
                                expect=200)).json()
    assert history["location"]["account_id"] == "SYS-CANCEL"
    assert [h["kind"] for h in history["history"]][-2:] == ["surrender", "compliance_cancellation"]

    # The events say it is the intermediate year's; and it is not the period's evaluation.
    async def told() -> list[dict[str, Any]] | None:
        found = await events(world, "compliance.compliance_evaluated")
        return found if len(found) == len(CASES) else None

    evaluated = await wait_for(told, timeout=30, what="the intermediate results to be told")
    assert {e["intermediate_year"] for e in evaluated} == {2021} and {e["period"] for e in evaluated} == {PERIOD}
    cancelled = await events(world, "compliance.surrendered_units_cancelled")
    assert sorted((e["installation_account_id"], e["cancelled_quantity"], e["intermediate_year"])
                  for e in cancelled) == sorted([(world.installations["full"].account_id, 300, 2021),
                                                 (world.installations["short"].account_id, 100, 2021)])
    assert (await world.call("GET", EVALUATIONS, world.registry.authority)).status_code == 404

    # Re-running answers the same evaluation and moves nothing.
    again = await world.call("POST", EVALUATIONS, world.registry.authority, params={"year": 2021}, expect=200)
    assert again.json()["id"] == evaluation["id"]
    assert again.headers["Location"] == f"{EVALUATIONS}?year=2021"
    assert await world.holdings("SYS-CANCEL") == 400

    # After its window only the authority corrects a year: an adjustment of that year's result, nothing moves.
    full = world.installations["full"]
    correction = {"installation_account_id": full.account_id, "period": PERIOD, "year": 2021, "emissions": 900,
                  "rene_reference": "RENE-2021-full-c", "reason": "Corrección del RENE tras auditoría"}
    too_early = await world.call("POST", "/api/v1/emission-reports/corrections", world.registry.authority,
                                 {**correction, "year": 2022})
    assert too_early.status_code == 409 and too_early.json()["code"] == "compliance.year_reporting_open"
    assert too_early.json()["field"] == "year"
    fixed = await world.call("POST", "/api/v1/emission-reports/corrections", world.registry.authority, correction,
                             expect=201)
    assert (fixed.json()["year"], fixed.json()["version"], fixed.json()["state"]) == (2021, 2, "attested")
    line = (await world.call("GET", f"/api/v1/compliance/periods/{PERIOD}/installations/{full.account_id}",
                             full.headers, params={"year": 2021}, expect=200)).json()["installation"]
    assert (line["obligation"], line["counted_allowances"], line["status"]) == (270, 300, "compliant")
    assert line["adjustments"][0]["previous"]["obligation"] == 300
    assert await world.holdings("SYS-CANCEL") == 400


async def test_4_the_final_evaluation_counts_all_years_net_of_what_2021_counted(world: ComplianceWorld) -> None:
    for name, (_, _, _, later) in CASES.items():
        await surrender_all(world, name, later)
    await world.move_clock(local(2023, 9, 12, 12))  # the period's own window: year 2022
    for name, (_, emissions, _, _) in CASES.items():
        named = {"year": 2022} if name == "full" else {}
        assert (await report(world, world.installations[name], emissions, **named))["year"] == 2022
    await world.move_clock(local(2023, 11, 2, 9))
    evaluation = await completed(world)
    assert evaluation["intermediate_year"] is None and evaluation["trigger"] == "deadline"
    got = await lines(world)
    expected = {  # status, reason, emissions (all years), credited, obligation, counted, shortfall, returned
        "full": ("compliant", None, 1700, 300, 1400, 1400, 0, 100),  # 2021 corrected to 900
        "short": ("compliant", None, 1500, 100, 1400, 1400, 0, 0),  # 2021's 200 short are owed now
        "borrower": ("compliant", None, 200, 0, 200, 200, 0, 20),  # 2022 vintages count at the period's end
        "unreported": ("non_compliant", "no_attested_report", 200, 0, 200, 200, 0, 0),
    }
    for name, want in expected.items():
        line = got[name]
        assert (line["status"], line["reason"], line["emissions"], line["credited"], line["obligation"],
                line["counted_allowances"] + line["counted_offsets"], line["shortfall"],
                sum(r["quantity"] for r in line["returned"])) == want, (name, line)
        assert line["cancellation_complete"] and not line["ledger_refusals"], name
        assert await world.holdings(world.delivery[name]) == 0, name
    assert await world.holdings("SYS-CANCEL") == 400 + sum(w[5] for w in expected.values())

    # Re-running either moves nothing; the ledger agrees with itself.
    cancelled = await world.holdings("SYS-CANCEL")
    again = await world.call("POST", EVALUATIONS, world.registry.authority, expect=200)
    assert again.json()["id"] == evaluation["id"]
    await world.call("POST", EVALUATIONS, world.registry.authority, params={"year": 2021}, expect=200)
    assert await world.holdings("SYS-CANCEL") == cancelled
    audit = await world.registry.ledger_audit()
    assert audit["ok"], audit["discrepancies"]
