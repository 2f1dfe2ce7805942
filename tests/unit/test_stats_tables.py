"""The stats tables: how values read, and the page's header, server rows and transfers."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from rich.console import Console

from ftplb.admin.page_tables import backend_table, process_facts, tables
from ftplb.admin.snapshot import BanInfo, Snapshot, ban_info, snapshot_dict
from ftplb.admin.stats_page import render
from ftplb.admin.units import human_bytes, human_duration, human_rate, sessions_rate
from ftplb.balancing.defender import Ban
from ftplb.console.reading import StatsFormatError, snapshot_from_json
from ftplb.console.view import snapshot_view
from tests.unit.stats_sample import BACKEND, S1, SNAPSHOT


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (123_456_789, "118 MiB"),
        (5 * 1024**3, "5.0 GiB"),
        (2**60, "1024 PiB"),
        (-5, "0 B"),
        (float("nan"), "0 B"),
    ],
)
def test_bytes_read_in_binary_units(value: float, text: str) -> None:
    assert human_bytes(value) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (-1.0, "-"),
        (0.4, "0s"),
        (59.9, "59s"),
        (65, "1m5s"),
        (7380, "2h3m"),
        (90_000, "1d1h"),
        (float("inf"), "-"),
    ],
)
def test_durations_read_like_uptime(seconds: float | None, text: str) -> None:
    assert human_duration(seconds) == text


def test_rates() -> None:
    assert human_rate(1_258_291) == "1.2 MiB/s"
    assert [sessions_rate(r) for r in (0.0, 0.25, 9.94, 12.4, -1.0)] == [
        "0",
        "0.2",
        "9.9",
        "12",
        "0",
    ]


def cells(snapshot_row: object) -> list[str]:
    return [cell.text for cell in snapshot_row.cells]  # type: ignore[attr-defined]


def test_a_server_row_has_the_haproxy_groups_and_the_ftp_columns() -> None:
    table = backend_table(BACKEND)
    heads = [(group.name, column) for group in table.groups for column in group.columns]
    s1, s2, total = (dict(zip(heads, cells(row), strict=True)) for row in table.rows)
    assert s1[("Session rate", "Cur")] == "1.5" and s1[("Session rate", "Max")] == "12"
    assert ("Session rate", "Limit") not in s1  # a server has none
    assert [s1[("Sessions", c)] for c in ("Cur", "Max", "Limit", "Total")] == [
        "3",
        "9",
        "50",
        "1,234",
    ]
    assert (s1[("Bytes", "In")], s1[("Bytes", "Out")]) == ("9.8 KiB", "118 MiB")
    assert (s1[("Errors", "Conn")], s1[("Errors", "Total")]) == ("1", "2")
    assert [s1[("Warnings", c)] for c in ("Warn", "Retr", "Redis")] == ["4", "1", "5"]
    assert [s1[("FTP", c)] for c in ("Transfers", "Logins", "Failed")] == ["33", "1,200", "3"]
    assert s1[("Server", "Status")] == "UP 2h3m"
    assert s1[("Server", "Last check")] == "ok: L7 220 banner, 4 ms"
    assert (s1[("Server", "Checks")], s1[("Server", "Downtime")]) == ("900/1", "12s")
    assert s2[("Server", "Status")] == "DOWN 1m5s"
    assert s2[("Server", "Last check")] == "failed: connection refused, 1 ms"
    assert s2[("Sessions", "Limit")] == "-"  # unlimited
    assert total[("Server", "Status")] == "1/2 UP"
    assert total[("Warnings", "Redis")] == "5" and total[("FTP", "Logins")] == "1,200"


def test_a_state_without_its_time_and_a_check_without_its_reason() -> None:
    server = replace(S1, state_since=None, last_check_reason="")
    table = backend_table(replace(BACKEND, servers=(server,)))
    texts = cells(table.rows[0])
    assert "UP" in texts and "ok in 4 ms" in texts


def test_the_process_header() -> None:
    assert process_facts(SNAPSHOT) == [
        ("version", "0.1.0"),
        ("pid", "4242"),
        ("uptime", "2h3m"),
        ("workers", "2"),
        ("generation", "3"),
        ("processes reporting", "2"),
        ("read at", "2026-12-05T05:03:20Z"),
    ]
    # A balancer that sends no process header: the reading's facts only.
    assert [label for label, _ in process_facts(replace(SNAPSHOT, process=None))] == [
        "processes reporting",
        "read at",
    ]


def test_the_page_shows_the_header_the_transfers_and_fits_a_phone() -> None:
    page = render(SNAPSHOT, 5)
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert '<span class="version"><b>version</b>0.1.0</span>' in page
    assert '<span class="uptime"><b>uptime</b>2h3m</span>' in page
    assert '<span class="generation"><b>generation</b>3</span>' in page
    assert page.count('<div class="scroll"><table>') == 3  # each table scrolls in its box
    transfer = re.search(r'<tr class="transfer">(.*?)</tr>', page)
    assert transfer is not None
    assert transfer.group(1) == (
        '<td class="name" title="frontend ftp, worker 1">a1b2c3</td>'
        '<td class="text">127.0.0.1:51234</td><td class="text">alice</td>'
        '<td class="text">pool/s1</td><td class="text">RETR</td>'
        '<td class="text path" title="/pub/&lt;big&gt;/linux.iso">/pub/&lt;big&gt;/linux.iso</td>'
        '<td class="bytes" title="52,428,800 bytes">50.0 MiB</td>'
        '<td class="rate">1.2 MiB/s</td><td class="elapsed">42s</td>'
    )
    assert '<td class="state up gs" title="UP for 2h3m">UP 2h3m</td>' in page


def test_without_transfers_the_page_says_so() -> None:
    page = render(replace(SNAPSHOT, transfers=()), 5)
    assert '<p class="empty">No transfer in progress.</p>' in page
    assert 'class="transfer"' not in page


def test_stats_json_reads_back_into_the_same_snapshot() -> None:
    data = json.loads(json.dumps(snapshot_dict(SNAPSHOT)))
    assert snapshot_from_json(data) == SNAPSHOT
    empty = Snapshot("t", 0, (), ())
    assert snapshot_from_json(json.loads(json.dumps(snapshot_dict(empty)))) == empty


def test_unknown_keys_are_left_out_and_new_fields_take_their_defaults() -> None:
    data = json.loads(json.dumps(snapshot_dict(SNAPSHOT)))
    data["something_new"] = 1
    data["backends"][0]["servers"][0]["something_new"] = 2
    del data["backends"][0]["servers"][0]["logins"]
    del data["process"], data["transfers"]
    read = snapshot_from_json(data)
    assert read.process is None and read.transfers == ()
    assert read.backends[0].servers[0] == replace(S1, logins=0)


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"generated": "t"},  # no workers
        {"generated": "t", "workers": 1, "frontends": {}, "backends": []},
        {"generated": "t", "workers": 1, "frontends": [], "backends": [3]},
        {"generated": "t", "workers": 1, "frontends": [], "backends": [], "transfers": [{}]},
    ],
)
def test_what_is_not_stats_json_is_refused_in_one_line(data: object) -> None:
    with pytest.raises(StatsFormatError) as caught:
        snapshot_from_json(data)
    assert "\n" not in str(caught.value)


def test_the_terminal_shows_the_same_tables() -> None:
    console = Console(width=200, record=True, color_system=None)
    console.print(snapshot_view(SNAPSHOT, problem="cannot reach x", width=200))
    text = console.export_text()
    for table in tables(SNAPSHOT):
        assert table.title in text
    for shown in (
        "version 0.1.0",
        "uptime 2h3m",
        "generation 3",
        "cannot reach x",
        "UP 2h3m",
        "DOWN 1m5s",
        "failed: connection refused, 1 ms",
        "/pub/<big>/linux.iso",
        "50.0 MiB",
        "1.2 MiB/s",
        "Session ends: quit: 1,200, client_reset: 3",
    ):
        assert shown in text, shown
    assert "ok: L7 220 banner, 4 ms" in text  # not folded: the address made room for it
    assert "127.0.0.11:21" not in text
    assert max(len(line) for line in text.splitlines()) <= 200
    # Where there is room, the optional columns stay.
    wide = Console(width=260, record=True, color_system=None)
    wide.print(snapshot_view(SNAPSHOT, width=260))
    assert "127.0.0.11:21" in wide.export_text()


BANS = (
    BanInfo("203.0.113.9", "2026-12-05T05:00:00Z", "2026-12-05T05:20:00Z", 1000.0, 2),
    BanInfo("2001:db8::7", "2026-12-05T04:59:00Z", "2026-12-05T05:09:00Z", 400.0, 1),
)


def test_bans_show_in_a_table_of_their_own_only_with_a_defender() -> None:
    assert "bans" not in [table.kind for table in tables(SNAPSHOT)]
    with_bans = replace(SNAPSHOT, bans=BANS)
    assert [table.kind for table in tables(with_bans)][-1] == "bans"
    page = render(with_bans, 5)
    row = re.search(r'<tr class="ban">(.*?)</tr>', page)
    assert row is not None
    assert row.group(1) == (
        '<td class="name">203.0.113.9</td>'
        '<td class="text">2026-12-05T05:00:00Z</td><td class="text">2026-12-05T05:20:00Z</td>'
        '<td class="elapsed" title="1000.0 s">16m40s</td>'
        '<td class="count" title="1: a first ban; each repeat doubles it">2</td>'
    )
    assert "Banned client addresses" in page
    empty = render(replace(SNAPSHOT, bans=()), 5)
    assert '<p class="empty">No client address is banned.</p>' in empty


def test_bans_read_back_from_stats_json_and_their_absence_is_no_defender() -> None:
    with_bans = replace(SNAPSHOT, bans=BANS)
    data = json.loads(json.dumps(snapshot_dict(with_bans)))
    assert data["bans"][0] == {
        "address": "203.0.113.9",
        "since": "2026-12-05T05:00:00Z",
        "until": "2026-12-05T05:20:00Z",
        "remaining": 1000.0,
        "offence": 2,
    }
    assert snapshot_from_json(data) == with_bans
    assert json.loads(json.dumps(snapshot_dict(SNAPSHOT)))["bans"] is None
    del data["bans"]
    assert snapshot_from_json(data).bans is None


def test_a_ban_shows_its_times_in_utc_and_the_time_left() -> None:
    ban = Ban("203.0.113.9", 1_800_000_000.0, 1_800_000_600.0, 1)
    assert ban_info(ban, 1_800_000_100.25) == BanInfo(
        "203.0.113.9", "2027-01-15T08:00:00Z", "2027-01-15T08:10:00Z", 499.75, 1
    )
    assert ban_info(ban, 1_800_000_700.0).remaining == 0.0


def test_the_terminal_shows_the_bans_too() -> None:
    console = Console(width=120, record=True, color_system=None)
    console.print(snapshot_view(replace(SNAPSHOT, bans=BANS), width=120))
    text = console.export_text()
    for shown in ("Banned client addresses", "203.0.113.9", "2001:db8::7", "16m40s"):
        assert shown in text, shown
