"""registry_common.faults (only the "raise" action: "exit" would kill the test run) and the consumer's
retry back-off."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from registry_common.faults import KNOWN_POINTS, FaultInjected, configure_faults, fault_point
from registry_common.messaging.consumer import ConsumerRunner
from registry_common.settings import RegistrySettings

POINT = "after_commit_before_ack"
OTHER = "relay_after_publish_before_mark"


@pytest.fixture(autouse=True)
def reset_faults() -> Iterator[None]:
    configure_faults("")
    yield
    configure_faults("")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's REGISTRY_* variables must not change the settings built here."""
    for name in list(os.environ):
        if name.upper().startswith("REGISTRY_"):
            monkeypatch.delenv(name)


# configure_faults ---------------------------------------------------------------------------------
def test_known_points() -> None:
    assert {POINT, OTHER} <= KNOWN_POINTS


@pytest.mark.parametrize(
    "spec",
    [
        "no_such_point=raise",
        f"{POINT}=explode",
        f"{POINT}",  # no action
        f"{POINT}=",
        f"{POINT}=RAISE",
        f"{POINT}=raise,bogus=exit",
    ],
)
def test_configure_faults_refuses_unknown_points_and_actions(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        configure_faults(spec)


def test_configure_faults_accepts_an_empty_spec() -> None:
    configure_faults("")
    configure_faults(" , ")
    fault_point(POINT)  # nothing armed: nothing happens


def test_unarmed_points_do_nothing() -> None:
    fault_point(POINT)
    fault_point(OTHER)
    fault_point("not_a_point")


# raise --------------------------------------------------------------------------------------------
def test_raise_raises_fault_injected_naming_the_point() -> None:
    configure_faults(f"{POINT}=raise")
    with pytest.raises(FaultInjected, match=POINT):
        fault_point(POINT)


def test_only_the_configured_point_fires() -> None:
    configure_faults(f"{POINT}=raise")
    fault_point(OTHER)
    with pytest.raises(FaultInjected):
        fault_point(POINT)


def test_without_a_marker_dir_a_point_fires_every_time() -> None:
    configure_faults(f"{POINT}=raise")
    for _ in range(3):
        with pytest.raises(FaultInjected):
            fault_point(POINT)


def test_several_points_with_spaces() -> None:
    configure_faults(f" {POINT}=raise , {OTHER}=raise ")
    with pytest.raises(FaultInjected, match=OTHER):
        fault_point(OTHER)
    with pytest.raises(FaultInjected, match=POINT):
        fault_point(POINT)


def test_reconfiguring_disarms_previous_points() -> None:
    configure_faults(f"{POINT}=raise")
    configure_faults(f"{OTHER}=raise")
    fault_point(POINT)
    configure_faults("")
    fault_point(OTHER)


def test_fault_injected_is_a_runtime_error() -> None:
    assert issubclass(FaultInjected, RuntimeError)


# marker dir ---------------------------------------------------------------------------------------
def test_with_a_marker_dir_a_point_fires_only_while_armed(tmp_path: Path) -> None:
    configure_faults(f"{POINT}=raise", marker_dir=tmp_path)
    fault_point(POINT)  # not armed yet: nothing
    assert list(tmp_path.iterdir()) == []

    (tmp_path / f"{POINT}.armed").touch()
    with pytest.raises(FaultInjected):
        fault_point(POINT)
    assert not (tmp_path / f"{POINT}.armed").exists()
    assert (tmp_path / f"{POINT}.fired").exists()

    fault_point(POINT)  # fired once; the restarted process carries on
    fault_point(POINT)


def test_a_marker_arms_only_its_own_point(tmp_path: Path) -> None:
    configure_faults(f"{POINT}=raise,{OTHER}=raise", marker_dir=tmp_path)
    (tmp_path / f"{OTHER}.armed").touch()
    fault_point(POINT)
    with pytest.raises(FaultInjected, match=OTHER):
        fault_point(OTHER)
    fault_point(OTHER)


def test_a_marker_for_an_unconfigured_point_does_not_fire(tmp_path: Path) -> None:
    configure_faults(f"{OTHER}=raise", marker_dir=tmp_path)
    (tmp_path / f"{POINT}.armed").touch()
    fault_point(POINT)
    assert (tmp_path / f"{POINT}.armed").exists()


def test_rearming_fires_again(tmp_path: Path) -> None:
    configure_faults(f"{POINT}=raise", marker_dir=tmp_path)
    for _ in range(2):
        (tmp_path / f"{POINT}.armed").touch()
        with pytest.raises(FaultInjected):
            fault_point(POINT)
        fault_point(POINT)


def test_reconfiguring_without_a_marker_dir_forgets_it(tmp_path: Path) -> None:
    configure_faults(f"{POINT}=raise", marker_dir=tmp_path)
    fault_point(POINT)
    configure_faults(f"{POINT}=raise")
    with pytest.raises(FaultInjected):
        fault_point(POINT)


# ConsumerRunner.backoff ---------------------------------------------------------------------------
def runner(**settings: float) -> ConsumerRunner:
    return ConsumerRunner(
        consumer="unit", engine=None, subscriptions={}, outbox=None, clock=None,  # type: ignore[arg-type]
        settings=RegistrySettings(service="unit", **settings),
    )


def test_backoff_doubles_from_the_base() -> None:
    r = runner(consumer_retry_base_seconds=1.0, consumer_retry_max_seconds=300.0)
    assert [r.backoff(n).total_seconds() for n in range(1, 7)] == [1, 2, 4, 8, 16, 32]


def test_backoff_is_capped_at_the_maximum() -> None:
    r = runner(consumer_retry_base_seconds=1.0, consumer_retry_max_seconds=10.0)
    assert r.backoff(4) == timedelta(seconds=8)
    assert r.backoff(5) == timedelta(seconds=10)
    assert r.backoff(6) == timedelta(seconds=10)
    assert r.backoff(60) == timedelta(seconds=10)


def test_backoff_with_a_fractional_base() -> None:
    r = runner(consumer_retry_base_seconds=0.2, consumer_retry_max_seconds=1.0)
    assert r.backoff(1) == timedelta(seconds=0.2)
    assert r.backoff(2) == timedelta(seconds=0.4)
    assert r.backoff(3) == timedelta(seconds=0.8)
    assert r.backoff(4) == timedelta(seconds=1.0)


def test_backoff_never_decreases() -> None:
    r = runner(consumer_retry_base_seconds=0.5, consumer_retry_max_seconds=120.0)
    delays = [r.backoff(n) for n in range(1, 20)]
    assert delays == sorted(delays)
    assert delays[-1] == timedelta(seconds=120)


def test_backoff_uses_the_default_settings() -> None:
    r = runner()
    assert r.backoff(1) == timedelta(seconds=1)
    assert r.backoff(100) == timedelta(seconds=300)
