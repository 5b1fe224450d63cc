"""registry_common.approvals: the pure four-eyes rules (no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from registry_common.approvals import PendingApproval, effective_state, payload_hash
from registry_common.auth import Principal
from registry_common.errors import RegistryError

NOW = datetime(2030, 3, 1, 12, 0, tzinfo=UTC)
EXPIRES = NOW + timedelta(days=7)
PAYLOAD = {"account_id": 42, "quantity": 1000, "reason": "ajuste"}
REQUESTER = Principal(user_id="u-requester", username="ana", roles=frozenset({"authority"}))
APPROVER = Principal(user_id="u-approver", username="beto", roles=frozenset({"authority"}))
OUTSIDER = Principal(user_id="u-outsider", username="carla", roles=frozenset({"installation"}))


def pending(**overrides: object) -> PendingApproval:
    values: dict[str, object] = {
        "requested_by": REQUESTER.user_id,
        "required_roles": frozenset({"authority", "administrator"}),
        "payload_hash": payload_hash(PAYLOAD),
        "expires_at": EXPIRES,
        "state": "pending",
    }
    values.update(overrides)
    return PendingApproval(**values)  # type: ignore[arg-type]


def refused_code(approval: PendingApproval, decider: Principal, confirmed: str | None, now: datetime,
                 *, approving: bool) -> RegistryError:
    with pytest.raises(RegistryError) as caught:
        approval.check_decision(decider, confirmed, now, approving=approving)
    return caught.value


# payload_hash -------------------------------------------------------------------------------------
def test_payload_hash_is_sha256_hex() -> None:
    digest = payload_hash(PAYLOAD)
    assert len(digest) == 64
    int(digest, 16)


def test_payload_hash_ignores_key_order() -> None:
    reordered = {"reason": "ajuste", "quantity": 1000, "account_id": 42}
    assert payload_hash(reordered) == payload_hash(PAYLOAD)


def test_payload_hash_ignores_key_order_in_nested_objects() -> None:
    a = {"lines": [{"x": 1, "y": 2}], "meta": {"b": 1, "a": 2}}
    b = {"meta": {"a": 2, "b": 1}, "lines": [{"y": 2, "x": 1}]}
    assert payload_hash(a) == payload_hash(b)


@pytest.mark.parametrize(
    "changed",
    [
        {**PAYLOAD, "quantity": 1001},
        {**PAYLOAD, "quantity": "1000"},  # a string is not the number
        {**PAYLOAD, "reason": "Ajuste"},
        {**PAYLOAD, "extra": None},
        {"account_id": 42, "quantity": 1000},
    ],
)
def test_payload_hash_changes_when_the_payload_changes(changed: dict[str, object]) -> None:
    assert payload_hash(changed) != payload_hash(PAYLOAD)


def test_payload_hash_is_order_sensitive_for_lists() -> None:
    assert payload_hash({"serials": [1, 2]}) != payload_hash({"serials": [2, 1]})


def test_payload_hash_accepts_non_json_values() -> None:
    payload = {"id": UUID(int=7), "price": Decimal("12.50"), "at": NOW}
    assert payload_hash(payload) == payload_hash(dict(reversed(list(payload.items()))))
    assert payload_hash(payload) != payload_hash({**payload, "price": Decimal("12.51")})


def test_payload_hash_of_unicode_is_stable() -> None:
    assert payload_hash({"nombre": "Peñasco"}) == payload_hash({"nombre": "Peñasco"})
    assert payload_hash({"nombre": "Peñasco"}) != payload_hash({"nombre": "Penasco"})


# check_decision -----------------------------------------------------------------------------------
def test_a_valid_approval_is_allowed() -> None:
    pending().check_decision(APPROVER, payload_hash(PAYLOAD), NOW, approving=True)


def test_a_valid_approval_just_before_expiry_is_allowed() -> None:
    pending().check_decision(APPROVER, payload_hash(PAYLOAD), EXPIRES - timedelta(microseconds=1),
                             approving=True)


def test_any_one_of_the_required_roles_is_enough() -> None:
    admin = Principal(user_id="u-admin", username="dora", roles=frozenset({"administrator", "verifier"}))
    pending().check_decision(admin, payload_hash(PAYLOAD), NOW, approving=True)


def test_self_approval_is_refused() -> None:
    error = refused_code(pending(), REQUESTER, payload_hash(PAYLOAD), NOW, approving=True)
    assert error.code == "approval.self_approval"
    assert error.status == 403


def test_self_approval_is_refused_even_under_another_username() -> None:
    same_user = Principal(user_id=REQUESTER.user_id, username="other-name",
                          roles=frozenset({"administrator"}))
    error = refused_code(pending(), same_user, payload_hash(PAYLOAD), NOW, approving=True)
    assert error.code == "approval.self_approval"


def test_wrong_role_is_refused() -> None:
    error = refused_code(pending(), OUTSIDER, payload_hash(PAYLOAD), NOW, approving=True)
    assert error.code == "approval.wrong_role"
    assert error.status == 403


def test_no_roles_at_all_is_refused() -> None:
    nobody = Principal(user_id="u-none", username="eva", roles=frozenset())
    assert refused_code(pending(), nobody, payload_hash(PAYLOAD), NOW, approving=True).code == (
        "approval.wrong_role"
    )


def test_wrong_role_is_refused_for_a_rejection_too() -> None:
    assert refused_code(pending(), OUTSIDER, None, NOW, approving=False).code == "approval.wrong_role"


@pytest.mark.parametrize("confirmed", [None, "", payload_hash({**PAYLOAD, "quantity": 999})])
def test_payload_mismatch_is_refused(confirmed: str | None) -> None:
    error = refused_code(pending(), APPROVER, confirmed, NOW, approving=True)
    assert error.code == "approval.payload_mismatch"
    assert error.field == "payload_hash"
    assert error.status == 409


def test_expired_is_refused_at_exactly_expires_at() -> None:
    error = refused_code(pending(), APPROVER, payload_hash(PAYLOAD), EXPIRES, approving=True)
    assert error.code == "approval.expired"


def test_expired_is_refused_after_expiry() -> None:
    later = EXPIRES + timedelta(seconds=1)
    assert refused_code(pending(), APPROVER, payload_hash(PAYLOAD), later, approving=True).code == (
        "approval.expired"
    )
    assert refused_code(pending(), APPROVER, None, later, approving=False).code == "approval.expired"


@pytest.mark.parametrize("state", ["approved", "rejected", "expired"])
def test_only_a_pending_request_can_be_decided(state: str) -> None:
    error = refused_code(pending(state=state), APPROVER, payload_hash(PAYLOAD), NOW, approving=True)
    assert error.code == "approval.not_pending"
    assert error.params == {"state": state}
    rejection = refused_code(pending(state=state), APPROVER, None, NOW, approving=False)
    assert rejection.code == "approval.not_pending"


def test_not_pending_is_reported_before_expiry() -> None:
    error = refused_code(pending(state="approved"), APPROVER, payload_hash(PAYLOAD),
                         EXPIRES + timedelta(days=1), approving=True)
    assert error.code == "approval.not_pending"


def test_a_rejection_by_the_requester_is_allowed() -> None:
    """Only approving your own request is refused: the requester may withdraw (reject) it."""
    pending().check_decision(REQUESTER, None, NOW, approving=False)


def test_a_rejection_does_not_need_the_payload_hash() -> None:
    pending().check_decision(APPROVER, "not-the-hash", NOW, approving=False)


def test_a_requester_without_the_role_cannot_reject() -> None:
    requester = Principal(user_id="u-inst", username="fer", roles=frozenset({"installation"}))
    approval = pending(requested_by=requester.user_id)
    assert refused_code(approval, requester, None, NOW, approving=False).code == "approval.wrong_role"


# effective_state ----------------------------------------------------------------------------------
def test_effective_state_of_a_live_pending_request() -> None:
    assert effective_state({"state": "pending", "expires_at": EXPIRES}, NOW) == "pending"
    assert effective_state({"state": "pending", "expires_at": EXPIRES},
                           EXPIRES - timedelta(microseconds=1)) == "pending"


def test_effective_state_of_an_expired_pending_request() -> None:
    assert effective_state({"state": "pending", "expires_at": EXPIRES}, EXPIRES) == "expired"
    later = EXPIRES + timedelta(days=1)
    assert effective_state({"state": "pending", "expires_at": EXPIRES}, later) == "expired"


@pytest.mark.parametrize("state", ["approved", "rejected"])
def test_effective_state_keeps_a_decision_after_expiry(state: str) -> None:
    assert effective_state({"state": state, "expires_at": EXPIRES}, EXPIRES + timedelta(days=1)) == state
