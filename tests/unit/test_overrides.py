"""Runtime overrides (pure): laying them onto pools, and their JSON form."""

from __future__ import annotations

import pytest

from ftplb.balancing.overrides import (
    Override,
    OverrideError,
    apply_overrides,
    overrides_from_json,
    overrides_to_json,
)
from ftplb.balancing.pool import Pool
from ftplb.balancing.state import AdminState, Server


def pools() -> dict[str, Pool]:
    return {
        "pool": Pool(
            "pool",
            [
                Server("s1", "127.0.0.11", 21, weight=2),
                Server("s2", "127.0.0.12", 21, weight=3),
            ],
        ),
        "spare": Pool("spare", [Server("s1", "127.0.0.13", 21, weight=1)]),
    }


def settings(the_pools: dict[str, Pool]) -> dict[tuple[str, str], tuple[AdminState, int, int]]:
    """(admin, weight, configured weight) of every server."""
    return {
        (pool.name, server.name): (server.admin, server.weight, server.configured_weight)
        for pool in the_pools.values()
        for server in pool.servers
    }


def test_apply_sets_admin_states_and_runtime_weights_of_the_named_servers_only() -> None:
    the_pools = pools()
    apply_overrides(
        the_pools,
        {
            ("pool", "s1"): Override(AdminState.DRAIN, user="ops"),
            ("pool", "s2"): Override(AdminState.READY, weight=7, configured_weight=3),
            ("spare", "s1"): Override(AdminState.MAINT, weight=0, configured_weight=1),
            ("gone", "s9"): Override(AdminState.MAINT),  # no such pool: ignored
        },
    )
    assert settings(the_pools) == {
        ("pool", "s1"): (AdminState.DRAIN, 2, 2),
        ("pool", "s2"): (AdminState.READY, 7, 3),
        ("spare", "s1"): (AdminState.MAINT, 0, 1),
    }


def test_a_server_left_out_of_the_record_is_ready_at_its_configured_weight() -> None:
    the_pools = pools()
    apply_overrides(
        the_pools, {("pool", "s2"): Override(AdminState.MAINT, weight=9, configured_weight=3)}
    )
    apply_overrides(the_pools, {})
    assert settings(the_pools) == {
        ("pool", "s1"): (AdminState.READY, 2, 2),
        ("pool", "s2"): (AdminState.READY, 3, 3),
        ("spare", "s1"): (AdminState.READY, 1, 1),
    }


def test_a_runtime_weight_holds_only_against_the_configured_weight_it_was_set_against() -> None:
    # Set at 9 while the file said 3; the file now says 5 (edited, reloaded):
    # the file's new weight wins, and the admin state stays.
    the_pools = pools()
    the_pools["pool"].server("s2").configured_weight = 5
    apply_overrides(
        the_pools, {("pool", "s2"): Override(AdminState.DRAIN, weight=9, configured_weight=3)}
    )
    assert settings(the_pools)[("pool", "s2")] == (AdminState.DRAIN, 5, 5)
    # Once the file says 3 again, the runtime weight is back in force.
    the_pools["pool"].server("s2").configured_weight = 3
    apply_overrides(
        the_pools, {("pool", "s2"): Override(AdminState.DRAIN, weight=9, configured_weight=3)}
    )
    assert settings(the_pools)[("pool", "s2")] == (AdminState.DRAIN, 9, 3)


@pytest.mark.parametrize(
    ("override", "configured", "expected"),
    [
        (Override(), 4, 4),
        (Override(weight=7, configured_weight=4), 4, 7),
        (Override(weight=0, configured_weight=4), 4, 0),
        (Override(weight=7, configured_weight=4), 5, 5),
        (Override(weight=None, configured_weight=4), 4, 4),
        (Override(weight=7, configured_weight=None), 4, 4),
    ],
)
def test_effective_weight(override: Override, configured: int, expected: int) -> None:
    assert override.effective_weight(configured) == expected


def test_json_form_is_exact_and_sorted() -> None:
    overrides = {
        ("pool", "s2"): Override(AdminState.READY, weight=7, configured_weight=3, user="bob"),
        ("pool", "s1"): Override(AdminState.DRAIN, user="ops"),
        ("alpha", "x"): Override(AdminState.MAINT),
    }
    document = overrides_to_json(overrides)
    assert document == {
        "version": 1,
        "servers": {
            "alpha": {
                "x": {"admin": "MAINT", "weight": None, "configured_weight": None, "user": ""}
            },
            "pool": {
                "s1": {"admin": "DRAIN", "weight": None, "configured_weight": None, "user": "ops"},
                "s2": {"admin": "READY", "weight": 7, "configured_weight": 3, "user": "bob"},
            },
        },
    }
    assert list(document["servers"]) == ["alpha", "pool"]  # type: ignore[call-overload]
    assert overrides_from_json(document) == overrides


def test_json_reading_fills_in_the_defaults() -> None:
    assert overrides_from_json({"version": 1, "servers": {"pool": {"s1": {}}}}) == {
        ("pool", "s1"): Override(AdminState.READY, None, None, "")
    }


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "not a version 1 server overrides document"),
        ({"version": 2, "servers": {}}, "not a version 1 server overrides document"),
        ({"version": 1}, '"servers" must be an object'),
        ({"version": 1, "servers": {"pool": []}}, "servers.pool must be an object"),
        ({"version": 1, "servers": {"pool": {"s1": 3}}}, "servers.pool.s1 must be an object"),
        (
            {"version": 1, "servers": {"pool": {"s1": {"admin": "UP"}}}},
            "servers.pool.s1.admin: 'UP' is not a valid AdminState",
        ),
        (
            {"version": 1, "servers": {"pool": {"s1": {"weight": 257}}}},
            "servers.pool.s1.weight must be a whole number from 0 to 256",
        ),
        (
            {"version": 1, "servers": {"pool": {"s1": {"weight": True}}}},
            "servers.pool.s1.weight must be a whole number from 0 to 256",
        ),
        (
            {"version": 1, "servers": {"pool": {"s1": {"configured_weight": -1}}}},
            "servers.pool.s1.configured_weight must be a whole number from 0 to 256",
        ),
        (
            {"version": 1, "servers": {"pool": {"s1": {"user": 5}}}},
            "servers.pool.s1.user must be text",
        ),
    ],
)
def test_json_reading_refuses_bad_documents(document: object, message: str) -> None:
    with pytest.raises(OverrideError) as caught:
        overrides_from_json(document)
    assert str(caught.value) == message


def test_json_reading_takes_weights_at_the_limits() -> None:
    document = {
        "version": 1,
        "servers": {"pool": {"s1": {"weight": 0, "configured_weight": 256}}},
    }
    assert overrides_from_json(document) == {
        ("pool", "s1"): Override(weight=0, configured_weight=256)
    }
