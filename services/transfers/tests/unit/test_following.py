"""Following a transfer: the ``Prefer: wait`` and ``If-None-Match`` rules of the transfers API."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from transfers.api_transfers import MAX_WAIT_SECONDS, MAX_WAITING_READS, matches, preferred_wait, waiting_allowed


@pytest.mark.parametrize(("prefer", "seconds"), [
    (None, 0.0), ("", 0.0), ("wait=3", 3.0), ("respond-async, wait=2", 2.0), ("return=minimal; WAIT = 4", 4.0),
    ("wait=600", MAX_WAIT_SECONDS), ("wait=abc", 0.0), ("await=3", 0.0), ("wait=-1", 0.0),
])
def test_the_wait_preference_is_read_and_bounded(prefer, seconds):
    assert preferred_wait(prefer) == seconds


@pytest.mark.parametrize(("if_none_match", "matched"), [
    (None, False), ('"3"', True), ('W/"3"', True), ('"2", "3"', True), ("*", True), ('"4"', False), ("3", False),
])
def test_if_none_match_is_a_weak_comparison_with_the_version(if_none_match, matched):
    assert matches(if_none_match, '"3"') is matched


def test_no_wait_once_as_many_reads_wait_as_the_process_allows():
    def request(waiting: int) -> SimpleNamespace:
        return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(waiting_reads=waiting)))

    assert waiting_allowed(request(MAX_WAITING_READS - 1), 5.0) == 5.0
    assert waiting_allowed(request(MAX_WAITING_READS), 5.0) == 0.0
