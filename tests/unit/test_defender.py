"""The login defender's rules (pure): counting, bans that double, lists, the JSON record."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftplb.balancing import defender as defender_module
from ftplb.balancing.defender import (
    Ban,
    DefenderPolicy,
    DefenderRecord,
    DefenderRecordError,
    Verdict,
    client_address,
    record_from_json,
    record_to_json,
)

T0 = 1_800_000_000.0


def policy(**changes: object) -> DefenderPolicy:
    settings: dict[str, object] = {
        "max_failures": 3,
        "window": 60.0,
        "ban_time": 10.0,
        "ban_time_max": 35.0,
        "allow": (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")),
        "deny": (ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("10.9.0.0/16")),
    }
    settings.update(changes)
    return DefenderPolicy(**settings)  # type: ignore[arg-type]


def fail_times(
    record: DefenderRecord, rules: DefenderPolicy, address: str, *times: float
) -> list[Ban | None]:
    return [record.fail(rules, address, t) for t in times]


# ----------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("::1", "::1"),
    ],
)
def test_client_address_is_canonical_and_unmaps_ipv4(text: str, canonical: str) -> None:
    assert client_address(text) == canonical


def test_client_address_refuses_what_is_not_an_address() -> None:
    with pytest.raises(ValueError):
        client_address("host.example")


# --------------------------------------------------------------------- lists


@pytest.mark.parametrize(
    ("address", "verdict"),
    [
        ("192.0.2.200", Verdict.DENIED),
        ("::ffff:192.0.2.1", Verdict.DENIED),  # IPv4-mapped counts as IPv4
        ("10.9.1.1", Verdict.DENIED),  # deny wins over allow
        ("10.1.2.3", Verdict.ADMIT),
        ("::ffff:10.1.2.3", Verdict.ADMIT),
        ("2001:db8:5::9", Verdict.ADMIT),
    ],
)
def test_lists_decide_before_any_ban(address: str, verdict: Verdict) -> None:
    assert policy().listed(address) is verdict
    assert DefenderRecord().verdict(policy(), address, T0) is verdict


@pytest.mark.parametrize("address", ["198.51.100.1", "2001:db9::1", "::1"])
def test_an_unlisted_address_is_left_to_the_bans(address: str) -> None:
    assert policy().listed(address) is None
    assert DefenderRecord().verdict(policy(), address, T0) is Verdict.ADMIT


def test_listed_addresses_are_never_counted_nor_banned() -> None:
    record = DefenderRecord()
    rules = policy(max_failures=1)
    assert record.fail(rules, "10.1.2.3", T0) is None
    assert record.fail(rules, "192.0.2.1", T0) is None
    assert record == DefenderRecord()


# ------------------------------------------------------------------ counting


def test_a_ban_comes_at_max_failures_within_the_window() -> None:
    record = DefenderRecord()
    rules = policy()
    first, second, third = fail_times(record, rules, "198.51.100.1", T0, T0 + 1, T0 + 2)
    assert (first, second) == (None, None)
    assert record.failures == {}
    assert third == Ban("198.51.100.1", T0 + 2, T0 + 12, 1)
    assert record.verdict(rules, "198.51.100.1", T0 + 11.9) is Verdict.BANNED
    assert record.verdict(rules, "198.51.100.1", T0 + 12) is Verdict.ADMIT
    assert record.verdict(rules, "198.51.100.2", T0 + 3) is Verdict.ADMIT


def test_failures_older_than_the_window_do_not_count() -> None:
    record = DefenderRecord()
    rules = policy()
    results = fail_times(record, rules, "198.51.100.1", T0, T0 + 30, T0 + 60, T0 + 61)
    # At T0 + 60 the first failure is exactly one window old: it has left it.
    assert results == [None, None, None, Ban("198.51.100.1", T0 + 61, T0 + 71, 1)]


def test_failures_are_counted_per_address() -> None:
    record = DefenderRecord()
    rules = policy()
    for address in ("198.51.100.1", "198.51.100.2", "2001:db9::1"):
        assert fail_times(record, rules, address, T0, T0 + 1) == [None, None]
    assert record.failures == {
        "198.51.100.1": (T0, T0 + 1),
        "198.51.100.2": (T0, T0 + 1),
        "2001:db9::1": (T0, T0 + 1),
    }


def test_failures_of_a_banned_address_leave_its_ban_as_it_is() -> None:
    record = DefenderRecord()
    rules = policy()
    ban = fail_times(record, rules, "198.51.100.1", T0, T0, T0)[-1]
    assert fail_times(record, rules, "198.51.100.1", T0 + 1, T0 + 2, T0 + 3) == [None] * 3
    assert record.bans == {"198.51.100.1": ban}
    assert record.failures == {}


# --------------------------------------------------------------- repetition


def test_each_repeat_doubles_the_ban_up_to_the_maximum() -> None:
    record = DefenderRecord()
    rules = policy()
    now = T0
    lengths = []
    for _ in range(4):
        ban = fail_times(record, rules, "198.51.100.1", now, now, now)[-1]
        assert ban is not None
        lengths.append((ban.offence, ban.until - ban.since))
        now = ban.until + 1  # served, and offends again while remembered
    assert lengths == [(1, 10.0), (2, 20.0), (3, 35.0), (4, 35.0)]


def test_a_ban_is_remembered_for_ban_time_max_after_it_ends() -> None:
    record = DefenderRecord()
    rules = policy()
    first = fail_times(record, rules, "198.51.100.1", T0, T0, T0)[-1]
    assert first is not None and first.until == T0 + 10
    # Just inside the memory: the next ban doubles.
    just_in = first.until + 35 - 0.5
    assert fail_times(record, rules, "198.51.100.1", just_in, just_in, just_in)[-1] == Ban(
        "198.51.100.1", just_in, just_in + 20, 2
    )


def test_an_address_out_of_trouble_for_ban_time_max_starts_again() -> None:
    record = DefenderRecord()
    rules = policy()
    first = fail_times(record, rules, "198.51.100.1", T0, T0, T0)[-1]
    assert first is not None
    later = first.until + 35
    assert fail_times(record, rules, "198.51.100.1", later, later, later)[-1] == Ban(
        "198.51.100.1", later, later + 10, 1
    )


def test_ban_duration_stays_finite_for_any_offence() -> None:
    rules = policy(ban_time=1.0, ban_time_max=1e9)
    assert rules.ban_duration(1) == 1.0
    assert rules.ban_duration(11) == 1024.0
    assert rules.ban_duration(10_000) == 1e9


def test_forget_drops_stale_failures_and_forgotten_bans_only() -> None:
    rules = policy()
    record = DefenderRecord(
        failures={"198.51.100.1": (T0,), "198.51.100.2": (T0, T0 + 50)},
        bans={
            "198.51.100.3": Ban("198.51.100.3", T0 - 50, T0 - 5, 1),  # remembered
            "198.51.100.4": Ban("198.51.100.4", T0 - 90, T0 - 36, 1),  # forgotten
        },
    )
    record.forget(rules, T0)
    assert set(record.bans) == {"198.51.100.3"}
    record.forget(rules, T0 + 60)
    assert record.failures == {"198.51.100.2": (T0, T0 + 50)}


# ------------------------------------------------------------ listing, lifting


def test_active_bans_lists_the_bans_in_force_most_recent_first() -> None:
    record = DefenderRecord(
        bans={
            "198.51.100.1": Ban("198.51.100.1", T0, T0 + 10, 1),
            "198.51.100.2": Ban("198.51.100.2", T0 + 5, T0 + 15, 1),
            "198.51.100.3": Ban("198.51.100.3", T0 - 20, T0 - 10, 1),
            "198.51.100.0": Ban("198.51.100.0", T0 + 5, T0 + 15, 1),
        }
    )
    assert [ban.address for ban in record.active_bans(T0 + 1)] == [
        "198.51.100.0",
        "198.51.100.2",
        "198.51.100.1",
    ]


def test_lifting_ends_the_ban_and_forgets_the_offence() -> None:
    record = DefenderRecord()
    rules = policy()
    ban = fail_times(record, rules, "198.51.100.1", T0, T0, T0)[-1]
    fail_times(record, rules, "198.51.100.1", T0 + 1)
    assert record.lift("198.51.100.1", T0 + 1) == ban
    assert record.verdict(rules, "198.51.100.1", T0 + 1) is Verdict.ADMIT
    assert record == DefenderRecord()
    # Its next ban is a first one again.
    assert fail_times(record, rules, "198.51.100.1", T0 + 2, T0 + 2, T0 + 2)[-1] == Ban(
        "198.51.100.1", T0 + 2, T0 + 12, 1
    )


def test_lifting_an_address_without_a_ban_in_force_says_so() -> None:
    record = DefenderRecord(
        failures={"198.51.100.2": (T0,)},
        bans={"198.51.100.1": Ban("198.51.100.1", T0 - 20, T0 - 10, 1)},
    )
    assert record.lift("198.51.100.1", T0) is None
    assert record.bans == {}  # the remembered one is forgotten all the same
    assert record.lift("198.51.100.2", T0) is None
    assert record.failures == {}


# ------------------------------------------------------------------- bounds


def test_the_least_recent_failures_go_first_past_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(defender_module, "MAX_TRACKED", 2)
    record = DefenderRecord()
    rules = policy()
    record.fail(rules, "198.51.100.1", T0 + 2)
    record.fail(rules, "198.51.100.2", T0)
    record.fail(rules, "198.51.100.3", T0 + 1)
    assert set(record.failures) == {"198.51.100.1", "198.51.100.3"}


def test_the_first_bans_to_end_go_first_past_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defender_module, "MAX_BANS", 2)
    record = DefenderRecord(
        bans={
            "198.51.100.1": Ban("198.51.100.1", T0, T0 + 30, 1),
            "198.51.100.2": Ban("198.51.100.2", T0, T0 + 20, 1),
        }
    )
    record.fail(policy(max_failures=1, ban_time=100.0, ban_time_max=200.0), "198.51.100.3", T0)
    assert set(record.bans) == {"198.51.100.1", "198.51.100.3"}


# ---------------------------------------------------------------- the record


def test_the_record_goes_through_json_unchanged() -> None:
    record = DefenderRecord(
        failures={"198.51.100.2": (T0, T0 + 1.5), "2001:db9::1": (T0,)},
        bans={"198.51.100.1": Ban("198.51.100.1", T0, T0 + 10, 2)},
    )
    document = json.loads(json.dumps(record_to_json(record)))
    assert document == {
        "version": 1,
        "failures": {"198.51.100.2": [T0, T0 + 1.5], "2001:db9::1": [T0]},
        "bans": {"198.51.100.1": {"since": T0, "until": T0 + 10, "offence": 2}},
    }
    assert record_from_json(document) == record


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "not a version 1 defender record"),
        ({"version": 2, "failures": {}, "bans": {}}, "not a version 1 defender record"),
        ({"version": 1, "bans": {}}, '"failures" must be an object'),
        ({"version": 1, "failures": {}, "bans": []}, '"bans" must be an object'),
        ({"version": 1, "failures": {"x": [1]}, "bans": {}}, "failures.x: not a canonical"),
        (
            {"version": 1, "failures": {"::ffff:1.2.3.4": [1]}, "bans": {}},
            "failures.::ffff:1.2.3.4: not a canonical",
        ),
        (
            {"version": 1, "failures": {"1.2.3.4": []}, "bans": {}},
            "failures.1.2.3.4 must be a list",
        ),
        ({"version": 1, "failures": {"1.2.3.4": 5}, "bans": {}}, "failures.1.2.3.4 must be a list"),
        (
            {"version": 1, "failures": {"1.2.3.4": ["a"]}, "bans": {}},
            "failures.1.2.3.4: a time must be a number",
        ),
        (
            {"version": 1, "failures": {"1.2.3.4": [True]}, "bans": {}},
            "failures.1.2.3.4: a time must be a number",
        ),
        ({"version": 1, "failures": {}, "bans": {"1.2.3.4": 1}}, "bans.1.2.3.4 must be an object"),
        ({"version": 1, "failures": {"XXXX": [1]}, "bans": {}}, "failures.XXXX: not a canonical"),
        (
            {"version": 1, "failures": {}, "bans": {"1.2.3.04": {}}},
            "bans.1.2.3.04: not a canonical",
        ),
        (
            {"version": 1, "failures": {}, "bans": {"1.2.3.4": {"since": 1, "until": 2}}},
            "bans.1.2.3.4.offence must be a whole number from 1",
        ),
        (
            {
                "version": 1,
                "failures": {},
                "bans": {"1.2.3.4": {"since": 1, "until": 2, "offence": True}},
            },
            "bans.1.2.3.4.offence must be a whole number from 1",
        ),
        (
            {
                "version": 1,
                "failures": {},
                "bans": {"1.2.3.4": {"since": 1, "until": 2, "offence": 0}},
            },
            "bans.1.2.3.4.offence must be a whole number from 1",
        ),
        (
            {
                "version": 1,
                "failures": {},
                "bans": {"1.2.3.4": {"since": None, "until": 2, "offence": 1}},
            },
            "bans.1.2.3.4: a time must be a number",
        ),
        (
            {
                "version": 1,
                "failures": {},
                "bans": {"1.2.3.4": {"since": 1, "until": "2", "offence": 1}},
            },
            "bans.1.2.3.4: a time must be a number",
        ),
    ],
)
def test_a_bad_record_is_refused_naming_the_place(document: object, message: str) -> None:
    with pytest.raises(DefenderRecordError) as raised:
        record_from_json(document)
    assert str(raised.value).startswith(message)


# ------------------------------------------------------------------ properties

ADDRESSES = ("198.51.100.1", "198.51.100.2", "2001:db9::1", "10.1.1.1", "192.0.2.9")


@given(
    st.lists(
        st.tuples(st.sampled_from(ADDRESSES), st.floats(min_value=0.0, max_value=40.0)),
        max_size=60,
    )
)
def test_any_run_of_failures_keeps_the_rules(events: list[tuple[str, float]]) -> None:
    rules = policy()
    record = DefenderRecord()
    now = T0
    counted: dict[str, list[float]] = {}
    for address, step in events:
        now += step
        banned_before = record.ban_of(address, now) is not None
        ban = record.fail(rules, address, now)
        if rules.listed(address) is not None or banned_before:
            assert ban is None
            continue
        counted.setdefault(address, []).append(now)
        recent = [t for t in counted[address] if t > now - rules.window]
        # A ban comes exactly when max_failures fall within the window.
        assert (ban is not None) == (len(recent) >= rules.max_failures)
        if ban is not None:
            counted[address] = []
            length = ban.until - ban.since
            assert length == min(rules.ban_time * 2 ** (ban.offence - 1), rules.ban_time_max)
            assert record.verdict(rules, address, now) is Verdict.BANNED
        assert all(len(times) < rules.max_failures for times in record.failures.values())
        assert record_from_json(json.loads(json.dumps(record_to_json(record)))) == record
