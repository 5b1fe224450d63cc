"""The transfer saga through the gateway, every process separate: accept, reject, cancel, an account
requiring the sender's approval, expiry on the programme clock, bad input; then the reconciliation and
the ledger audit are clean."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from registry_common.testing.fixtures import wait_for
from registry_common.testing.registry_client import RegistryClient

pytestmark = [pytest.mark.system, pytest.mark.integration]


@pytest.fixture(scope="module")
async def registry(system, provisioned_services, token_for) -> AsyncIterator[RegistryClient]:
    async with RegistryClient.of(system.gateway_url, provisioned_services,
                                 authority_token=token_for("authority-1", "authority")) as registry:
        yield registry


async def test_accept_moves_the_units_and_a_repeated_accept_answers_the_state(registry: RegistryClient):
    sender, receiver = await registry.party(), await registry.party("intermediary", "intermediary")
    await registry.fund(sender, 100)
    answer = await registry.transfer(sender, receiver, 30)
    assert answer.status_code == 201, answer.text
    transfer_id = answer.json()["id"]
    assert answer.headers["location"] == f"/api/v1/transfers/{transfer_id}"
    await registry.reaches(transfer_id, receiver, "awaiting_acceptance")
    assert (await registry.balance(sender), await registry.balance(receiver)) == (70, 0)  # in the hold

    accepted = await registry.call("POST", f"/api/v1/transfers/{transfer_id}/accept", receiver.headers)
    assert accepted.status_code == 200 and accepted.json()["state"] == "accepted"
    final = await registry.reaches(transfer_id, sender, "completed")
    assert [h["to_state"] for h in final["history"]] == [
        "requested", "awaiting_acceptance", "accepted", "completed"]
    assert (await registry.balance(sender), await registry.balance(receiver)) == (70, 30)
    again = await registry.call("POST", f"/api/v1/transfers/{transfer_id}/accept", receiver.headers)
    assert again.status_code == 200 and again.json()["state"] == "completed"
    refused = await registry.call("POST", f"/api/v1/transfers/{transfer_id}/reject", receiver.headers)
    assert refused.status_code == 409 and refused.json()["code"] == "transfer.not_awaiting_acceptance"


@pytest.mark.parametrize(("action", "by", "reason"), [("reject", "receiver", "rejected"),
                                                     ("cancel", "sender", "cancelled")])
async def test_reject_and_cancel_put_the_units_back(registry: RegistryClient, action, by, reason):
    sender, receiver = await registry.party(), await registry.party("intermediary", "intermediary")
    await registry.fund(sender, 50)
    transfer_id = (await registry.transfer(sender, receiver, 20)).json()["id"]
    await registry.reaches(transfer_id, sender, "awaiting_acceptance")
    actor = receiver if by == "receiver" else sender
    wrong = sender if by == "receiver" else receiver
    assert (await registry.call("POST", f"/api/v1/transfers/{transfer_id}/{action}", wrong.headers)).status_code == 403
    done = await registry.call("POST", f"/api/v1/transfers/{transfer_id}/{action}", actor.headers)
    assert done.status_code == 200 and done.json()["state"] == "reversing"
    final = await registry.reaches(transfer_id, sender, "reversed")
    assert final["reason"] == reason
    assert (await registry.balance(sender), await registry.balance(receiver)) == (50, 0)


async def test_an_account_that_requires_sender_approval_holds_its_transfers_for_it(registry: RegistryClient):
    """Before the clock test below: its 25 hours expire the transfer left awaiting the sender's approval."""
    sender, receiver = await registry.party(), await registry.party("intermediary", "intermediary")
    await registry.fund(sender, 10)
    settings = f"/api/v1/transfers/accounts/{sender.account_id}/settings"
    await registry.call("PUT", settings, registry.admin, {"sender_approval_required": True}, expect=200)
    held = (await registry.transfer(sender, receiver, 4, expect=201)).json()
    assert held["state"] == "awaiting_sender_approval"
    await registry.call("PUT", settings, registry.admin, {"sender_approval_required": False}, expect=200)
    straight = (await registry.transfer(sender, receiver, 3, expect=201)).json()
    await registry.reaches(straight["id"], sender, "awaiting_acceptance")
    await registry.call("POST", f"/api/v1/transfers/{straight['id']}/cancel", sender.headers, expect=200)
    await registry.reaches(straight["id"], sender, "reversed")
    unknown = await registry.call("PUT", "/api/v1/transfers/accounts/NO-SUCH-1/settings", registry.admin,
                                  {"sender_approval_required": True})
    assert (unknown.status_code, unknown.json()["code"]) == (422, "transfer.unknown_account"), unknown.text


async def test_not_accepted_within_the_window_goes_back_by_itself(registry: RegistryClient, system):
    sender, receiver = await registry.party(), await registry.party("intermediary", "intermediary")
    await registry.fund(sender, 10)
    transfer_id = (await registry.transfer(sender, receiver, 10)).json()["id"]
    awaiting = await registry.reaches(transfer_id, sender, "awaiting_acceptance")
    assert awaiting["acceptance_deadline"]
    moved = await registry.http.put(f"{system.api_url('issuance')}/api/v1/programme/clock",
                                    json={"advance_seconds": 25 * 3600}, headers=registry.authority)
    assert moved.status_code == 200, moved.text
    final = await registry.reaches(transfer_id, sender, "reversed")
    assert final["reason"] == "expired"
    assert (await registry.balance(sender), await registry.balance(receiver)) == (10, 0)
    late = await registry.call("POST", f"/api/v1/transfers/{transfer_id}/accept", receiver.headers)
    assert late.status_code == 409


async def test_bad_input_is_refused_with_its_code_and_nothing_moves(registry: RegistryClient):
    sender, receiver = await registry.party(), await registry.party("intermediary", "intermediary")
    stranger = await registry.party()
    closed = await registry.party("intermediary", "intermediary")
    await registry.call("POST", f"/api/v1/accounts/{closed.account_id}/close", registry.admin,
                        {"reason": "holder dissolved"}, expect=200)
    db = registry.transfers_db
    await wait_for(lambda: db.fetchval("SELECT state = 'closed' FROM known_accounts WHERE account_id = $1",
                                       closed.account_id), what="transfers to learn of the closure")
    await registry.fund(sender, 5)
    count_before = await db.fetchval("SELECT count(*) FROM transfers WHERE sender_account_id = $1",
                                     sender.account_id)
    cases = [
        (await registry.transfer(stranger, receiver, 1, sender_account_id=sender.account_id), 403,
         "transfer.not_allowed", "sender_account_id"),
        (await registry.transfer(sender, sender, 1), 422, "transfer.same_account", "receiver_account_id"),
        (await registry.transfer(sender, closed, 1), 422, "transfer.receiver_not_open", "receiver_account_id"),
        (await registry.transfer(sender, receiver, 6), 422, "transfer.insufficient_units", "quantity"),
        (await registry.transfer(sender, receiver, 0), 422, "request.invalid", "quantity"),
        (await registry.transfer(sender, receiver, -3), 422, "request.invalid", "quantity"),
        (await registry.transfer(sender, receiver, 1.5), 422, "request.invalid", "quantity"),
        (await registry.transfer(sender, receiver, 1, unit_type="carbon"), 422, "request.invalid", "unit_type"),
    ]
    for answer, status, code, field in cases:
        problem = answer.json()
        assert (answer.status_code, problem["code"]) == (status, code), answer.text
        assert field in [e["field"] for e in problem.get("errors", [])], problem
    assert await registry.balance(sender) == 5
    assert await db.fetchval("SELECT count(*) FROM transfers WHERE sender_account_id = $1",
                             sender.account_id) == count_before


async def test_a_read_names_the_version_it_has_and_waits_for_the_next(registry: RegistryClient):
    """ETag = the transfer's version; If-None-Match with it answers 304; with ``Prefer: wait=N`` the answer
    comes when the transfer changes (here: accepted while the read waits), or 304 after N seconds."""
    sender, receiver = await registry.party(), await registry.party("intermediary", "intermediary")
    await registry.fund(sender, 10)
    posted = await registry.transfer(sender, receiver, 4, expect=201)
    transfer_id, path = posted.json()["id"], f"/api/v1/transfers/{posted.json()['id']}"
    assert posted.headers["etag"] == '"1"'
    await registry.reaches(transfer_id, receiver, "awaiting_acceptance")
    seen = await registry.call("GET", path, receiver.headers, expect=200)
    tag = seen.headers["etag"]
    same = await registry.call("GET", path, {**receiver.headers, "If-None-Match": tag})
    assert (same.status_code, same.headers["etag"], same.content) == (304, tag, b"")
    assert (await registry.call("GET", path, {**receiver.headers, "If-None-Match": f'W/{tag}, "0"'})).status_code == 304

    started = time.monotonic()
    waiting = asyncio.create_task(registry.call("GET", path, {**receiver.headers, "If-None-Match": tag,
                                                              "Prefer": "wait=5"}))
    accepted = await registry.act(transfer_id, "accept", receiver)
    assert accepted.status_code == 200 and accepted.headers["etag"] != tag
    changed = await waiting
    assert changed.status_code == 200, changed.text
    assert changed.json()["state"] in ("accepted", "completed") and changed.headers["etag"] != tag
    assert changed.headers["preference-applied"] == "wait=5"
    assert time.monotonic() - started < 5, "answered at the change, not when its wait ran out"

    final = await registry.reaches(transfer_id, sender, "completed")
    assert [h["to_state"] for h in final["history"]][-1] == "completed"
    last = (await registry.call("GET", path, sender.headers, expect=200)).headers["etag"]
    unchanged = await registry.call("GET", path, {**sender.headers, "If-None-Match": last, "Prefer": "wait=1"})
    assert (unchanged.status_code, unchanged.headers["etag"]) == (304, last)
    stranger = await registry.party("intermediary", "intermediary")
    hidden = await registry.call("GET", path, {**stranger.headers, "If-None-Match": last, "Prefer": "wait=1"})
    assert hidden.status_code == 404

    # An action can wait too: accept answers once the transfer has moved on (settled: completed).
    second = (await registry.transfer(sender, receiver, 3, expect=201)).json()["id"]
    await registry.reaches(second, receiver, "awaiting_acceptance")
    done = await registry.call("POST", f"/api/v1/transfers/{second}/accept", {**receiver.headers, "Prefer": "wait=5"})
    assert done.status_code == 200, done.text
    assert (done.json()["state"], done.headers["preference-applied"]) == ("completed", "wait=5")
    assert (await registry.balance(sender), await registry.balance(receiver)) == (3, 7)


async def test_reconciliation_and_ledger_audit_are_clean(registry: RegistryClient):
    """Last in this module: once the sagas above are final, every transfer matches its hold."""
    report = await registry.all_final(within=60)
    assert report["ok"], report["problems"]
    audit = await registry.ledger_audit()
    assert audit["ok"], audit["discrepancies"]
