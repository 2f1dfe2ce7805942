"""Runtime actions: the request body, the shared record, the action itself, the API's JSON."""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path

import pytest

from ftplb.admin.actions import (
    ActionError,
    Caller,
    Role,
    ServerAction,
    ServerActions,
    UnknownServerError,
    parse_action,
)
from ftplb.admin.api import find_server, server_json, servers_json
from ftplb.admin.overrides_store import FILENAME, OverridesStore, watch_overrides
from ftplb.admin.snapshot import build_snapshot
from ftplb.balancing.overrides import Override, OverrideError, ServerKey
from ftplb.balancing.state import AdminState
from ftplb.config.load import load_config_text
from ftplb.runtime.logs import EventLog
from tests.config_texts import TWO_SERVERS
from tests.integration.balancer import log_fields

CONFIG = TWO_SERVERS

OPS = Caller("ops", Role.ADMIN)


# ------------------------------------------------------------- parse_action


@pytest.mark.parametrize(
    ("body", "action"),
    [
        ({"state": "drain"}, ServerAction(state=AdminState.DRAIN)),
        ({"state": "MAINT"}, ServerAction(state=AdminState.MAINT)),
        ({"state": "Ready"}, ServerAction(state=AdminState.READY)),
        ({"weight": 0}, ServerAction(weight=0)),
        ({"weight": 256}, ServerAction(weight=256)),
        ({"state": "drain", "weight": 3}, ServerAction(AdminState.DRAIN, 3)),
        ({"state": None, "weight": 3}, ServerAction(weight=3)),
    ],
)
def test_parse_action(body: object, action: ServerAction) -> None:
    assert parse_action(body) == action


SHAPE = 'expected an object: {"state": "drain" | "maint" | "ready"} or {"weight": N}'
STATE = '"state" must be "drain", "maint" or "ready"'
WEIGHT = '"weight" must be a whole number from 0 to 256'


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, SHAPE),
        ([], SHAPE),
        ("drain", SHAPE),
        (None, SHAPE),
        ({"state": "up"}, STATE),
        ({"state": 1}, STATE),
        ({"weight": -1}, WEIGHT),
        ({"weight": 257}, WEIGHT),
        ({"weight": 1.5}, WEIGHT),
        ({"weight": "3"}, WEIGHT),
        ({"weight": True}, WEIGHT),
        (
            {"state": "drain", "colour": "red"},
            'unknown field \'colour\': expected "state" or "weight"',
        ),
    ],
)
def test_parse_action_refuses(body: object, message: str) -> None:
    with pytest.raises(ActionError) as caught:
        parse_action(body)
    assert str(caught.value) == message


def test_action_describe() -> None:
    assert ServerAction(AdminState.DRAIN, 4).describe() == {"state": "DRAIN", "weight": 4}
    assert ServerAction(weight=0).describe() == {"weight": 0}
    assert ServerAction().describe() == {}


# ------------------------------------------------------------ OverridesStore


def test_store_is_empty_before_the_first_action(tmp_path: Path) -> None:
    store = OverridesStore(str(tmp_path))
    assert (store.load(), store.stamp()) == ({}, None)


def test_store_changes_merge_and_are_written_as_json(tmp_path: Path) -> None:
    store = OverridesStore(str(tmp_path))
    key = ("pool", "s1")
    assert store.change(key, user="ops", admin=AdminState.DRAIN) == Override(
        AdminState.DRAIN, None, None, "ops"
    )
    first = store.stamp()
    assert first is not None
    # A weight keeps the admin state; the user is the last one to act.
    assert store.change(key, user="bob", weight=5, configured_weight=2) == Override(
        AdminState.DRAIN, 5, 2, "bob"
    )
    # A state keeps the weight and the configured weight it was set against.
    assert store.change(key, user="ops", admin=AdminState.MAINT) == Override(
        AdminState.MAINT, 5, 2, "ops"
    )
    assert store.stamp() != first
    assert store.load() == {key: Override(AdminState.MAINT, 5, 2, "ops")}
    document = json.loads((tmp_path / FILENAME).read_text())
    assert document == {
        "version": 1,
        "servers": {
            "pool": {"s1": {"admin": "MAINT", "weight": 5, "configured_weight": 2, "user": "ops"}}
        },
    }
    assert sorted(os.listdir(tmp_path)) == [FILENAME, FILENAME + ".lock"]  # no temporary left


def test_store_forgets_a_server_back_to_ready_at_its_configured_weight(tmp_path: Path) -> None:
    store = OverridesStore(str(tmp_path))
    store.change(("pool", "s1"), user="ops", admin=AdminState.DRAIN)
    store.change(("pool", "s2"), user="ops", admin=AdminState.DRAIN, weight=3, configured_weight=1)
    store.change(("pool", "s1"), user="ops", admin=AdminState.READY)
    assert store.load() == {("pool", "s2"): Override(AdminState.DRAIN, 3, 1, "ops")}
    # READY with a runtime weight stays in the record.
    store.change(("pool", "s2"), user="bob", admin=AdminState.READY)
    assert store.load() == {("pool", "s2"): Override(AdminState.READY, 3, 1, "bob")}


def test_store_reports_an_unreadable_file_with_its_path(tmp_path: Path) -> None:
    store = OverridesStore(str(tmp_path))
    (tmp_path / FILENAME).write_text("{not json")
    with pytest.raises(OverrideError) as caught:
        store.load()
    assert str(caught.value).startswith(f"{tmp_path / FILENAME}: ")
    (tmp_path / FILENAME).write_text('{"version": 1, "servers": []}')
    with pytest.raises(OverrideError) as caught:
        store.load()
    assert str(caught.value) == f'{tmp_path / FILENAME}: "servers" must be an object'


async def test_watch_applies_now_and_after_each_change(tmp_path: Path) -> None:
    store = OverridesStore(str(tmp_path))
    seen: list[dict[ServerKey, Override]] = []
    errors: list[str] = []

    def apply(overrides: Mapping[ServerKey, Override]) -> None:
        seen.append(dict(overrides))

    task = asyncio.create_task(watch_overrides(store, apply, errors.append, interval=0.01))
    try:
        await asyncio.sleep(0.05)
        assert seen == [{}]
        store.change(("pool", "s1"), user="ops", admin=AdminState.DRAIN)
        for _ in range(100):
            if len(seen) > 1:
                break
            await asyncio.sleep(0.01)
        assert seen == [{}, {("pool", "s1"): Override(AdminState.DRAIN, user="ops")}]
        (tmp_path / FILENAME).write_text("broken")
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.01)
        assert len(seen) == 2  # the last good record stays
        assert errors and errors[0].startswith(str(tmp_path / FILENAME))
    finally:
        task.cancel()


# ------------------------------------------------------------- ServerActions


def actions(tmp_path: Path) -> tuple[ServerActions, io.StringIO]:
    stream = io.StringIO()
    config = load_config_text(CONFIG)
    return ServerActions(OverridesStore(str(tmp_path)), config, EventLog("text", stream)), stream


def test_act_records_the_action_and_logs_it_with_the_user(tmp_path: Path) -> None:
    server_actions, stream = actions(tmp_path)
    assert server_actions.act(OPS, "pool", "s1", ServerAction(state=AdminState.DRAIN)) == Override(
        AdminState.DRAIN, None, None, "ops"
    )
    assert server_actions.act(OPS, "pool", "s2", ServerAction(weight=4)) == Override(
        AdminState.READY, 4, 1, "ops"
    )
    assert server_actions.store.load() == {
        ("pool", "s1"): Override(AdminState.DRAIN, None, None, "ops"),
        ("pool", "s2"): Override(AdminState.READY, 4, 1, "ops"),
    }
    lines = [log_fields(line) for line in stream.getvalue().splitlines()]
    assert lines == [
        {
            "message": "admin action",
            "user": "ops",
            "backend": "pool",
            "server": "s1",
            "state": "DRAIN",
        },
        {
            "message": "admin action",
            "user": "ops",
            "backend": "pool",
            "server": "s2",
            "weight": "4",
        },
    ]
    assert all(" info " in line for line in stream.getvalue().splitlines())


def test_a_runtime_weight_is_set_against_the_configured_weight(tmp_path: Path) -> None:
    server_actions, _ = actions(tmp_path)
    server_actions.act(OPS, "pool", "s1", ServerAction(weight=9))
    assert server_actions.store.load()[("pool", "s1")] == Override(AdminState.READY, 9, 2, "ops")
    # After a reload that changes s1's weight, a new action is against the new one.
    server_actions.update_config(load_config_text(CONFIG.replace("weight = 2", "weight = 6")))
    assert server_actions.configured_weight("pool", "s1") == 6
    server_actions.act(OPS, "pool", "s1", ServerAction(weight=8))
    assert server_actions.store.load()[("pool", "s1")] == Override(AdminState.READY, 8, 6, "ops")


@pytest.mark.parametrize(("backend", "server"), [("pool", "s3"), ("other", "s1"), ("", "")])
def test_act_on_an_unknown_server_changes_nothing(
    tmp_path: Path, backend: str, server: str
) -> None:
    server_actions, stream = actions(tmp_path)
    with pytest.raises(UnknownServerError) as caught:
        server_actions.act(OPS, backend, server, ServerAction(state=AdminState.MAINT))
    assert str(caught.value) == f"no server {backend}/{server}"
    assert (server_actions.store.load(), stream.getvalue()) == ({}, "")


def test_an_anonymous_caller_is_logged_as_a_dash(tmp_path: Path) -> None:
    server_actions, stream = actions(tmp_path)
    server_actions.act(Caller("", Role.ADMIN), "pool", "s2", ServerAction(state=AdminState.READY))
    assert log_fields(stream.getvalue().strip())["user"] == "-"


# ----------------------------------------------------------------- API JSON


def test_server_json_combines_the_numbers_and_the_record() -> None:
    snapshot = build_snapshot(load_config_text(CONFIG), [])
    overrides = {("pool", "s1"): Override(AdminState.DRAIN, 9, 2, "ops")}
    assert servers_json(snapshot, overrides) == [
        {
            "backend": "pool",
            "server": "s1",
            "address": "127.0.0.11:21",
            "state": "-",
            "admin_state": "DRAIN",
            "weight": 9,
            "configured_weight": 2,
            "current_sessions": 0,
            "sessions": 0,
            "transfers": 0,
            "connect_failures": 0,
            "last_check": {"result": "-", "duration": None},
            "changed_by": "ops",
        },
        {
            "backend": "pool",
            "server": "s2",
            "address": "127.0.0.12:21",
            "state": "-",
            "admin_state": "READY",
            "weight": 1,
            "configured_weight": 1,
            "current_sessions": 0,
            "sessions": 0,
            "transfers": 0,
            "connect_failures": 0,
            "last_check": {"result": "-", "duration": None},
            "changed_by": None,
        },
    ]
    assert find_server(snapshot, overrides, "pool", "s2") == servers_json(snapshot, overrides)[1]
    # A snapshot laid out with the record (as the listener does) shows the weight in force.
    with_record = build_snapshot(load_config_text(CONFIG), [], overrides=overrides)
    s1 = with_record.backends[0].servers[0]
    assert (s1.weight, s1.configured_weight) == (9, 2)
    assert servers_json(with_record, overrides) == servers_json(snapshot, overrides)
    assert find_server(snapshot, overrides, "pool", "s3") is None
    assert find_server(snapshot, overrides, "s1", "pool") is None


def test_server_json_shows_the_configured_weight_once_the_runtime_one_lapses() -> None:
    snapshot = build_snapshot(load_config_text(CONFIG), [])
    stats = snapshot.backends[0].servers[0]
    stale = Override(AdminState.READY, 9, 5, "ops")  # set when the file said 5; it says 2
    shown = server_json("pool", stats, stale)
    assert (shown["weight"], shown["configured_weight"], shown["changed_by"]) == (2, 2, "ops")
