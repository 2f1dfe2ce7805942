"""``workers = N``: port slices, limit shares, the worker's share of a config, config keys."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftplb.config.fields import PortRange
from ftplb.config.load import ConfigError, load_config, load_config_text
from ftplb.config.workers import WorkerSlot, divide_limit, slice_range, worker_share

CONFIG = """\
[defaults]
workers = {workers}
max_connections = {global_limit}

[[frontends]]
name = "ftp"
bind = ["127.0.0.1:2121"]
backend = "pool"
passive_ports = "{ports}"
max_connections = 7

[[frontends]]
name = "relay"
mode = "tcp"
bind = ["127.0.0.1:2122"]
backend = "tcp-pool"

[[backends]]
name = "pool"

[[backends.servers]]
name = "s1"
address = "127.0.0.11:21"
max_connections = 5

[[backends]]
name = "tcp-pool"
sticky = "source"

[[backends.servers]]
name = "t1"
address = "127.0.0.21:21"
passive_ports = "50000-50009"
"""


def config_text(workers: int = 2, ports: str = "40000-40099", global_limit: int = 10) -> str:
    return CONFIG.format(workers=workers, ports=ports, global_limit=global_limit)


# --------------------------------------------------------------------------
# Port slices
# --------------------------------------------------------------------------


@st.composite
def ranges_and_workers(draw: st.DrawFn) -> tuple[PortRange, int]:
    first = draw(st.integers(1024, 65535))
    last = draw(st.integers(first, 65535))
    workers = draw(st.integers(1, min(64, last - first + 1)))
    return PortRange(first, last), workers


@given(ranges_and_workers())
def test_slices_are_disjoint_contiguous_and_cover_the_range(case: tuple[PortRange, int]) -> None:
    ports, workers = case
    slices = [slice_range(ports, WorkerSlot(i, workers)) for i in range(workers)]
    covered: list[int] = []
    for piece in slices:
        assert piece.count >= 1
        covered += list(piece)
    # Every port of the range exactly once, in order: disjoint and covering.
    assert covered == list(ports)
    sizes = [piece.count for piece in slices]
    assert max(sizes) - min(sizes) <= 1


def test_slice_of_a_small_example() -> None:
    ports = PortRange(40000, 40009)
    assert [str(slice_range(ports, WorkerSlot(i, 3))) for i in range(3)] == [
        "40000-40002",
        "40003-40005",
        "40006-40009",
    ]


def test_a_range_smaller_than_the_worker_count_cannot_be_sliced() -> None:
    with pytest.raises(ValueError, match="fewer ports"):
        slice_range(PortRange(40000, 40001), WorkerSlot(0, 3))


@pytest.mark.parametrize("text", ["1/0", "2/2", "a/2", "1", "-1/2", "1/2/3"])
def test_invalid_worker_slots(text: str) -> None:
    with pytest.raises(ValueError):
        WorkerSlot.parse(text)


def test_worker_slot_round_trips_through_its_command_line_form() -> None:
    assert WorkerSlot.parse("3/8") == WorkerSlot(3, 8)
    assert str(WorkerSlot(3, 8)) == "3/8"


# --------------------------------------------------------------------------
# Limit shares
# --------------------------------------------------------------------------


@given(st.integers(1, 100_000), st.integers(1, 64))
def test_limit_shares_round_up_and_hold_the_whole(limit: int, workers: int) -> None:
    share = divide_limit(limit, workers)
    assert share * workers >= limit  # no worker is starved below its part
    assert (share - 1) * workers < limit  # the smallest share that does it


def test_unlimited_stays_unlimited() -> None:
    assert divide_limit(0, 4) == 0


# --------------------------------------------------------------------------
# A worker's share of a whole configuration
# --------------------------------------------------------------------------


def test_worker_share_slices_frontend_ranges_and_divides_limits() -> None:
    config = load_config_text(config_text(workers=3))
    shares = [worker_share(config, WorkerSlot(i, 3)) for i in range(3)]
    assert [str(s.frontends[0].passive_ports) for s in shares] == [
        "40000-40032",
        "40033-40065",
        "40066-40099",
    ]
    for share in shares:
        assert share.defaults.max_connections == 4  # 10 / 3, rounded up
        assert share.frontends[0].max_connections == 3  # 7 / 3
        assert share.backends[0].servers[0].max_connections == 2  # 5 / 3
        # A tcp-mode server's range is listened on whole by every worker.
        assert share.backends[1].servers[0].passive_ports == PortRange(50000, 50009)
        assert share.backends[1].servers[0].max_connections == 0
        # Everything else is untouched.
        assert share.frontends[1] == config.frontends[1]
        assert share.backends[0].name == config.backends[0].name


def test_per_client_limits_are_not_divided() -> None:
    # One address always reaches one worker: each worker counts all of it.
    text = config_text(workers=3).replace(
        "[defaults]",
        "[defaults]\nmax_sessions_per_ip = 5\nsessions_per_second_per_ip = 2\n"
        'transfer_rate_per_ip = "3MB"',
    )
    config = load_config_text(text)
    assert config.defaults.max_sessions_per_ip == 5
    for index in range(3):
        share = worker_share(config, WorkerSlot(index, 3)).defaults
        assert share.max_sessions_per_ip == 5
        assert share.sessions_per_second_per_ip == 2
        assert share.transfer_rate_per_ip == 3_000_000


def test_a_single_worker_serves_the_config_as_it_is() -> None:
    config = load_config_text(config_text(workers=1))
    assert worker_share(config, WorkerSlot(0, 1)) is config


# --------------------------------------------------------------------------
# Config keys
# --------------------------------------------------------------------------


def test_workers_defaults_to_one() -> None:
    text = config_text().replace("workers = 2\n", "")
    assert load_config_text(text).defaults.workers == 1


@pytest.mark.parametrize("workers", [1, 2, 64])
def test_valid_worker_counts(workers: int) -> None:
    assert load_config_text(config_text(workers=workers)).defaults.workers == workers


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "Input should be greater than or equal to 1"),
        ("65", "Input should be less than or equal to 64"),
        ('"2"', "Input should be a valid integer"),
    ],
)
def test_invalid_worker_counts_name_the_key(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "ftplb.toml"
    path.write_text(config_text().replace("workers = 2", f"workers = {value}"))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.problems == [f"{path}:2: defaults.workers: {message}"]


def test_a_passive_range_smaller_than_the_worker_count_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ftplb.toml"
    path.write_text(textwrap.dedent(config_text(workers=4, ports="40000-40002")))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert raised.value.problems == [
        f"{path}:9: frontends[0].passive_ports: range 40000-40002 has 3 ports, fewer than "
        "defaults.workers = 4: each worker needs a slice of its own"
    ]


def test_a_passive_range_as_large_as_the_worker_count_is_enough() -> None:
    config = load_config_text(config_text(workers=3, ports="40000-40002"))
    shares = [worker_share(config, WorkerSlot(i, 3)).frontends[0].passive_ports for i in range(3)]
    assert shares == [PortRange(40000 + i, 40000 + i) for i in range(3)]
