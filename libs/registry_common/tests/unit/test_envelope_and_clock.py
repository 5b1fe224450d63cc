"""The message envelope, the programme clock's arithmetic, and issuance's clock-move rule."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

import pytest
from pydantic import ValidationError

from issuance.clock_routes import ClockMove, next_offset_us
from registry_common.clock import ProgrammeClock
from registry_common.errors import RegistryError
from registry_common.messaging.envelope import Envelope
from registry_contracts.issuance import ProgrammeClockMoved

HOUR_US = 3_600_000_000
PROGRAMME_NOW = datetime(2025, 1, 1, 6, 0, tzinfo=UTC)


def clock_moved() -> ProgrammeClockMoved:
    return ProgrammeClockMoved(offset_us=HOUR_US, version=3, programme_now=PROGRAMME_NOW, moved_by="u-1")


# Envelope -----------------------------------------------------------------------------------------
def test_wrap_fills_the_fields_from_the_message() -> None:
    before = datetime.now(UTC)
    envelope = Envelope.wrap(clock_moved(), producer="issuance")
    after = datetime.now(UTC)
    assert isinstance(envelope.message_id, UUID)
    assert envelope.type == "issuance.programme_clock_moved"
    assert envelope.version == 1
    assert envelope.kind == "event"
    assert envelope.producer == "issuance"
    assert before <= envelope.occurred_at <= after
    assert envelope.occurred_at.utcoffset() == timedelta(0)
    assert envelope.causation_id is None
    assert envelope.payload == {
        "offset_us": HOUR_US, "version": 3, "programme_now": "2025-01-01T06:00:00Z", "moved_by": "u-1",
    }


def test_routing_key_matches_the_message_class() -> None:
    envelope = Envelope.wrap(clock_moved(), producer="issuance")
    assert envelope.routing_key == "issuance.programme_clock_moved.v1"
    assert envelope.routing_key == ProgrammeClockMoved.routing_key()


def test_correlation_defaults_to_the_message_id() -> None:
    envelope = Envelope.wrap(clock_moved(), producer="issuance")
    assert envelope.correlation_id == str(envelope.message_id)


def test_explicit_correlation_and_causation_are_kept() -> None:
    cause = uuid4()
    envelope = Envelope.wrap(clock_moved(), producer="issuance", correlation_id="transfer-77",
                             causation_id=cause)
    assert envelope.correlation_id == "transfer-77"
    assert envelope.causation_id == cause


def test_every_wrap_gets_a_new_message_id() -> None:
    ids = {Envelope.wrap(clock_moved(), producer="issuance").message_id for _ in range(5)}
    assert len(ids) == 5


def test_envelope_json_round_trip() -> None:
    envelope = Envelope.wrap(clock_moved(), producer="issuance", correlation_id="flow", causation_id=uuid4())
    raw = envelope.model_dump_json()
    decoded = json.loads(raw)
    assert decoded["message_id"] == str(envelope.message_id)
    assert decoded["kind"] == "event"
    again = Envelope.model_validate_json(raw)
    assert again == envelope
    assert ProgrammeClockMoved.model_validate(again.payload) == clock_moved()


def test_envelope_ignores_unknown_fields_and_refuses_bad_kinds() -> None:
    decoded = json.loads(Envelope.wrap(clock_moved(), producer="issuance").model_dump_json())
    assert Envelope.model_validate({**decoded, "future_field": 1}).type == "issuance.programme_clock_moved"
    with pytest.raises(ValidationError):
        Envelope.model_validate({**decoded, "kind": "query"})
    with pytest.raises(ValidationError):
        Envelope.model_validate({**decoded, "occurred_at": "2025-01-01T00:00:00"})  # naive


def test_envelope_is_frozen() -> None:
    envelope = Envelope.wrap(clock_moved(), producer="issuance")
    with pytest.raises(ValidationError):
        envelope.producer = "someone-else"  # type: ignore[misc]


# ProgrammeClock -----------------------------------------------------------------------------------
def test_clock_without_offset_is_real_time() -> None:
    clock = ProgrammeClock(None)
    before = datetime.now(UTC)
    now = clock.now()
    after = datetime.now(UTC)
    assert before <= now <= after
    assert now.utcoffset() == timedelta(0)


@pytest.mark.parametrize("offset_us", [HOUR_US, 365 * 24 * HOUR_US, 1])
def test_clock_now_adds_the_offset(offset_us: int) -> None:
    clock = ProgrammeClock(None, offset_us=offset_us)
    before = datetime.now(UTC)
    now = clock.now()
    after = datetime.now(UTC)
    shift = timedelta(microseconds=offset_us)
    assert before + shift <= now <= after + shift


async def test_refresh_without_an_engine_keeps_the_offset() -> None:
    clock = ProgrammeClock(None, offset_us=HOUR_US)
    await clock.refresh(force=True)
    assert clock.offset_us == HOUR_US
    assert clock.version == 0


def test_describe() -> None:
    clock = ProgrammeClock(None, offset_us=1_500_000)
    described = clock.describe()
    assert described["offset_seconds"] == 1.5
    assert described["version"] == 0
    programme_now = datetime.fromisoformat(described["programme_now"])
    assert abs(programme_now - (datetime.now(UTC) + timedelta(seconds=1.5))) < timedelta(seconds=5)


# issuance: next_offset_us and ClockMove --------------------------------------------------------------
REAL_NOW = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def test_advance_adds_to_the_current_offset() -> None:
    assert next_offset_us(0, ClockMove(advance_seconds=60), REAL_NOW) == 60_000_000
    assert next_offset_us(HOUR_US, ClockMove(advance_seconds=1.5), REAL_NOW) == HOUR_US + 1_500_000


def test_advance_does_not_depend_on_real_time() -> None:
    move = ClockMove(advance_seconds=86_400)
    assert next_offset_us(5, move, REAL_NOW) == next_offset_us(5, move, REAL_NOW + timedelta(days=30))


def test_move_to_a_programme_time_sets_the_offset_from_real_time() -> None:
    target = REAL_NOW + timedelta(days=365)
    assert next_offset_us(0, ClockMove(programme_now=target), REAL_NOW) == 365 * 24 * HOUR_US


def test_move_to_a_programme_time_in_another_timezone() -> None:
    target = datetime.fromisoformat("2026-05-04T06:00:00-06:00")  # 12:00 UTC: two hours ahead
    assert next_offset_us(0, ClockMove(programme_now=target), REAL_NOW) == 2 * HOUR_US


def test_move_to_the_current_programme_time_is_allowed() -> None:
    current = HOUR_US
    target = REAL_NOW + timedelta(microseconds=current)
    assert next_offset_us(current, ClockMove(programme_now=target), REAL_NOW) == current


def test_moving_back_in_programme_time_is_refused() -> None:
    current = 2 * HOUR_US  # programme time is REAL_NOW + 2h
    target = REAL_NOW + timedelta(hours=1)  # still in the real future, but before programme now
    with pytest.raises(RegistryError) as caught:
        next_offset_us(current, ClockMove(programme_now=target), REAL_NOW)
    assert caught.value.code == "clock.backwards"
    assert caught.value.field == "programme_now"
    assert caught.value.status == 409


def test_moving_back_by_one_microsecond_is_refused() -> None:
    target = REAL_NOW + timedelta(microseconds=HOUR_US - 1)
    with pytest.raises(RegistryError, match="clock.backwards"):
        next_offset_us(HOUR_US, ClockMove(programme_now=target), REAL_NOW)


def test_moving_before_real_time_from_a_zero_offset_is_refused() -> None:
    with pytest.raises(RegistryError, match="clock.backwards"):
        next_offset_us(0, ClockMove(programme_now=REAL_NOW - timedelta(days=1)), REAL_NOW)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"reason": "only a reason"},
        {"programme_now": "2030-01-01T00:00:00Z", "advance_seconds": 10},
    ],
)
def test_clock_move_requires_exactly_one_target(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        ClockMove.model_validate(body)


@pytest.mark.parametrize(
    "body",
    [
        {"advance_seconds": 0},
        {"advance_seconds": -5},
        {"programme_now": "2030-01-01T00:00:00"},  # no timezone
        {"advance_seconds": 10, "speed": 2},  # unknown field
        {"advance_seconds": 10, "reason": "x" * 501},
    ],
)
def test_clock_move_refuses_invalid_values(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ClockMove.model_validate(body)


def test_clock_move_accepts_either_form() -> None:
    assert ClockMove.model_validate({"advance_seconds": 10}).advance_seconds == 10
    move = ClockMove.model_validate({"programme_now": "2030-01-01T00:00:00Z", "reason": "demo"})
    assert move.programme_now == datetime(2030, 1, 1, tzinfo=UTC)
    assert move.reason == "demo"


def test_advance_by_a_decimal_number_of_seconds_is_exact() -> None:
    assert next_offset_us(0, ClockMove(advance_seconds=1.001), REAL_NOW) == 1_001_000
