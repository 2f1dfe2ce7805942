"""StickTable: expiry, refresh on hit, LRU eviction, forgetting a server."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftplb.balancing.stick import StickStore, StickTable


class FakeClock:
    def __init__(self, now: float = 500.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_get_absent_is_none() -> None:
    table = StickTable(10, clock=FakeClock())
    assert table.get("10.0.0.1") is None
    assert len(table) == 0


def test_put_then_get() -> None:
    table = StickTable(10, clock=FakeClock())
    table.put("10.0.0.1", "s1")
    table.put("10.0.0.2", "s2")
    assert table.get("10.0.0.1") == "s1"
    assert table.get("10.0.0.2") == "s2"
    assert len(table) == 2


def test_put_overwrites() -> None:
    table = StickTable(10, clock=FakeClock())
    table.put("k", "s1")
    table.put("k", "s2")
    assert table.get("k") == "s2"
    assert len(table) == 1


def test_entry_expires_after_timeout() -> None:
    clock = FakeClock()
    table = StickTable(10, clock=clock)
    table.put("k", "s1")
    clock.now += 9.999
    assert len(table) == 1
    clock.now += 0.001
    assert table.get("k") is None
    assert len(table) == 0


def test_hit_refreshes_expiry() -> None:
    clock = FakeClock()
    table = StickTable(10, clock=clock)
    table.put("k", "s1")
    for _ in range(5):
        clock.now += 8
        assert table.get("k") == "s1"
    clock.now += 10
    assert table.get("k") is None


def test_miss_does_not_refresh_other_entries() -> None:
    clock = FakeClock()
    table = StickTable(10, clock=clock)
    table.put("a", "s1")
    clock.now += 6
    table.put("b", "s2")
    clock.now += 5
    assert table.get("a") is None
    assert table.get("b") == "s2"


def test_lru_eviction_when_full() -> None:
    clock = FakeClock()
    table = StickTable(100, max_entries=3, clock=clock)
    for key in ("a", "b", "c"):
        table.put(key, "s-" + key)
        clock.now += 1
    assert table.get("a") == "s-a"  # "a" is now the most recently used
    table.put("d", "s-d")
    assert len(table) == 3
    assert table.get("b") is None  # least recently used went first
    assert [table.get(k) for k in ("a", "c", "d")] == ["s-a", "s-c", "s-d"]


def test_put_existing_key_counts_as_use() -> None:
    table = StickTable(100, max_entries=2, clock=FakeClock())
    table.put("a", "s1")
    table.put("b", "s1")
    table.put("a", "s2")
    table.put("c", "s1")
    assert table.get("a") == "s2"
    assert table.get("b") is None


def test_forget_server() -> None:
    table = StickTable(100, clock=FakeClock())
    table.put("a", "s1")
    table.put("b", "s2")
    table.put("c", "s1")
    table.forget_server("s1")
    assert table.get("a") is None
    assert table.get("c") is None
    assert table.get("b") == "s2"
    assert len(table) == 1
    table.forget_server("unknown")
    assert len(table) == 1


def test_len_drops_entries_at_their_expiry_instant() -> None:
    clock = FakeClock()
    table = StickTable(10, clock=clock)
    table.put("old", "s1")
    clock.now += 4
    table.put("new", "s2")
    clock.now += 6  # "old" expires exactly now, "new" in 4 s
    assert len(table) == 1
    assert table.get("new") == "s2"
    clock.now += 10
    assert len(table) == 0


def test_put_purges_only_expired_entries() -> None:
    clock = FakeClock()
    table = StickTable(10, max_entries=2, clock=clock)
    table.put("a", "s1")
    clock.now += 5
    table.put("b", "s2")
    clock.now += 5  # "a" has expired, "b" has not
    table.put("c", "s3")
    assert [table.get(k) for k in ("a", "b", "c")] == [None, "s2", "s3"]


def test_default_cap_is_100_000_entries() -> None:
    table = StickTable(10, clock=FakeClock())
    for n in range(100_001):
        table.put(str(n), "s")
    assert len(table) == 100_000
    assert table.get("0") is None
    assert table.get("1") == "s"


def test_any_positive_timeout_and_a_single_entry_are_allowed() -> None:
    clock = FakeClock()
    table = StickTable(0.5, max_entries=1, clock=clock)
    table.put("a", "s1")
    table.put("b", "s2")
    assert (table.get("a"), table.get("b")) == (None, "s2")
    clock.now += 0.5
    assert table.get("b") is None


@pytest.mark.parametrize(
    ("timeout", "max_entries", "message"),
    [
        (0, 1, "stick table timeout must be positive"),
        (-1, 1, "stick table timeout must be positive"),
        (10, 0, "stick table max_entries must be at least 1"),
    ],
)
def test_invalid_settings_rejected(timeout: float, max_entries: int, message: str) -> None:
    with pytest.raises(ValueError) as error:
        StickTable(timeout, max_entries=max_entries)
    assert str(error.value) == message


def test_is_a_stick_store() -> None:
    store: StickStore = StickTable(10)
    store.put("k", "s")
    assert store.get("k") == "s"


@settings(max_examples=150)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "get", "tick", "forget"]),
            st.integers(min_value=0, max_value=7),
            st.floats(min_value=0, max_value=4, allow_nan=False),
        ),
        max_size=60,
    ),
    max_entries=st.integers(min_value=1, max_value=5),
)
def test_matches_reference_model(ops: list[tuple[str, int, float]], max_entries: int) -> None:
    """Compare with a naive model: dict of key -> (server, expiry, last use)."""
    timeout = 5.0
    clock = FakeClock(0.0)
    table = StickTable(timeout, max_entries=max_entries, clock=clock)
    model: dict[str, tuple[str, float, int]] = {}
    for use, (op, n, dt) in enumerate(ops):
        key, server = f"k{n}", f"s{n % 3}"
        model = {k: v for k, v in model.items() if v[1] > clock.now}
        if op == "put":
            model[key] = (server, clock.now + timeout, use)
            table.put(key, server)
            if len(model) > max_entries:
                oldest = min(model, key=lambda k: model[k][2])
                del model[oldest]
        elif op == "get":
            expected = model.get(key)
            got = table.get(key)
            if expected is None:
                assert got is None
            else:
                assert got == expected[0]
                model[key] = (expected[0], clock.now + timeout, use)
        elif op == "tick":
            clock.now += dt
        else:
            model = {k: v for k, v in model.items() if v[0] != server}
            table.forget_server(server)
        live = {k: v for k, v in model.items() if v[1] > clock.now}
        assert len(table) == len(live)
