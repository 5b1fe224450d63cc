"""Compliance, part one, with every process separate and a registry of this module's own (the pilot's
programme and a programme clock that nobody else moves): a whole period 2020 with installations that are
compliant, short, over-delivered, with too many offsets, with a future vintage and without a report;
reporting and attestation in the window, surrender until 1 November, the automatic evaluation when the
clock passes the deadline, the report (JSON, CSV, PDF), automatic cancellation with its serials, what went
back, the events for installation and authority (SMTP and webhooks), re-running, a correction as an
adjustment, bad input refused with nothing changed, and a clean ledger audit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from registry_common.launcher import supervisorctl
from registry_common.testing.compliance import ComplianceWorld, compliance_world, local
from registry_common.testing.fixtures import wait_for
from registry_common.testing.webhook_receiver import Receiver, https_receiver

pytestmark = [pytest.mark.system, pytest.mark.integration]
AUTHORITY_EMAIL = "cumplimiento@semarnat.example.mx"


@pytest.fixture(scope="module")
def hooks(webhook_ca, tmp_path_factory) -> Iterator[tuple[Receiver, str]]:
    with https_receiver(webhook_ca[0], tmp_path_factory.mktemp("compliance-hooks")) as running:
        yield running


@pytest.fixture(scope="module")
async def world(registry_env, tmp_path_factory, mailbox, webhook_ca, token_for) -> AsyncIterator[ComplianceWorld]:
    env = {"REGISTRY_SMTP_HOST": mailbox.host, "REGISTRY_SMTP_PORT": str(mailbox.port),
           "REGISTRY_WEBHOOK_CA_FILE": str(webhook_ca[1]), "REGISTRY_DELIVERY_POLL_SECONDS": "0.2",
           "REGISTRY_AUTHORITY_EMAILS": AUTHORITY_EMAIL, "REGISTRY_EVALUATE_INTERVAL_SECONDS": "0.2",
           "REGISTRY_AUTO_EVALUATE": "true"}
    async with compliance_world(registry_env, tmp_path_factory.mktemp("compliance-system"), "k", env,
                                token_for) as world:
        yield world


CASES = {
    # name: (emissions or None, [(unit_type, vintage, surrendered)])
    "compliant": (1000, [("allowance", 2020, 1000)]),
    "short": (1000, [("allowance", 2020, 600)]),
    "over": (500, [("allowance", 2020, 800)]),
    "offsets": (1000, [("allowance", 2020, 900), ("offset", 2020, 100)]),
    "future": (300, [("allowance", 2021, 300)]),
    "unreported": (None, [("allowance", 2020, 100)]),
}


async def test_1_parties_units_and_surrender_before_the_window(world: ComplianceWorld) -> None:
    registry = world.registry
    for name, (_, lots) in CASES.items():
        party = await registry.party("installation", "installation")
        account = (await world.call("GET", f"/api/v1/accounts/{party.account_id}", registry.authority,
                                    expect=200)).json()
        world.installations[name], world.delivery[name] = party, account["paired_account_id"]
        await world.knows(party.account_id)
        for unit_type, vintage, quantity in lots:
            await world.issue(party, unit_type, vintage, quantity)
    world.verifier = await registry.party("verifier", "verifier")
    world.other_verifier = await registry.party("verifier", "verifier")
    for verifier in (world.verifier, world.other_verifier):
        await world.knows(verifier.account_id)
    # One webhook endpoint per installation (the notification test below counts what each receives).

    for name, (_, lots) in CASES.items():
        party = world.installations[name]
        for unit_type, vintage, quantity in lots:
            answer = await world.surrender(party, unit_type, quantity, vintage)
            assert answer.status_code == 202, answer.text
            assert answer.headers["Location"] == f"/api/v1/surrenders/{answer.json()['id']}"
            done = await world.surrendered(answer.json()["id"], party)
            assert done["state"] == "completed" and done["period"] == "2020", done
        assert await world.holdings(party.account_id) == 0
        assert await world.holdings(world.delivery[name]) == sum(q for _, _, q in lots)


async def test_2_bad_surrenders_are_refused_and_nothing_moves(world: ComplianceWorld) -> None:
    compliant, short = world.installations["compliant"], world.installations["short"]
    before = await world.holdings(world.delivery["short"])
    # From an account that is not yours.
    stranger = await world.call("POST", "/api/v1/surrenders", compliant.headers, {
        "central_account_id": short.account_id, "unit_type": "allowance", "quantity": 1}, key=True)
    assert stranger.status_code == 403 and stranger.json()["code"] == "compliance.not_representative"
    assert stranger.json()["field"] == "central_account_id"
    # Zero or negative quantities, a missing Idempotency-Key.
    for quantity in (0, -5):
        bad = await world.surrender(short, "allowance", quantity)
        assert bad.status_code == 422, bad.text
    no_key = await world.call("POST", "/api/v1/surrenders", short.headers, {
        "central_account_id": short.account_id, "unit_type": "allowance", "quantity": 1})
    assert no_key.status_code == 422
    # More than it holds: accepted for the ledger, refused there with its code.
    refused = await world.surrender(short, "allowance", 10)
    assert refused.status_code == 202
    decided = await world.surrendered(refused.json()["id"], short)
    assert decided["state"] == "refused" and decided["code"] == "ledger.insufficient_units"
    # A later period while 2020 is still open.
    later = await world.surrender(short, "allowance", 1, period="2021")
    assert later.status_code == 409 and later.json()["code"] == "compliance.surrender_period_not_open"
    assert await world.holdings(world.delivery["short"]) == before


async def test_3_reporting_only_in_the_window_and_only_attested_figures_count(world: ComplianceWorld) -> None:
    verifier = world.verifier
    assert verifier is not None and world.other_verifier is not None
    compliant = world.installations["compliant"]
    body = {"installation_account_id": compliant.account_id, "period": "2020", "emissions": 1000,
            "rene_reference": "RENE-2020-0001", "verifier_account_id": verifier.account_id}
    early = await world.call("POST", "/api/v1/emission-reports", compliant.headers, body)
    assert early.status_code == 409 and early.json()["code"] == "compliance.reporting_not_open"

    await world.move_clock(local(2021, 9, 10, 12))  # September 2021: the window of period 2020
    negative = await world.call("POST", "/api/v1/emission-reports", compliant.headers, {**body, "emissions": -1})
    assert negative.status_code == 422 and negative.json()["code"] == "compliance.invalid_emissions"
    assert negative.json().get("field") == "emissions"
    not_mine = await world.call("POST", "/api/v1/emission-reports", world.installations["short"].headers, body)
    assert not_mine.status_code == 403
    assert await world.compliance_db.fetchval("SELECT count(*) FROM emission_reports") == 0

    for name, (emissions, _) in CASES.items():
        if emissions is None:
            continue
        party = world.installations[name]
        first = emissions if name != "short" else 10  # "short" first enters a wrong figure
        answer = await world.call("POST", "/api/v1/emission-reports", party.headers, {
            **body, "installation_account_id": party.account_id, "emissions": first,
            "rene_reference": f"RENE-2020-{name}"}, expect=201)
        world.reports[name] = answer.json()
    # The verifier sees only what it is asked to verify; another verifier sees none of it.
    mine = (await world.call("GET", "/api/v1/emission-reports", verifier.headers, expect=200)).json()["items"]
    assert {r["id"] for r in mine} == {r["id"] for r in world.reports.values()}
    theirs = (await world.call("GET", "/api/v1/emission-reports", world.other_verifier.headers,
                               expect=200)).json()["items"]
    assert theirs == []
    wrong = await world.call("POST", f"/api/v1/emission-reports/{world.reports['compliant']['id']}/attestation",
                             world.other_verifier.headers, {"decision": "attest"})
    assert wrong.status_code == 403 and wrong.json()["code"] == "compliance.not_assigned_verifier"
    assert (await world.call("GET", f"/api/v1/emission-reports/{world.reports['compliant']['id']}",
                             world.registry.authority, expect=200)).json()["state"] == "submitted"

    returned = await world.call("POST", f"/api/v1/emission-reports/{world.reports['short']['id']}/attestation",
                                verifier.headers, {"decision": "return", "comments": "La cifra no coincide con RENE"},
                                expect=200)
    assert returned.json()["state"] == "returned"
    short = world.installations["short"]
    world.reports["short"] = (await world.call("POST", "/api/v1/emission-reports", short.headers, {
        **body, "installation_account_id": short.account_id, "emissions": 1000,
        "rene_reference": "RENE-2020-short"}, expect=201)).json()
    assert world.reports["short"]["version"] == 2
    for name, report in world.reports.items():
        attested = await world.call("POST", f"/api/v1/emission-reports/{report['id']}/attestation",
                                    verifier.headers, {"decision": "attest"}, expect=200)
        assert attested.json()["state"] == "attested", name
    twice = await world.call("POST", f"/api/v1/emission-reports/{world.reports['over']['id']}/attestation",
                             verifier.headers, {"decision": "attest"})
    assert twice.status_code == 409 and twice.json()["code"] == "compliance.report_not_submitted"
    versions = (await world.call("GET", "/api/v1/emission-reports", short.headers,
                                 params={"installation_account_id": short.account_id}, expect=200)).json()["items"]
    assert [(v["version"], v["state"], v["emissions"]) for v in versions] == [(2, "attested", 1000),
                                                                              (1, "returned", 10)]


async def test_4_not_due_before_the_deadline_then_evaluated_by_the_clock(world: ComplianceWorld, hooks) -> None:
    app, base = hooks
    for name, party in world.installations.items():
        answer = await world.call("POST", "/api/v1/webhook-subscriptions", party.headers,
                                  {"account_id": party.account_id, "url": f"{base}/hook/{name}"}, expect=201)
        with app.lock:
            app.secrets[name], app.modes[name] = answer.json()["secret"], "ok"

    early = await world.call("POST", "/api/v1/compliance/periods/2020/evaluations", world.registry.authority)
    assert early.status_code == 409 and early.json()["code"] == "compliance.period_not_due"
    not_yet = await world.call("GET", "/api/v1/compliance/periods/2020/evaluations", world.registry.authority)
    assert not_yet.status_code == 404

    # A surrender made before the deadline whose answer has not come back holds the evaluation: the ledger's
    # worker is stopped, the surrender waits in the broker, and the pending evaluation says what it waits for.
    await world.issue(world.installations["over"], "allowance", 2020, 1)
    await world.move_clock(local(2021, 11, 1, 23))
    await asyncio.to_thread(supervisorctl, world.plan, "stop", "accounts-worker")
    try:
        waiting = await world.surrender(world.installations["over"], "allowance", 1)
        assert waiting.status_code == 202, waiting.text
        await world.move_clock(local(2021, 11, 2, 9), except_services=["accounts"])  # the deadline has passed

        async def held_back() -> dict[str, Any] | None:
            answer = await world.call("GET", "/api/v1/compliance/periods/2020/evaluations", world.registry.authority)
            return answer.json() if answer.status_code == 200 else None

        pending = await wait_for(held_back, timeout=30, what="the evaluation of 2020 to be created")
        assert pending["state"] == "pending", pending
        assert pending["waiting_for"] == {"unanswered_surrenders": [waiting.json()["id"]], "evaluations_first": []}
    finally:
        await asyncio.to_thread(supervisorctl, world.plan, "start", "accounts-worker")

    async def completed() -> dict[str, Any] | None:
        answer = await world.call("GET", "/api/v1/compliance/periods/2020/evaluations", world.registry.authority)
        return answer.json() if answer.status_code == 200 and answer.json()["state"] == "completed" else None

    evaluation = await wait_for(completed, timeout=60, what="the evaluation of 2020 to complete")
    assert evaluation["trigger"] == "deadline"

    report = (await world.call("GET", "/api/v1/compliance/periods/2020/report", world.registry.authority,
                               expect=200)).json()
    lines = {line["installation_account_id"]: line for line in report["installations"]}
    by_name = {name: lines[party.account_id] for name, party in world.installations.items()}
    expected = {  # status, reason, obligation, allowances counted, offsets counted, shortfall, returned
        "compliant": ("compliant", None, 1000, 1000, 0, 0, 0),
        "short": ("non_compliant", "shortfall", 1000, 600, 0, 400, 0),
        "over": ("compliant", None, 500, 500, 0, 0, 301),  # 800 surrendered, then the one held back
        "offsets": ("non_compliant", "shortfall", 1000, 900, 80, 20, 20),
        "future": ("non_compliant", "shortfall", 300, 0, 0, 300, 300),
        "unreported": ("non_compliant", "no_attested_report", 0, 0, 0, 0, 100),
    }
    for name, (status, reason, obligation, allowances, offsets, shortfall, back) in expected.items():
        line = by_name[name]
        got = (line["status"], line["reason"], line["obligation"], line["counted_allowances"],
               line["counted_offsets"], line["shortfall"], sum(r["quantity"] for r in line["returned"]))
        assert got == (status, reason, obligation, allowances, offsets, shortfall, back), (name, line)
        cancelled = sum(s["quantity"] for s in line["cancelled_serials"])
        assert cancelled == allowances + offsets, name
        assert line["cancellation_complete"] and not line["ledger_refusals"], name
        assert await world.holdings(world.delivery[name]) == 0, name
        assert await world.holdings(world.installations[name].account_id) == back, name
    assert by_name["offsets"]["offsets_over_limit"] == 20
    assert by_name["future"]["future_vintage"] == 300 and by_name["over"]["over_delivered"] == 301
    # The serials cancelled are the installation's own, lowest first, and now sit in the cancellation account.
    serial = by_name["compliant"]["cancelled_serials"][0]
    history = (await world.call("GET", f"/api/v1/units/{serial['start']}", world.registry.authority,
                                expect=200)).json()
    assert history["location"]["account_id"] == "SYS-CANCEL"
    assert [h["kind"] for h in history["history"]][-2:] == ["surrender", "compliance_cancellation"]
    total_cancelled = sum(a + o for _, _, _, a, o, _, _ in expected.values())
    assert report["summary"]["cancelled_units"] == total_cancelled
    assert await world.holdings("SYS-CANCEL") == total_cancelled
    assert report["summary"]["compliant"] == 2 and report["summary"]["non_compliant"] == 4

    # Nobody surrenders or reports for 2020 any more.
    late = await world.surrender(world.installations["short"], "allowance", 1, period="2020")
    assert late.status_code == 409 and late.json()["code"] == "compliance.surrender_deadline_passed"
    closed = await world.call("POST", "/api/v1/emission-reports", world.installations["unreported"].headers, {
        "installation_account_id": world.installations["unreported"].account_id, "period": "2020",
        "emissions": 5, "rene_reference": "RENE-late", "verifier_account_id": world.verifier.account_id})
    assert closed.status_code == 409 and closed.json()["code"] == "compliance.reporting_closed"


async def test_5_documents_rerun_and_a_correction_as_an_adjustment(world: ComplianceWorld) -> None:
    authority = world.registry.authority
    csv_answer = await world.call("GET", "/api/v1/compliance/periods/2020/report", authority,
                                  params={"format": "csv"}, expect=200)
    assert csv_answer.headers["content-type"].startswith("text/csv")
    assert "Estado" in csv_answer.text.splitlines()[0] and csv_answer.text.count("\n") >= 7
    pdf = await world.call("GET", "/api/v1/compliance/periods/2020/report", {**authority, "Accept-Language": "en"},
                           params={"format": "pdf"}, expect=200)
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF")
    own = world.installations["over"]
    mine = await world.call("GET", f"/api/v1/compliance/periods/2020/installations/{own.account_id}", own.headers,
                            expect=200)
    assert mine.json()["installation"]["status"] == "compliant"
    other = await world.call("GET", f"/api/v1/compliance/periods/2020/installations/{own.account_id}",
                             world.installations["short"].headers)
    assert other.status_code == 404
    assert (await world.call("GET", "/api/v1/compliance/periods/2020/report", own.headers)).status_code == 403

    cancelled_before = await world.holdings("SYS-CANCEL")
    again = await world.call("POST", "/api/v1/compliance/periods/2020/evaluations", authority, expect=200)
    assert again.json()["state"] == "completed"
    assert await world.holdings("SYS-CANCEL") == cancelled_before

    short = world.installations["short"]
    correction = {"installation_account_id": short.account_id, "period": "2020", "emissions": 600,
                  "rene_reference": "RENE-2020-short-c", "reason": "Corrección del RENE tras auditoría"}
    by_participant = await world.call("POST", "/api/v1/emission-reports/corrections", short.headers, correction)
    assert by_participant.status_code == 403
    fixed = await world.call("POST", "/api/v1/emission-reports/corrections", authority, correction, expect=201)
    assert fixed.json()["state"] == "attested" and fixed.json()["version"] == 3
    line = (await world.call("GET", f"/api/v1/compliance/periods/2020/installations/{short.account_id}", authority,
                             expect=200)).json()["installation"]
    assert (line["status"], line["shortfall"], line["obligation"]) == ("compliant", 0, 600)
    assert line["adjustments"][0]["previous"]["status"] == "non_compliant"
    assert await world.holdings("SYS-CANCEL") == cancelled_before  # nothing more moves, nothing comes back
    audit = await world.registry.ledger_audit()
    assert audit["ok"], audit["discrepancies"]


async def test_6_installation_and_authority_told_by_email_and_webhook(world: ComplianceWorld, mailbox, hooks) -> None:
    app, _ = hooks
    names = list(CASES)

    def mails(address: str, subject_part: str) -> list[Any]:
        return [m for m in mailbox.received() if m["To"] == address and subject_part in str(m["Subject"])]

    async def everything_arrived() -> bool:
        for name in names:
            party = world.installations[name]
            email = (await world.call("GET", f"/api/v1/users/{party.user_id}", world.registry.admin)).json()["email"]
            evaluated = {wid for wid, p in app.distinct(name).items() if p["type"].startswith(
                "compliance.compliance_evaluated")}
            if not mails(email, "2020") or not evaluated:
                return False
            if CASES[name][0] is not None and name not in ("future",):
                cancelled = {wid for wid, p in app.distinct(name).items()
                             if p["type"].startswith("compliance.surrendered_units_cancelled")}
                if not cancelled:
                    return False
        authority = mails(AUTHORITY_EMAIL, "2020")
        return len(authority) >= len(names) + 4  # every result, and every cancellation

    await wait_for(everything_arrived, timeout=60, what="e-mails and webhooks for every installation and authority")
    for name in names:
        evaluated = [p for p in app.distinct(name).values() if p["type"].startswith("compliance.compliance_evaluated")]
        assert len({p["data"]["status"] for p in evaluated}) >= 1
        assert evaluated[0]["data"]["installation_account_id"] == world.installations[name].account_id
    authority_subjects = [str(m["Subject"]) for m in mailbox.received() if m["To"] == AUTHORITY_EMAIL]
    assert any("no cumple" in s for s in authority_subjects) and any(": cumple" in s for s in authority_subjects)
    assert any("canceladas" in s.lower() for s in authority_subjects)
