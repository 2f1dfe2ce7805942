"""Per-client limits: the config keys, the pure bookkeeping (counts, the window of new
sessions, token buckets) with an injected clock, and the gate a frontend keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftplb.balancing.client_limits import (
    MIN_BURST,
    RESUME_CHUNK,
    Counts,
    SessionWindow,
    TokenBucket,
    allowance,
    take,
    wait,
)
from ftplb.config.fields import parse_byte_rate
from ftplb.config.limits import ClientLimits, resolve_limits
from ftplb.config.load import ConfigError, config_warnings, load_config, load_config_text
from ftplb.config.schema import TCP_IGNORES_ADVICE
from ftplb.proto.outcomes import EndReason
from ftplb.runtime.client_limits import ClientGate
from tests.config_texts import ONE_SERVER


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("0", 0),
        ("500", 500),
        ("500B", 500),
        ("500KB", 500_000),
        ("2MB", 2_000_000),
        ("2 MB", 2_000_000),
        ("1.5MB", 1_500_000),
        ("1GB", 1_000_000_000),
        ("512KiB", 524_288),
        ("2MiB", 2_097_152),
        ("1GiB", 1_073_741_824),
        (2_000_000, 2_000_000),
        (0, 0),
    ],
)
def test_byte_rates(text: str | int, rate: int) -> None:
    assert parse_byte_rate(text) == rate


@pytest.mark.parametrize(
    "bad", ["", "MB", "-1", "2mb", "2 Mb", "2TB", "2MBps", "0.5", "1e6", -1, True, 2.0, "2000TB"]
)
def test_bad_byte_rates_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="invalid rate"):
        parse_byte_rate(bad)


def test_defaults_and_frontends_default_to_unlimited() -> None:
    config = load_config_text(ONE_SERVER)
    limits = resolve_limits(config.frontends[0], config.defaults)
    assert limits == ClientLimits(0, 0, 0, 0, 0, 0)
    assert not limits.limits_transfers


def test_a_frontend_value_wins_over_the_default_and_zero_is_a_value() -> None:
    text = """
[defaults]
max_sessions_per_ip = 5
max_passive_per_ip = 3
sessions_per_second_per_ip = 10
transfer_rate_per_session = "2MB"
transfer_rate_per_user = "4MB"
transfer_rate_per_ip = "8MB"
""" + ONE_SERVER.replace(
        'backend = "pool"',
        'backend = "pool"\nmax_sessions_per_ip = 0\ntransfer_rate_per_user = "1MiB"',
    )
    config = load_config_text(text)
    assert config.frontends[0].max_passive_per_ip is None
    assert resolve_limits(config.frontends[0], config.defaults) == ClientLimits(
        max_sessions_per_ip=0,
        max_passive_per_ip=3,
        sessions_per_second_per_ip=10,
        transfer_rate_per_session=2_000_000,
        transfer_rate_per_user=1_048_576,
        transfer_rate_per_ip=8_000_000,
    )


def test_limits_survive_the_round_trip_that_workers_read() -> None:
    text = '[defaults]\ntransfer_rate_per_ip = "3MB"\n' + ONE_SERVER.replace(
        'backend = "pool"', 'backend = "pool"\ntransfer_rate_per_session = "1KiB"'
    )
    config = load_config_text(text)
    again = type(config).model_validate_json(config.model_dump_json())
    assert again == config
    assert again.frontends[0].transfer_rate_per_session == 1024


@pytest.mark.parametrize(
    ("line", "where", "message"),
    [
        (
            'transfer_rate_per_user = "fast"',
            "transfer_rate_per_user",
            'invalid rate "fast": expected bytes per second',
        ),
        ("max_sessions_per_ip = -1", "max_sessions_per_ip", "greater than or equal to 0"),
        ("sessions_per_second_per_ip = 20000", "sessions_per_second_per_ip", "10000"),
    ],
)
def test_a_bad_limit_names_file_line_and_key(
    tmp_path: Path, line: str, where: str, message: str
) -> None:
    path = tmp_path / "ftplb.toml"
    path.write_text(ONE_SERVER.replace('backend = "pool"', f'backend = "pool"\n{line}'))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    [problem] = raised.value.problems
    assert problem.startswith(f"{path}:6: frontends[0].{where}: ")
    assert message in problem


# ------------------------------------------------------------------ counts


def test_counts_refuse_at_the_cap_and_forget_an_empty_key() -> None:
    counts: Counts[str] = Counts(2)
    assert counts.acquire("a") and counts.acquire("a")
    assert not counts.acquire("a")
    assert counts.count("a") == 2
    assert counts.acquire("b")
    counts.release("a")
    assert counts.acquire("a")
    counts.release("a")
    counts.release("a")
    counts.release("b")
    assert len(counts) == 0
    counts.release("never")  # releasing what is not held changes nothing
    assert len(counts) == 0 and counts.count("never") == 0


def test_counts_without_a_cap_count_on() -> None:
    counts: Counts[str] = Counts(0)
    for _ in range(1000):
        assert counts.acquire("a")
    assert counts.count("a") == 1000


# ------------------------------------------------------------------ window


def test_window_admits_exactly_the_limit_within_one_second() -> None:
    clock = Clock()
    window: SessionWindow[str] = SessionWindow(3, clock)
    assert [window.admit("a") for _ in range(4)] == [True, True, True, False]
    assert window.admit("b")  # another address is unaffected
    clock.advance(0.999)
    assert not window.admit("a")
    clock.advance(0.001)  # the first three are a second old now
    assert [window.admit("a") for _ in range(4)] == [True, True, True, False]


def test_window_slides_one_session_at_a_time() -> None:
    clock = Clock()
    window: SessionWindow[str] = SessionWindow(2, clock)
    assert window.admit("a")
    clock.advance(0.5)
    assert window.admit("a")
    assert not window.admit("a")
    clock.advance(0.5)  # the first leaves the window, the second stays
    assert window.admit("a")
    assert not window.admit("a")


def test_refused_sessions_are_not_recorded() -> None:
    clock = Clock()
    window: SessionWindow[str] = SessionWindow(1, clock)
    assert window.admit("a")
    for _ in range(15):
        clock.advance(0.0625)
        assert not window.admit("a")
    clock.advance(0.0625)  # one second after the admitted one, whatever was refused since
    assert window.admit("a")


def test_window_forgets_quiet_addresses() -> None:
    clock = Clock()
    window: SessionWindow[str] = SessionWindow(5, clock)
    for number in range(100):
        assert window.admit(f"10.0.0.{number}")
    assert len(window) == 100
    clock.advance(1.0)
    assert window.admit("10.0.1.1")  # the sweep runs once a second, on a new session
    assert len(window) == 1


def test_window_keeps_an_address_seen_within_the_second() -> None:
    clock = Clock()
    window: SessionWindow[str] = SessionWindow(1, clock)
    assert window.admit("old")
    clock.advance(0.5)
    assert window.admit("recent")
    clock.advance(0.6)
    assert window.admit("new")
    assert len(window) == 2  # "old" went, "recent" is 0.6 s old
    assert not window.admit("recent")  # still within its second: refused


def test_window_sweeps_once_a_second_not_on_every_session() -> None:
    clock = Clock(10.0)
    window: SessionWindow[str] = SessionWindow(1, clock)
    assert window.admit("old")
    clock.advance(0.5)
    assert window.admit("b")
    clock.advance(0.5)
    assert window.admit("c")  # a second since the start: the sweep takes "old"
    assert len(window) == 2
    clock.advance(0.625)
    assert window.admit("d")  # "b" is stale now, but the next sweep is not due
    assert len(window) == 3


def test_window_without_a_limit_remembers_nothing() -> None:
    window: SessionWindow[str] = SessionWindow(0, Clock())
    assert all(window.admit("a") for _ in range(1000))
    assert len(window) == 0


# ------------------------------------------------------------------ bucket


def test_bucket_starts_full_with_a_quarter_second_of_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(2_000_000, clock)
    assert bucket.capacity == 500_000
    assert bucket.available() == 500_000


def test_bucket_holds_at_least_the_minimum_burst() -> None:
    bucket = TokenBucket(1000, Clock())
    assert bucket.capacity == MIN_BURST
    assert TokenBucket(1, Clock()).capacity == MIN_BURST  # one byte a second is a rate
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0, Clock())


def test_bucket_capacity_is_whole_bytes() -> None:
    assert TokenBucket(2_000_002, Clock()).capacity == 500_000


def test_bucket_refills_at_its_rate_up_to_its_capacity() -> None:
    clock = Clock()
    bucket = TokenBucket(1_000_000, clock)
    bucket.take(250_000)
    assert bucket.available() == 0
    clock.advance(0.125)
    assert bucket.available() == 125_000
    clock.advance(10)
    assert bucket.available() == 250_000


def test_a_debt_is_paid_before_tokens_show() -> None:
    clock = Clock()
    bucket = TokenBucket(1_000_000, clock)
    bucket.take(375_000)  # 125,000 more than it held
    assert bucket.available() == 0
    clock.advance(0.0625)
    assert bucket.available() == 0
    clock.advance(0.125)
    assert bucket.available() == 62_500


def test_wait_is_the_time_to_refill_one_chunk() -> None:
    clock = Clock()
    bucket = TokenBucket(1_000_000, clock)
    assert wait([bucket]) == 0.0
    bucket.take(250_000)
    assert wait([bucket]) == pytest.approx(RESUME_CHUNK / 1_000_000)
    slow = TokenBucket(1000, clock)  # a second of its rate is less than a chunk
    slow.take(MIN_BURST)
    assert slow.wait() == pytest.approx(1.0)
    clock.advance(0.25)
    assert slow.wait() == pytest.approx(0.75)
    small = TokenBucket(10_000, clock)  # holds less than a second's worth: waits until full
    small.take(MIN_BURST)
    assert small.wait() == pytest.approx(MIN_BURST / 10_000)


def test_the_strictest_bucket_sets_the_allowance_and_all_pay() -> None:
    clock = Clock()
    fast, slow = TokenBucket(4_000_000, clock), TokenBucket(1_000_000, clock)
    assert allowance([fast, slow], 10**9) == 250_000
    assert allowance([fast, slow], 1000) == 1000
    assert allowance([], 1000) == 1000
    take([fast, slow], 250_000)
    assert (fast.available(), slow.available()) == (750_000, 0)
    assert allowance([fast, slow], 10**9) == 0
    assert wait([fast, slow]) == pytest.approx(RESUME_CHUNK / 1_000_000)
    assert wait([]) == 0.0


def test_a_paced_transfer_moves_at_the_rate_over_time() -> None:
    """A relay's loop in miniature: take what is allowed, wait when empty."""
    clock = Clock()
    bucket = TokenBucket(2_000_000, clock)
    moved = 0
    for _ in range(100_000):
        if moved >= 20_000_000:
            break
        allowed = allowance([bucket], 1 << 20)
        if allowed == 0:
            clock.advance(wait([bucket]))
            continue
        take([bucket], allowed)
        moved += allowed
    elapsed = clock.now
    # The first quarter second comes from the full bucket.
    assert elapsed == pytest.approx((20_000_000 - 500_000) / 2_000_000, rel=0.01)


# -------------------------------------------------------------------- gate


def test_gate_refuses_sessions_past_the_per_address_count() -> None:
    gate = ClientGate(ClientLimits(max_sessions_per_ip=2), Clock())
    assert gate.admit("a") is None and gate.admit("a") is None
    assert gate.admit("a") is EndReason.SESSIONS_PER_IP
    assert gate.admit("b") is None
    gate.session_ended("a")
    assert gate.sessions_of("a") == 1
    assert gate.admit("a") is None


def test_gate_refuses_sessions_past_the_rate_and_does_not_count_them() -> None:
    clock = Clock()
    gate = ClientGate(ClientLimits(max_sessions_per_ip=5, sessions_per_second_per_ip=2), clock)
    assert gate.admit("a") is None and gate.admit("a") is None
    assert gate.admit("a") is EndReason.SESSION_RATE
    assert gate.sessions_of("a") == 2
    clock.advance(1)
    assert gate.admit("a") is None


def test_gate_counts_passive_listeners_per_address() -> None:
    gate = ClientGate(ClientLimits(max_passive_per_ip=1), Clock())
    assert gate.open_passive("a")
    assert not gate.open_passive("a")
    assert gate.open_passive("b")
    gate.close_passive("a")
    assert gate.passive_of("a") == 0
    assert gate.open_passive("a")


def test_gate_without_rate_limits_paces_nothing() -> None:
    gate = ClientGate(ClientLimits(max_sessions_per_ip=1), Clock())
    assert gate.session_bucket() is None
    assert gate.pace("a", b"alice", None) is None


def test_transfers_of_one_user_share_a_bucket_and_it_goes_with_the_last() -> None:
    clock = Clock()
    gate = ClientGate(ClientLimits(transfer_rate_per_user=1_000_000), clock)
    first = gate.pace("10.0.0.1", b"alice", None)
    second = gate.pace("10.0.0.2", b"alice", None)
    other = gate.pace("10.0.0.1", b"bob", None)
    assert first is not None and second is not None and other is not None
    assert first.buckets == second.buckets
    assert first.buckets[0] is not other.buckets[0]
    first.release()
    first.release()  # idempotent: the second transfer still holds the bucket
    assert gate.tracked == 2
    second.release()
    other.release()
    assert gate.tracked == 0


def test_a_transfer_gets_every_bucket_that_applies() -> None:
    clock = Clock()
    gate = ClientGate(
        ClientLimits(
            transfer_rate_per_session=1_000_000,
            transfer_rate_per_user=2_000_000,
            transfer_rate_per_ip=3_000_000,
        ),
        clock,
    )
    session = gate.session_bucket()
    assert session is not None and session.rate == 1_000_000
    pace = gate.pace("10.0.0.1", b"alice", session)
    assert pace is not None
    assert [bucket.rate for bucket in pace.buckets] == [1_000_000, 2_000_000, 3_000_000]
    same_ip = gate.pace("10.0.0.1", None, None)  # no USER: shares the address's bucket only
    assert same_ip is not None and same_ip.buckets == (pace.buckets[2],)
    pace.release()
    same_ip.release()
    assert gate.tracked == 0


def test_gate_memory_follows_the_clients_present() -> None:
    clock = Clock()
    gate = ClientGate(
        ClientLimits(max_sessions_per_ip=3, max_passive_per_ip=3, sessions_per_second_per_ip=3),
        clock,
    )
    for number in range(1000):
        address = f"10.0.{number // 256}.{number % 256}"
        assert gate.admit(address) is None
        assert gate.open_passive(address)
        gate.close_passive(address)
        gate.session_ended(address)
    assert gate.tracked == 1000  # the window remembers the last second's addresses
    clock.advance(1)
    assert gate.admit("10.9.9.9") is None
    assert gate.tracked == 2  # the new address, counted in sessions and in the window


def test_check_warns_of_limits_a_tcp_frontend_ignores(tmp_path: Path) -> None:
    text = """\
[defaults]
transfer_rate_per_ip = "1MB"

[[frontends]]
name = "tcp"
bind = ["127.0.0.1:2121"]
mode = "tcp"
backend = "pool"
max_sessions_per_ip = 3
transfer_rate_per_user = "1MB"
max_passive_per_ip = 0

[[backends]]
name = "pool"

[[backends.servers]]
name = "s1"
address = "127.0.0.11:21"
passive_ports = "50000-50009"
"""
    path = tmp_path / "ftplb.toml"
    path.write_text(text)
    # Only what the frontend sets itself: the default is for its ftp siblings.
    assert config_warnings(path) == [
        f"{path}:10: frontends[0].transfer_rate_per_user: warning: {TCP_IGNORES_ADVICE}"
    ]
