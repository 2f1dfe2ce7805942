"""HealthState: rise/fall sequences with HAProxy's consecutive-check semantics."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftplb.health.state import HealthState


def feed(state: HealthState, results: str) -> list[bool]:
    """Feed a string of '+' (ok) and '-' (failed); return which checks flipped."""
    return [state.record(ch == "+", "ok" if ch == "+" else "failed") for ch in results]


def test_starts_up_by_default() -> None:
    state = HealthState(rise=2, fall=3)
    assert state.up
    assert state.last_ok is None
    assert state.consecutive_ok == 0 and state.consecutive_failed == 0


def test_fall_consecutive_failures_take_it_down() -> None:
    state = HealthState(rise=2, fall=3)
    assert feed(state, "--") == [False, False]
    assert state.up
    assert state.record(False, "timeout reading banner") is True
    assert not state.up
    assert state.last_ok is False
    assert state.last_detail == "timeout reading banner"
    assert state.consecutive_failed == 3


def test_interrupted_failures_do_not_count() -> None:
    state = HealthState(rise=2, fall=3)
    assert not any(feed(state, "--+--+--+"))
    assert state.up


def test_rise_consecutive_successes_bring_it_up() -> None:
    state = HealthState(rise=2, fall=3)
    feed(state, "---")
    assert not state.up
    assert feed(state, "+-+") == [False, False, False]
    assert not state.up
    assert feed(state, "+") == [True]
    assert state.up
    assert state.consecutive_ok == 2


def test_further_failures_while_down_do_not_flip() -> None:
    state = HealthState(rise=1, fall=1)
    assert feed(state, "---") == [True, False, False]
    assert feed(state, "+++") == [True, False, False]


def test_starting_down() -> None:
    state = HealthState(rise=3, fall=1, up=False)
    assert feed(state, "++") == [False, False]
    assert feed(state, "+") == [True]


def test_invalid_rise_fall() -> None:
    with pytest.raises(ValueError):
        HealthState(rise=0, fall=1)
    with pytest.raises(ValueError):
        HealthState(rise=1, fall=0)


@given(
    rise=st.integers(min_value=1, max_value=5),
    fall=st.integers(min_value=1, max_value=5),
    results=st.text(alphabet="+-", max_size=80),
)
def test_matches_run_length_definition(rise: int, fall: int, results: str) -> None:
    """After each check, `up` is decided by the latest run of equal results."""
    state = HealthState(rise, fall)
    expected_up = True
    for i, ch in enumerate(results):
        run = len(results[: i + 1]) - len(results[: i + 1].rstrip(ch))
        before = expected_up
        if ch == "+" and run >= rise:
            expected_up = True
        if ch == "-" and run >= fall:
            expected_up = False
        assert state.record(ch == "+") is (before != expected_up)
        assert state.up is expected_up
