"""Server state, balancing strategies and pool selection (no sockets, no loop)."""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import struct
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftplb.balancing.algorithms import (
    LeastConn,
    Random,
    RoundRobin,
    Source,
    UserHash,
    _rendezvous_score,
    make_strategy,
)
from ftplb.balancing.pool import Pool
from ftplb.balancing.state import AdminState, Server, ServerState


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def servers(*weights: int) -> list[Server]:
    return [Server(f"s{i}", "127.0.0.1", 2100 + i, weight=w) for i, w in enumerate(weights)]


def spread(pool: Pool, picks: int, client_ip: str = "10.0.0.1") -> Counter[str]:
    counts: Counter[str] = Counter()
    for _ in range(picks):
        server = pool.pick(client_ip, None)
        assert server is not None
        counts[server.name] += 1
    return counts


# --- Server state -----------------------------------------------------------


@pytest.mark.parametrize(
    ("admin", "healthy", "expected"),
    [
        (AdminState.READY, True, ServerState.UP),
        (AdminState.DRAIN, True, ServerState.DRAIN),
        (AdminState.DRAIN, False, ServerState.DOWN),  # a dead server cannot drain
        (AdminState.MAINT, False, ServerState.MAINT),  # the operator's word wins
        (AdminState.MAINT, True, ServerState.MAINT),
        (AdminState.READY, False, ServerState.DOWN),
    ],
)
def test_state_precedence(admin: AdminState, healthy: bool, expected: ServerState) -> None:
    server = Server("a", "127.0.0.1", 21, admin=admin, healthy=healthy)
    assert server.state is expected


def test_available_requires_up_weight_and_room() -> None:
    server = Server("a", "127.0.0.1", 21, max_connections=2)
    assert server.available()
    server.active = 2
    assert not server.available()
    server.active = 1
    assert server.available()
    server.weight = 0
    assert not server.available()
    server.weight = 1
    server.admin = AdminState.DRAIN
    assert not server.available()


def test_unlimited_connections() -> None:
    server = Server("a", "127.0.0.1", 21, active=10_000)
    assert server.available()


def test_servers_are_identities() -> None:
    a = Server("a", "127.0.0.1", 21)
    b = Server("a", "127.0.0.1", 21)
    assert a != b
    assert len({a, b}) == 2


# --- Round robin --------------------------------------------------------------


def test_roundrobin_even_split_alternates() -> None:
    pool = Pool("p", servers(1, 1))
    names = [pool.pick("10.0.0.1", None).name for _ in range(100)]  # type: ignore[union-attr]
    assert Counter(names) == {"s0": 50, "s1": 50}
    assert all(a != b for a, b in itertools.pairwise(names))


def test_roundrobin_weights_three_to_one() -> None:
    pool = Pool("p", servers(3, 1))
    assert spread(pool, 100) == {"s0": 75, "s1": 25}


def test_roundrobin_is_smooth() -> None:
    # nginx's example: weights 5:1:1 interleave instead of bursting.
    pool = Pool("p", servers(5, 1, 1))
    names = [pool.pick("10.0.0.1", None).name for _ in range(7)]  # type: ignore[union-attr]
    assert names == ["s0", "s0", "s1", "s0", "s2", "s0", "s0"]


def test_weight_zero_gets_nothing() -> None:
    pool = Pool("p", servers(1, 0, 2))
    counts = spread(pool, 90)
    assert counts["s1"] == 0
    assert counts == {"s0": 30, "s2": 60}


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "source", "random", "user"])
def test_strategies_ignore_weight_zero_themselves(balance: str) -> None:
    strategy = make_strategy(balance, random.Random(1))
    only_zero = servers(0, 0)
    assert strategy.pick(only_zero, "10.0.0.1", b"u") is None
    mixed = servers(0, 1)
    for i in range(20):
        assert strategy.pick(mixed, f"10.0.0.{i}", b"user%d" % i) is mixed[1]


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "source", "random", "user"])
def test_strategies_return_none_for_empty(balance: str) -> None:
    assert make_strategy(balance, random.Random(1)).pick([], "10.0.0.1", None) is None


def test_unknown_balance_rejected() -> None:
    expected = (
        "unknown balance 'fastest'; expected one of roundrobin, leastconn, source, random, user"
    )
    with pytest.raises(ValueError) as direct:
        make_strategy("fastest")
    assert str(direct.value) == expected
    with pytest.raises(ValueError) as through_pool:
        Pool("p", servers(1), balance="fastest")
    assert str(through_pool.value) == expected


@pytest.mark.parametrize(
    ("balance", "kind"),
    [
        ("roundrobin", RoundRobin),
        ("leastconn", LeastConn),
        ("source", Source),
        ("random", Random),
        ("user", UserHash),
    ],
)
def test_make_strategy_names(balance: str, kind: type) -> None:
    assert type(make_strategy(balance)) is kind


# --- Least connections --------------------------------------------------------


def test_leastconn_prefers_idle_server() -> None:
    pool = Pool("p", servers(1, 1, 1), balance="leastconn")
    pool.server("s0").active = 3
    pool.server("s2").active = 1
    for _ in range(5):
        assert pool.pick("10.0.0.1", None) is pool.server("s1")


def test_leastconn_counts_per_weight() -> None:
    pool = Pool("p", servers(4, 1), balance="leastconn")
    pool.server("s0").active = 3  # 0.75 per unit of weight
    pool.server("s1").active = 1  # 1.0
    assert pool.pick("10.0.0.1", None) is pool.server("s0")


def test_leastconn_rotates_on_ties() -> None:
    pool = Pool("p", servers(1, 1, 1), balance="leastconn")
    names = [pool.pick("10.0.0.1", None).name for _ in range(6)]  # type: ignore[union-attr]
    assert Counter(names) == {"s0": 2, "s1": 2, "s2": 2}
    assert names[0] != names[1]


def test_leastconn_balances_with_acquire_and_release() -> None:
    pool = Pool("p", servers(1, 2), balance="leastconn")
    taken = []
    for _ in range(30):
        server = pool.pick("10.0.0.1", None)
        assert server is not None
        pool.acquire(server, "10.0.0.1", None)
        taken.append(server)
    assert pool.server("s0").active == 10
    assert pool.server("s1").active == 20
    for server in taken:
        pool.release(server)
    assert all(s.active == 0 for s in pool.servers)
    assert sum(s.total for s in pool.servers) == 30


# --- Consistent hashing -------------------------------------------------------


def clients(n: int) -> list[str]:
    return [f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" for i in range(n)]


def test_source_hash_is_stable() -> None:
    group = servers(1, 1, 1, 1)
    first = Source()
    second = Source()
    for ip in clients(200):
        assert first.pick(group, ip, None) is second.pick(list(reversed(group)), ip, None)


def test_source_hash_spreads_by_weight() -> None:
    group = servers(1, 3)
    counts = Counter(Source().pick(group, ip, None).name for ip in clients(4000))  # type: ignore[union-attr]
    share = counts["s1"] / 4000
    assert 0.70 < share < 0.80


def test_source_removal_moves_only_that_servers_clients() -> None:
    group = servers(1, 2, 1, 1)
    strategy = Source()
    before = {ip: strategy.pick(group, ip, None) for ip in clients(1000)}
    removed = group[1]
    remaining = [s for s in group if s is not removed]
    moved = 0
    for ip, old in before.items():
        new = strategy.pick(remaining, ip, None)
        if old is removed:
            moved += 1
            assert new is not removed
        else:
            assert new is old
    assert moved > 0  # the removed server did own some clients


def test_user_hash_stable_and_moves_only_removed_users() -> None:
    group = servers(1, 1, 1)
    strategy = UserHash()
    users = [b"user%d" % i for i in range(600)]
    before = {u: strategy.pick(group, "10.0.0.1", u) for u in users}
    assert {u: UserHash().pick(group, "10.9.9.9", u) for u in users} == before
    assert len({s.name for s in before.values() if s}) == 3
    remaining = [group[0], group[2]]
    for u, old in before.items():
        new = strategy.pick(remaining, "10.0.0.1", u)
        if old is group[1]:
            assert new in remaining
        else:
            assert new is old


def test_user_hash_accepts_non_utf8_names() -> None:
    group = servers(1, 1)
    strategy = UserHash()
    name = b"\xff\xfeuser"
    assert strategy.pick(group, "10.0.0.1", name) is strategy.pick(group, "10.0.0.2", name)


def test_source_picks_are_pinned() -> None:
    # Every balancer node and every release must send a client to the same
    # server: these picks may only change together with a documented migration.
    group = servers(1, 2, 1, 3)
    picks = " ".join(Source().pick(group, ip, None).name for ip in clients(32))  # type: ignore[union-attr]
    assert picks == (
        "s3 s3 s1 s0 s0 s1 s3 s1 s0 s3 s3 s0 s3 s3 s1 s3 "
        "s3 s2 s3 s3 s3 s3 s3 s3 s3 s3 s3 s1 s3 s0 s1 s3"
    )


def test_user_picks_are_pinned() -> None:
    group = servers(1, 2, 1, 3)
    users = [b"user%d" % i for i in range(32)]
    picks = " ".join(UserHash().pick(group, "10.0.0.1", u).name for u in users)  # type: ignore[union-attr]
    assert picks == (
        "s2 s1 s3 s0 s1 s1 s3 s3 s1 s3 s1 s3 s3 s3 s3 s0 "
        "s3 s1 s3 s2 s3 s1 s0 s3 s3 s0 s3 s3 s1 s3 s2 s1"
    )


def test_user_key_is_apart_from_the_same_text_as_client_ip() -> None:
    # USER "10.0.0.7" hashes as b"user:10.0.0.7", which is the client IP "user:10.0.0.7".
    group = servers(1, 2, 1, 3)
    for i in range(32):
        ip = f"10.0.0.{i}"
        assert UserHash().pick(group, "x", ip.encode()) is Source().pick(group, f"user:{ip}", None)


def test_rendezvous_scores_are_pinned_bit_for_bit() -> None:
    # Picks compare scores; a change of one bit in a score moves a client
    # whose two best servers score almost alike, so the exact floats are pinned.
    digest = hashlib.sha256()
    weighted = servers(1, 2, 3)
    for key in clients(4096):
        for server in weighted:
            digest.update(struct.pack(">d", _rendezvous_score(key.encode(), server)))
    assert digest.hexdigest() == "66d40070e74feb411c7f13fdce70662d135d037b1f0448d70e67137b881f4030"
    assert _rendezvous_score(b"10.0.0.1", servers(1, 2)[1]) == 1.49561759333957


def test_hashing_takes_any_text_even_lone_surrogates() -> None:
    # os.fsdecode and surrogateescape give such text; it must route, not raise.
    surrogate = Server("a\udcff", "127.0.0.1", 21)
    assert _rendezvous_score(b"10.0.0.1", surrogate) == 0.545380431915744
    group = servers(1, 2, 1, 3)
    assert Source().pick(group, "\udcff", None) is group[3]
    assert UserHash().pick(group, "\udcff", None) is group[3]


def test_user_hash_falls_back_to_source() -> None:
    group = servers(1, 1, 1)
    for ip in clients(100):
        assert UserHash().pick(group, ip, None) is Source().pick(group, ip, None)


@settings(max_examples=200)
@given(
    key=st.text(min_size=1, max_size=40),
    weights=st.lists(st.integers(min_value=1, max_value=10), min_size=2, max_size=6),
    drop=st.integers(min_value=0, max_value=5),
)
def test_rendezvous_minimal_disruption_property(key: str, weights: list[int], drop: int) -> None:
    group = servers(*weights)
    strategy = Source()
    before = strategy.pick(group, key, None)
    removed = group[drop % len(group)]
    after = strategy.pick([s for s in group if s is not removed], key, None)
    if before is not removed:
        assert after is before


# --- Random (power of two choices) ---------------------------------------------


def test_random_respects_availability() -> None:
    pool = Pool("p", servers(1, 1, 1, 1), balance="random", rng=random.Random(7))
    pool.server("s0").healthy = False
    pool.server("s1").admin = AdminState.MAINT
    pool.server("s2").max_connections = 1
    pool.server("s2").active = 1
    for _ in range(200):
        assert pool.pick("10.0.0.1", None) is pool.server("s3")


def test_random_prefers_less_loaded_of_two() -> None:
    group = servers(1, 1)
    group[0].active = 5
    strategy = Random(random.Random(3))
    counts = Counter(strategy.pick(group, "10.0.0.1", None).name for _ in range(1000))  # type: ignore[union-attr]
    # s0 only wins when both draws land on it: about a quarter of the time.
    assert 180 < counts["s0"] < 320
    assert counts["s1"] > 680


def test_random_weighted_when_idle() -> None:
    group = servers(1, 9)
    strategy = Random(random.Random(11))
    counts = Counter(strategy.pick(group, "10.0.0.1", None).name for _ in range(2000))  # type: ignore[union-attr]
    assert counts["s1"] > counts["s0"] * 4


def test_random_is_reproducible_with_injected_rng() -> None:
    group = servers(1, 2, 3)
    first = Random(random.Random(5))
    second = Random(random.Random(5))
    assert [first.pick(group, "x", None) for _ in range(50)] == [
        second.pick(group, "x", None) for _ in range(50)
    ]


def test_random_rng_reaches_the_strategy_through_make_strategy_and_pool() -> None:
    group = servers(1, 2, 3)
    reference = Random(random.Random(5))
    expected = [reference.pick(group, "x", None).name for _ in range(40)]  # type: ignore[union-attr]
    made = make_strategy("random", random.Random(5))
    assert [made.pick(group, "x", None).name for _ in range(40)] == expected  # type: ignore[union-attr]
    pool = Pool("p", servers(1, 2, 3), balance="random", rng=random.Random(5))
    assert [pool.pick("x", None).name for _ in range(40)] == expected  # type: ignore[union-attr]


def test_random_without_rng_draws_from_its_own() -> None:
    group = servers(1, 1)
    picks = {Random().pick(group, "x", None).name for _ in range(200)}  # type: ignore[union-attr]
    assert picks == {"s0", "s1"}


# --- Pool filtering -------------------------------------------------------------


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "source", "random", "user"])
def test_down_drain_maint_never_picked(balance: str) -> None:
    pool = Pool("p", servers(1, 1, 1, 1), balance=balance, rng=random.Random(2))
    pool.server("s0").healthy = False
    pool.server("s1").admin = AdminState.DRAIN
    pool.server("s2").admin = AdminState.MAINT
    for ip in clients(100):
        assert pool.pick(ip, b"alice") is pool.server("s3")
    pool.server("s3").admin = AdminState.DRAIN
    assert pool.pick("10.0.0.1", b"alice") is None


@pytest.mark.parametrize("balance", ["roundrobin", "leastconn", "source", "random", "user"])
def test_max_connections_stops_picks(balance: str) -> None:
    pool = Pool("p", servers(1, 1), balance=balance, rng=random.Random(4))
    pool.server("s0").max_connections = 2
    pool.server("s1").max_connections = 1
    picked = []
    for _ in range(3):
        server = pool.pick("10.0.0.1", b"bob")
        assert server is not None
        pool.acquire(server, "10.0.0.1", b"bob")
        picked.append(server.name)
    assert Counter(picked) == {"s0": 2, "s1": 1}
    assert pool.pick("10.0.0.1", b"bob") is None
    pool.release(pool.server("s0"))
    assert pool.pick("10.0.0.1", b"bob") is pool.server("s0")


def test_release_never_below_zero() -> None:
    pool = Pool("p", servers(1))
    server = pool.server("s0")
    pool.release(server)
    assert server.active == 0


def test_acquire_and_release_count_one_session_each() -> None:
    pool = Pool("p", servers(1))
    server = pool.server("s0")
    for _ in range(3):
        pool.acquire(server, "10.0.0.1", None)
    assert (server.active, server.total) == (3, 3)
    pool.release(server)
    assert (server.active, server.total) == (2, 3)
    pool.release(server)
    assert (server.active, server.total) == (1, 3)


def test_pool_keeps_its_name_settings_and_servers() -> None:
    members = servers(1, 2)
    pool = Pool("web", members, balance="leastconn", sticky="source", user_map={"al": "s1"})
    assert (pool.name, pool.balance, pool.sticky) == ("web", "leastconn", "source")
    assert pool.servers == members and pool.servers is not members
    assert pool.user_map == {"al": "s1"}


def test_exclude_redispatches() -> None:
    pool = Pool("p", servers(1, 1, 1), balance="source")
    first = pool.pick("10.0.0.1", None)
    assert first is not None
    second = pool.pick("10.0.0.1", None, exclude={first.name})
    assert second is not None and second is not first
    assert pool.pick("10.0.0.1", None, exclude={s.name for s in pool.servers}) is None


def test_server_lookup() -> None:
    pool = Pool("p", servers(1, 1))
    assert pool.server("s1").port == 2101
    with pytest.raises(KeyError):
        pool.server("nope")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"servers": [Server("a", "h", 1), Server("a", "h", 2)]},
            "pool 'p': duplicate server name 'a'",
        ),
        (
            {"sticky": "cookie"},
            "pool 'p': unknown sticky 'cookie'; expected one of none, source, user",
        ),
        (
            {"user_map": {"alice": "ghost"}},
            "pool 'p': user_map sends 'alice' to unknown server 'ghost'",
        ),
    ],
)
def test_duplicate_names_and_bad_options_rejected(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as error:
        Pool("p", **{"servers": servers(1), **arguments})
    assert str(error.value) == message


def test_needs_user() -> None:
    assert not Pool("p", servers(1)).needs_user
    assert not Pool("p", servers(1), sticky="source").needs_user
    assert Pool("p", servers(1), balance="user").needs_user
    assert Pool("p", servers(1), sticky="user").needs_user
    # A user map only works if the server is chosen after USER.
    assert Pool("p", servers(1), user_map={"alice": "s0"}).needs_user


# --- Stickiness ------------------------------------------------------------------


def test_source_stickiness_holds_within_timeout_and_expires() -> None:
    clock = FakeClock()
    pool = Pool("p", servers(1, 1), sticky="source", sticky_timeout=60, clock=clock)
    first = pool.pick("10.0.0.1", None)
    assert first is not None
    pool.acquire(first, "10.0.0.1", None)
    pool.release(first)
    # Round robin alone would now move on to the other server.
    for _ in range(5):
        clock.now += 59
        assert pool.pick("10.0.0.1", None) is first  # each hit refreshes the expiry
    other_client = pool.pick("10.0.0.2", None)
    assert other_client is not None
    clock.now += 61
    assert pool.stick is not None and pool.stick.get("10.0.0.1") is None
    # Expired: the strategy decides again, and round robin moves on.
    names = {pool.pick("10.0.0.1", None).name for _ in range(2)}  # type: ignore[union-attr]
    assert names == {"s0", "s1"}


def test_default_sticky_timeout_is_an_hour() -> None:
    clock = FakeClock()
    pool = Pool("p", servers(1, 1), sticky="source", clock=clock)
    pool.acquire(pool.server("s1"), "10.0.0.1", None)
    clock.now += 3599.5
    assert pool.stick is not None and pool.stick.get("10.0.0.1") == "s1"
    clock.now += 3600
    assert pool.stick.get("10.0.0.1") is None


def test_user_stickiness_remembers_nothing_before_user() -> None:
    pool = Pool("p", servers(1, 1), sticky="user")
    pool.acquire(pool.server("s1"), "10.0.0.1", None)
    assert pool.stick is not None and len(pool.stick) == 0
    pool.acquire(pool.server("s1"), "10.0.0.1", b"dave")
    assert len(pool.stick) == 1 and pool.stick.get("dave") == "s1"


def test_user_balance_hashes_the_user_through_the_pool() -> None:
    pool = Pool("p", servers(1, 2, 1, 3), balance="user")
    direct = UserHash()
    for i in range(32):
        user = b"user%d" % i
        expected = direct.pick(pool.servers, "10.0.0.1", user)
        assert pool.pick("10.0.0.1", user) is expected


def test_user_stickiness() -> None:
    clock = FakeClock()
    pool = Pool("p", servers(1, 1, 1), sticky="user", sticky_timeout=30, clock=clock)
    server = pool.pick("10.0.0.1", b"carol")
    assert server is not None
    pool.acquire(server, "10.0.0.1", b"carol")
    for ip in clients(10):
        clock.now += 10
        assert pool.pick(ip, b"carol") is server
    clock.now += 31
    assert pool.stick is not None and pool.stick.get("carol") is None


def test_stickiness_skips_unavailable_server() -> None:
    pool = Pool("p", servers(1, 1), sticky="source")
    first = pool.pick("10.0.0.1", None)
    assert first is not None
    pool.acquire(first, "10.0.0.1", None)
    first.healthy = False
    second = pool.pick("10.0.0.1", None)
    assert second is not None and second is not first
    pool.acquire(second, "10.0.0.1", None)
    first.healthy = True
    assert pool.pick("10.0.0.1", None) is second  # re-stuck to the new server


def test_stickiness_respects_exclude() -> None:
    pool = Pool("p", servers(1, 1), sticky="source")
    first = pool.pick("10.0.0.1", None)
    assert first is not None
    pool.acquire(first, "10.0.0.1", None)
    assert pool.pick("10.0.0.1", None, exclude=[first.name]) is not first


def test_no_stickiness_by_default() -> None:
    pool = Pool("p", servers(1, 1))
    assert pool.stick is None
    first = pool.pick("10.0.0.1", None)
    assert first is not None
    pool.acquire(first, "10.0.0.1", None)
    assert pool.pick("10.0.0.1", None) is not first


# --- User map --------------------------------------------------------------------


def test_user_map_routes_named_users() -> None:
    pool = Pool("p", servers(1, 1, 1), user_map={"alice": "s2", "bob": "s0"})
    for _ in range(10):
        assert pool.pick("10.0.0.1", b"alice") is pool.server("s2")
        assert pool.pick("10.0.0.1", b"bob") is pool.server("s0")
    assert {pool.pick("10.0.0.1", b"eve").name for _ in range(3)} == {"s0", "s1", "s2"}  # type: ignore[union-attr]


def test_user_map_falls_back_when_mapped_server_unavailable_or_excluded() -> None:
    pool = Pool("p", servers(1, 1), user_map={"alice": "s1"})
    pool.server("s1").admin = AdminState.MAINT
    assert pool.pick("10.0.0.1", b"alice") is pool.server("s0")
    pool.server("s1").admin = AdminState.READY
    assert pool.pick("10.0.0.1", b"alice", exclude=("s1",)) is pool.server("s0")


def test_user_map_decodes_with_replacement() -> None:
    pool = Pool("p", servers(1, 1), user_map={"\ufffdx": "s1"})
    for _ in range(4):
        assert pool.pick("10.0.0.1", b"\xffx") is pool.server("s1")


def test_user_map_beats_stickiness() -> None:
    pool = Pool("p", servers(1, 1), sticky="source", user_map={"alice": "s1"})
    pool.acquire(pool.server("s0"), "10.0.0.1", None)
    assert pool.pick("10.0.0.1", None) is pool.server("s0")
    assert pool.pick("10.0.0.1", b"alice") is pool.server("s1")


class _TopDigest:
    """A blake2b stand-in whose digest is the largest 64-bit value."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def digest(self) -> bytes:
        return b"\xff" * 8


def test_a_digest_next_to_two_to_the_64_scores_high_instead_of_dividing_by_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # (2**64 - 1 + 1) / (2**64 + 1) rounds to 1.0 as a float, and ln(1.0) is 0.
    monkeypatch.setattr(hashlib, "blake2b", _TopDigest)
    score = _rendezvous_score(b"key", Server("s1", "127.0.0.11", 21, weight=2))
    assert score == 2 / -math.log(math.nextafter(1.0, 0.0))
