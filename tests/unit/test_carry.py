"""What a pool's next generation takes over on a reload (no sockets, no loop)."""

from __future__ import annotations

from ftplb.balancing.carry import carry_servers, carry_stickiness, restore, save_settings
from ftplb.balancing.pool import Pool
from ftplb.balancing.state import AdminState, Server


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_first_generation_takes_its_configured_servers() -> None:
    configured = [Server("s1", "127.0.0.11", 21), Server("s2", "127.0.0.12", 21)]
    assert carry_servers(None, configured) == configured


def test_a_kept_server_stays_the_same_object_with_its_runtime_state_and_new_settings() -> None:
    old = Server("s1", "127.0.0.11", 21, weight=2, max_connections=5)
    old.admin, old.healthy, old.active, old.total = AdminState.DRAIN, False, 3, 40
    old.weight = 7  # set at runtime, against the configured 2
    previous = Pool("pool", [old, Server("gone", "127.0.0.13", 21)])
    fresh = Server("s1", "127.0.0.21", 2121, weight=2, max_connections=9)
    added = Server("s3", "127.0.0.23", 21)

    carried = carry_servers(previous, [added, fresh])

    assert carried[0] is added
    assert carried[1] is old
    assert (old.host, old.port, old.max_connections) == ("127.0.0.21", 2121, 9)
    assert (old.admin, old.healthy, old.active, old.total) == (AdminState.DRAIN, False, 3, 40)
    assert (old.weight, old.configured_weight) == (7, 2)


def test_an_edited_configured_weight_wins_over_a_runtime_weight() -> None:
    old = Server("s1", "127.0.0.11", 21, weight=2)
    old.weight = 7
    previous = Pool("pool", [old])

    carry_servers(previous, [Server("s1", "127.0.0.11", 21, weight=4)])

    assert (old.weight, old.configured_weight) == (4, 4)


def test_stickiness_goes_on_without_the_entries_of_removed_servers() -> None:
    clock = FakeClock()
    s1, s2 = Server("s1", "127.0.0.11", 21), Server("s2", "127.0.0.12", 21)
    previous = Pool("pool", [s1, s2], sticky="source", sticky_timeout=60, clock=clock)
    previous.acquire(s1, "10.0.0.1", None)
    previous.acquire(s2, "10.0.0.2", None)
    pool = Pool("pool", [s1], sticky="source", sticky_timeout=600, clock=clock)

    carry_stickiness(previous, pool, 600)

    assert pool.stick is previous.stick
    assert pool.stick is not None
    assert pool.stick.timeout == 600
    assert pool.stick.get("10.0.0.1") == "s1"
    assert pool.stick.get("10.0.0.2") is None


def test_a_changed_sticky_mode_starts_a_new_table() -> None:
    s1 = Server("s1", "127.0.0.11", 21)
    previous = Pool("pool", [s1], sticky="source")
    previous.acquire(s1, "10.0.0.1", None)
    pool = Pool("pool", [s1], sticky="user")
    table = pool.stick

    carry_stickiness(previous, pool, 3600)

    assert pool.stick is table
    assert pool.stick is not None
    assert len(pool.stick) == 0


def test_no_previous_table_leaves_the_new_one() -> None:
    s1 = Server("s1", "127.0.0.11", 21)
    pool = Pool("pool", [s1], sticky="source")
    table = pool.stick
    carry_stickiness(Pool("pool", [s1]), pool, 3600)
    carry_stickiness(None, pool, 3600)
    assert pool.stick is table


def test_a_server_knows_its_configured_weight_apart_from_a_runtime_one() -> None:
    assert Server("s1", "127.0.0.11", 21, weight=3).configured_weight == 3
    assert Server("s1", "127.0.0.11", 21, weight=0).configured_weight == 0
    # A runtime weight of 3 against a configured 0 (an operator let a spare server in).
    assert Server("s1", "127.0.0.11", 21, weight=3, configured_weight=0).configured_weight == 0


def test_settings_saved_before_a_carry_are_put_back() -> None:
    old = Server("s1", "127.0.0.11", 21, weight=2, max_connections=5)
    old.weight = 7
    previous = Pool("pool", [old, Server("s2", "127.0.0.12", 21)])
    saved = save_settings([previous])

    carry_servers(previous, [Server("s1", "127.0.0.21", 2121, weight=4, max_connections=9)])
    restore(saved)

    assert (old.host, old.port, old.weight, old.configured_weight, old.max_connections) == (
        "127.0.0.11",
        21,
        7,
        2,
        5,
    )
