"""The defender's stores and its runtime face: refusals, counting, the log lines, bad files."""

from __future__ import annotations

import io
import ipaddress
import json
from pathlib import Path

import pytest

from ftplb.balancing.defender import Ban, DefenderPolicy, DefenderRecord
from ftplb.proto.outcomes import EndReason
from ftplb.runtime.defender import (
    FILENAME,
    Defender,
    DefenderStore,
    FileStore,
    MemoryStore,
    StoreError,
    active_bans,
    lift_ban,
)
from ftplb.runtime.logs import EventLog

T0 = 1_800_000_000.0
POLICY = DefenderPolicy(
    max_failures=2,
    window=60.0,
    ban_time=10.0,
    ban_time_max=100.0,
    allow=(ipaddress.ip_network("10.0.0.0/8"),),
    deny=(ipaddress.ip_network("192.0.2.0/24"),),
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def defender_over(store: DefenderStore) -> tuple[Defender, Clock, io.StringIO, list[str]]:
    stream = io.StringIO()
    log = EventLog("json", stream)
    notified: list[str] = []
    log.add_observer(lambda kind, fields: notified.append(kind))
    clock = Clock()
    return Defender(POLICY, store, log, clock), clock, stream, notified


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> DefenderStore:
    return MemoryStore() if request.param == "memory" else FileStore(str(tmp_path))


def test_failures_ban_the_address_and_the_ban_is_logged_and_counted(
    store: DefenderStore,
) -> None:
    defender, clock, stream, notified = defender_over(store)
    assert defender.refusal("198.51.100.7") is None
    assert defender.failed_login("198.51.100.7", frontend="ftp", session="s-1") is False
    clock.now += 1
    assert defender.failed_login("::ffff:198.51.100.7", frontend="ftp", session="s-2") is True
    assert defender.refusal("198.51.100.7") is EndReason.BANNED
    assert defender.refusal("::ffff:198.51.100.7") is EndReason.BANNED
    assert defender.refusal("198.51.100.8") is None
    (line,) = lines(stream)
    assert {k: line[k] for k in ("warning", "frontend", "session", "client")} == {
        "warning": "client_banned",
        "frontend": "ftp",
        "session": "s-2",
        "client": "198.51.100.7",
    }
    assert (line["failures"], line["offence"], line["ban_time"]) == (2, 1, 10.0)
    assert line["until"] == "2027-01-15T08:00:11Z"
    assert notified.count("defender_failure") == 2
    # A failure of a session it opened before its ban: banned, but not counted again.
    assert defender.failed_login("198.51.100.7", frontend="ftp", session="s-0") is True
    assert notified.count("defender_failure") == 2
    assert len(lines(stream)) == 1
    clock.now += 10
    assert defender.refusal("198.51.100.7") is None
    assert [ban.address for ban in active_bans(store, clock)] == []


def test_listed_addresses_are_refused_or_let_be_without_a_look_at_the_store(
    tmp_path: Path,
) -> None:
    (tmp_path / FILENAME).write_text("not json")
    defender, _, stream, notified = defender_over(FileStore(str(tmp_path)))
    assert defender.refusal("192.0.2.1") is EndReason.DENIED
    assert defender.refusal("::ffff:192.0.2.1") is EndReason.DENIED
    assert defender.refusal("10.1.1.1") is None
    assert defender.failed_login("10.1.1.1", frontend="ftp", session="-") is False
    assert defender.failed_login("192.0.2.1", frontend="ftp", session="-") is False
    assert stream.getvalue() == "" and notified == []


def test_what_is_not_an_address_is_neither_refused_nor_counted(store: DefenderStore) -> None:
    defender, _, stream, notified = defender_over(store)
    assert defender.refusal("not-an-address") is None
    assert defender.failed_login("not-an-address", frontend="ftp", session="-") is False
    assert stream.getvalue() == "" and notified == []


def test_lifting_a_ban_and_listing_the_bans(store: DefenderStore) -> None:
    defender, clock, _, _ = defender_over(store)
    for address in ("198.51.100.7", "2001:db8::7"):
        defender.failed_login(address, frontend="ftp", session="-")
        defender.failed_login(address, frontend="ftp", session="-")
        clock.now += 1
    assert [ban.address for ban in active_bans(store, clock)] == ["2001:db8::7", "198.51.100.7"]
    assert lift_ban(store, "2001:DB8::7", clock) == Ban("2001:db8::7", T0 + 1, T0 + 11, 1)
    assert lift_ban(store, "2001:db8::7", clock) is None
    assert defender.refusal("2001:db8::7") is None
    with pytest.raises(ValueError):
        lift_ban(store, "nobody", clock)


def test_an_unreadable_file_admits_and_warns_then_a_failure_replaces_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / FILENAME
    path.write_text('{"version": 1, "failures": {}, "bans": 7}')
    store = FileStore(str(tmp_path))
    defender, _, stream, _ = defender_over(store)
    assert defender.refusal("198.51.100.7") is None
    (line,) = lines(stream)
    assert line["warning"] == "defender_unreadable"
    assert line["reason"] == f'{path}: "bans" must be an object'
    with pytest.raises(StoreError):
        active_bans(store)
    assert defender.failed_login("198.51.100.7", frontend="ftp", session="-") is False
    assert json.loads(path.read_text())["failures"] == {"198.51.100.7": [T0]}


def test_a_store_that_cannot_be_written_warns_and_counts_nothing(tmp_path: Path) -> None:
    defender, _, stream, notified = defender_over(FileStore(str(tmp_path / "gone")))
    assert defender.refusal("198.51.100.7") is None
    assert defender.failed_login("198.51.100.7", frontend="ftp", session="-") is False
    (line,) = lines(stream)
    assert line["warning"] == "defender_unreadable"
    assert "No such file or directory" in str(line["reason"])
    assert "defender_failure" not in notified


def test_a_file_store_reads_again_only_a_replaced_file(tmp_path: Path) -> None:
    reader, writer = FileStore(str(tmp_path)), FileStore(str(tmp_path))
    first = reader.read()
    assert first == DefenderRecord()
    writer.change(lambda record: record.fail(POLICY, "198.51.100.7", T0))
    second = reader.read()
    assert second.failures == {"198.51.100.7": (T0,)}
    assert reader.read() is second  # unchanged file: the record read before
    (tmp_path / FILENAME).unlink()
    assert reader.read() == DefenderRecord()
