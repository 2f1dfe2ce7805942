"""A snapshot with every field filled in: two servers (one UP, one DOWN), two transfers."""

from __future__ import annotations

from ftplb.admin.snapshot import (
    BackendStats,
    FrontendStats,
    ProcessStats,
    ServerStats,
    Snapshot,
    TransferInProgress,
)

S1 = ServerStats(
    name="s1", address="127.0.0.11:21", weight=2, state="UP", current_sessions=3,
    sessions=1234, bytes_in=10_000, bytes_out=123_456_789, transfers=33, connect_failures=1,
    last_check="ok", last_check_duration=0.004, checks_ok=900, checks_failed=1,
    session_rate=1.5, session_rate_max=12.0, max_sessions=9, session_limit=50, errors=2,
    warnings=4, retries=1, redispatches=5, logins=1200, failed_logins=3, state_since=7380.0,
    downtime=12.0, last_check_reason="L7 220 banner",
)  # fmt: skip
S2 = ServerStats(
    name="s2", address="127.0.0.12:21", weight=1, state="DOWN", current_sessions=0,
    sessions=12, bytes_in=0, bytes_out=0, transfers=0, connect_failures=7,
    last_check="failed", last_check_duration=0.001, checks_ok=3, checks_failed=40,
    admin="DRAIN", admin_by="ops", state_since=65.0, downtime=65.0,
    last_check_reason="connection refused",
)  # fmt: skip
BACKEND = BackendStats("pool", "roundrobin", (S1, S2), 1, 3, 1246, 10_000, 123_456_789, 33, 8)
FRONTEND = FrontendStats(
    name="ftp", mode="ftp", binds=("127.0.0.1:2121",), backend="pool", current_sessions=3,
    sessions=1246, bytes_in=10_000, bytes_out=123_456_789, transfers=33, refusals=2,
    end_reasons={"quit": 1200, "client_reset": 3}, transfer_results={"RETR 2xx": 30},
    passive_listeners=40, passive_listener_failures=0, data_connections_refused=0,
    session_rate=1.5, session_rate_max=12.0, session_rate_limit=100, max_sessions=9,
    session_limit=500, errors=6, warnings=1, logins=1200, failed_logins=3,
)  # fmt: skip
TRANSFERS = (
    TransferInProgress(
        "a1b2c3", "ftp", "pool", "s1", "127.0.0.1:51234", "alice", "RETR",
        "/pub/<big>/linux.iso", 52_428_800, 42.0, 1_258_291.0, 1,
    ),
    TransferInProgress(
        "d4e5f6", "ftp", "pool", "s1", "127.0.0.1:51236", "bob", "STOR",
        "/incoming/report.csv", 2048, 1.2, 1700.0,
    ),
)  # fmt: skip
PROCESS = ProcessStats("0.1.0", 4242, "2026-12-05T03:00:00Z", 7400.0, 2, 3)
SNAPSHOT = Snapshot("2026-12-05T05:03:20Z", 2, (FRONTEND,), (BACKEND,), TRANSFERS, PROCESS)
