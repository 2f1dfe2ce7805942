"""The EventLog's lines: session ends and typed warnings, text and JSON, and library logs."""

from __future__ import annotations

import io
import json
import logging
import re
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ftplb.proto.outcomes import EndReason, LoginStatus
from ftplb.runtime.logs import EventLog, LogWarning, TransferError, capture_library_logs
from ftplb.runtime.syslog_target import message

STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00")


def one_line(log_format: str, write: str) -> str:
    stream = io.StringIO()
    log = EventLog("json" if log_format == "json" else "text", stream)
    if write == "session":
        log.session(frontend="ftp", end=EndReason.NO_SERVER, detail="s1: timeout")
    elif write == "quiet":
        log.session(frontend="ftp", end=EndReason.QUIT, detail="")
    else:
        log.warning(LogWarning.CONNECT_FAILED, server="s1")
    return stream.getvalue()


@pytest.mark.parametrize(
    ("write", "fields"),
    [
        ("session", 'frontend=ftp end=no_server detail="s1: timeout"'),
        ("quiet", "frontend=ftp end=quit"),
        ("warning", 'warning=connect_failed message="server connect failed" server=s1'),
    ],
)
def test_text_lines_show_values_and_detail_only_when_there_is_one(write: str, fields: str) -> None:
    line = one_line("text", write)
    stamp, kind, rest = line.split(" ", 2)
    assert (kind, rest) == ("warning" if write == "warning" else "session", fields + "\n")
    assert STAMP.fullmatch(stamp), stamp


@pytest.mark.parametrize(
    ("write", "fields"),
    [
        ("session", {"event": "session", "frontend": "ftp", "end": "no_server",
                     "detail": "s1: timeout"}),
        ("quiet", {"event": "session", "frontend": "ftp", "end": "quit"}),
        ("warning", {"event": "warning", "warning": "connect_failed",
                     "message": "server connect failed", "server": "s1"}),
    ],
)  # fmt: skip
def test_json_lines_show_values_and_detail_only_when_there_is_one(
    write: str, fields: dict[str, str]
) -> None:
    record = json.loads(one_line("json", write))
    assert STAMP.fullmatch(record.pop("time"))
    assert record == fields


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_timestamps_are_iso_8601_utc_with_milliseconds_and_the_offset(log_format: str) -> None:
    before = datetime.now(UTC)
    line = one_line(log_format, "session")
    after = datetime.now(UTC)
    stamp = json.loads(line)["time"] if log_format == "json" else line.split(" ", 1)[0]
    assert STAMP.fullmatch(stamp), stamp
    written = datetime.fromisoformat(stamp)
    assert written.utcoffset() == timedelta(0)
    # Milliseconds are cut, never rounded up: the stamp is never after the write.
    assert before - timedelta(milliseconds=1) <= written <= after


def test_the_cached_second_still_gives_each_line_its_own_milliseconds() -> None:
    stream = io.StringIO()
    log = EventLog("text", stream)
    for _ in range(50):  # a handful of lines per millisecond at most: some differ
        log.info("tick")
        time.sleep(0.0005)
    stamps = [line.split(" ", 1)[0] for line in stream.getvalue().splitlines()]
    assert all(STAMP.fullmatch(stamp) for stamp in stamps)
    assert stamps == sorted(stamps) and len(set(stamps)) > 1


def test_every_warning_has_its_own_message() -> None:
    messages = [warning.message for warning in LogWarning]
    assert all(messages) and len(set(messages)) == len(messages)


def test_library_logs_become_warning_lines() -> None:
    stream = io.StringIO()
    release = capture_library_logs(EventLog("json", stream))
    try:
        logging.getLogger("asyncio").info("not a warning: not written")
        try:
            raise ConnectionResetError("peer gone")
        except ConnectionResetError as error:
            logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=error)
    finally:
        release()
    logging.getLogger("asyncio").error("after the release: not ours")
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record.pop("time")
    where = record.pop("where")
    assert where.startswith(__file__ + ":"), where
    assert record == {
        "event": "warning",
        "warning": "library_log",
        "message": "a library logged a warning or an error",
        "logger": "asyncio",
        "level": "ERROR",
        "reason": "Task exception was never retrieved",
        "error": "ConnectionResetError: peer gone",
    }


def test_a_fatal_error_is_a_json_line_under_json() -> None:
    stream = io.StringIO()
    EventLog("json", stream).error("cannot listen on 127.0.0.1:21: Permission denied")
    record = json.loads(stream.getvalue())
    assert record == {
        "time": record["time"],
        "event": "error",
        "message": "cannot listen on 127.0.0.1:21: Permission denied",
    }
    assert stream.getvalue().count("\n") == 1


def test_a_fatal_error_is_a_plain_line_under_text() -> None:
    stream = io.StringIO()
    EventLog("text", stream).error("cannot listen on 127.0.0.1:21: Permission denied")
    assert stream.getvalue() == "ftplb: cannot listen on 127.0.0.1:21: Permission denied\n"


def test_every_warning_is_documented_with_its_message() -> None:
    """docs/logs.md lists each warning id with its message: operators match on them."""
    text = (Path(__file__).parents[2] / "docs" / "logs.md").read_text()
    missing = [w.value for w in LogWarning if f"| `{w.value}` | {w.message} |" not in text]
    assert missing == []


@pytest.mark.parametrize(
    ("kind", "pri"), [("session", 30), ("info", 30), ("warning", 28), ("error", 27)]
)
def test_syslog_messages_are_rfc_5424_with_the_kind_as_msgid(kind: str, pri: int) -> None:
    stamp = "2026-12-05T05:41:07.123+00:00"
    line = f'{stamp} {kind} session=ab12cd-7 path="a b"'
    assert message(kind, stamp, line, "lb1", 4242) == (
        f"<{pri}>1 {stamp} lb1 ftplb 4242 {kind} - {line}".encode()
    )


def test_every_transfer_error_is_documented() -> None:
    text = (Path(__file__).parents[2] / "docs" / "logs.md").read_text()
    missing = [e.value for e in TransferError if f"| `{e.value}` |" not in text]
    assert missing == []


def test_every_end_reason_and_login_status_is_documented() -> None:
    text = (Path(__file__).parents[2] / "docs" / "logs.md").read_text()
    missing = [e.value for e in (*EndReason, *LoginStatus) if f"| `{e.value}` |" not in text]
    assert missing == []


def test_python_warnings_become_warning_lines_too() -> None:
    stream = io.StringIO()
    release = capture_library_logs(EventLog("json", stream))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("an old call", DeprecationWarning, stacklevel=1)
    finally:
        release()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.warn("after the release: not ours", DeprecationWarning, stacklevel=1)
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert (record["warning"], record["logger"], record["level"]) == (
        "library_log",
        "py.warnings",
        "WARNING",
    )
    assert "DeprecationWarning: an old call" in record["reason"]
