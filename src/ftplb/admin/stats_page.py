"""The HTML stats page: one table per frontend and per backend, like HAProxy's.

Every value that comes from the configuration or the metrics goes through
:func:`html.escape`, names included: a name is validated today, but the page
must not depend on that to stay well-formed.

A user who may act on servers gets a drain / maint / ready button in each
server's row: plain HTML forms, so the page stays free of scripts. Each form
carries the user's CSRF token (see :mod:`ftplb.admin.csrf`).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ftplb.admin.snapshot import BackendStats, FrontendStats, ServerStats, Snapshot
from ftplb.balancing.state import AdminState

__all__ = ["Buttons", "render"]


@dataclass(frozen=True, slots=True)
class Buttons:
    """What the action buttons need: where their forms go, and the user's CSRF token."""

    action: str
    token: str


_STYLE = """
body { font: 13px sans-serif; margin: 1em; color: #222; }
h1 { font-size: 18px; } h2 { font-size: 15px; margin: 1.2em 0 0.3em; }
table { border-collapse: collapse; }
th, td { border: 1px solid #bbb; padding: 2px 6px; text-align: right; }
th { background: #dde; } td.name, th.name { text-align: left; }
tr.total td { background: #eef; font-weight: bold; }
.up { background: #c8f0c8; } .down { background: #f4b0b0; }
.drain { background: #f0e0a0; } .maint { background: #c8c8f0; }
.mixed { background: #f0c890; } .unknown { background: #eee; }
p.detail { margin: 0.3em 0; color: #555; }
td.admin.set { font-weight: bold; }
td.act { white-space: nowrap; padding: 1px 4px; }
td.act form { margin: 0; display: inline; }
td.act button { font: 12px sans-serif; margin: 0 2px 0 0; padding: 0 7px;
  border: 1px solid #889; border-radius: 3px; background: #f7f7fb; color: #222; cursor: pointer; }
td.act button:hover:enabled { background: #dde; }
td.act button:disabled { color: #999; border-color: #ccc; background: #eee; cursor: default; }
"""

_STATE_CLASSES = {"UP": "up", "DOWN": "down", "DRAIN": "drain", "MAINT": "maint", "-": "unknown"}


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _n(value: int) -> str:
    return f"{value:,}"


def _cells(values: Iterable[object], first: str = "name") -> str:
    out = []
    for index, value in enumerate(values):
        css = f' class="{first}"' if index == 0 and first else ""
        out.append(f"<td{css}>{_e(value)}</td>")
    return "".join(out)


def _header(names: Iterable[str]) -> str:
    cells = "".join(
        f'<th class="name">{_e(n)}</th>' if i == 0 else f"<th>{_e(n)}</th>"
        for i, n in enumerate(names)
    )
    return f"<tr>{cells}</tr>"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{_e(key)}: {_n(value)}" for key, value in counts.items()) or "none"


def _frontend(frontend: FrontendStats) -> str:
    head = _header(
        (
            "Frontend",
            "Mode",
            "Bind",
            "Backend",
            "Cur",
            "Total",
            "Bytes in",
            "Bytes out",
            "Transfers",
            "Refused (421)",
            "Passive listeners",
            "Passive failures",
            "Data refused",
        )
    )
    row = _cells(
        (
            frontend.name,
            frontend.mode,
            " ".join(frontend.binds),
            frontend.backend,
            _n(frontend.current_sessions),
            _n(frontend.sessions),
            _n(frontend.bytes_in),
            _n(frontend.bytes_out),
            _n(frontend.transfers),
            _n(frontend.refusals),
            _n(frontend.passive_listeners),
            _n(frontend.passive_listener_failures),
            _n(frontend.data_connections_refused),
        )
    )
    return (
        f"<h2>Frontend {_e(frontend.name)}</h2>\n<table>{head}<tr>{row}</tr></table>\n"
        f'<p class="detail">Session ends: {_counts(frontend.end_reasons)}</p>\n'
        f'<p class="detail">Transfers: {_counts(frontend.transfer_results)}</p>\n'
    )


def _check(server: ServerStats) -> str:
    if server.last_check_duration is None:
        return server.last_check
    return f"{server.last_check} in {server.last_check_duration * 1000:.0f} ms"


def _admin_cell(server: ServerStats) -> str:
    css = "admin" if server.admin == AdminState.READY.value else "admin set"
    title = f' title="set by {_e(server.admin_by)}"' if server.admin_by else ""
    return f'<td class="{css}"{title}>{_e(server.admin)}</td>'


def _buttons_cell(backend: str, server: ServerStats, buttons: Buttons) -> str:
    # One form per row; the button pressed adds its own state=... to the fields.
    hidden = "".join(
        f'<input type="hidden" name="{name}" value="{_e(value)}">'
        for name, value in (("backend", backend), ("server", server.name), ("csrf", buttons.token))
    )
    pressable = "".join(
        f'<button type="submit" name="state" value="{state.lower()}"'
        f' title="{state.lower()} {_e(backend)}/{_e(server.name)}"'
        # The state already in force: pressing it again would change nothing.
        f"{' disabled' if server.admin == state.value else ''}>{state.lower()}</button>"
        for state in (AdminState.DRAIN, AdminState.MAINT, AdminState.READY)
    )
    return (
        f'<td class="act"><form method="post" action="{_e(buttons.action)}">'
        f"{hidden}{pressable}</form></td>"
    )


def _server_row(backend: str, server: ServerStats, buttons: Buttons | None) -> str:
    state_class = _STATE_CLASSES.get(server.state, "mixed")
    weight = str(server.weight)
    if server.configured_weight is not None and server.configured_weight != server.weight:
        weight += f" (file: {server.configured_weight})"  # a runtime weight is in force
    head = _cells((server.name, server.address, weight, server.state))
    cells = _cells(
        (
            _n(server.current_sessions),
            _n(server.sessions),
            _n(server.bytes_in),
            _n(server.bytes_out),
            _n(server.transfers),
            _n(server.connect_failures),
            _check(server),
            f"{_n(server.checks_ok)} / {_n(server.checks_failed)}",
        ),
        first="",
    )
    act = "" if buttons is None else _buttons_cell(backend, server, buttons)
    return f'<tr class="{state_class}">{head}{_admin_cell(server)}{cells}{act}</tr>'


def _backend(backend: BackendStats, buttons: Buttons | None) -> str:
    head = _header(
        (
            "Server",
            "Address",
            "Weight",
            "State",
            "Admin",
            "Cur",
            "Total",
            "Bytes in",
            "Bytes out",
            "Transfers",
            "Connect failures",
            "Last check",
            "Checks ok / failed",
            *(() if buttons is None else ("Action",)),
        )
    )
    rows = "".join(_server_row(backend.name, server, buttons) for server in backend.servers)
    total = _cells(
        (
            "BACKEND",
            f"balance {backend.balance}",
            "",
            f"{backend.servers_up}/{len(backend.servers)} UP",
            "",
            _n(backend.current_sessions),
            _n(backend.sessions),
            _n(backend.bytes_in),
            _n(backend.bytes_out),
            _n(backend.transfers),
            _n(backend.connect_failures),
            "",
            "",
            *(() if buttons is None else ("",)),
        )
    )
    return (
        f"<h2>Backend {_e(backend.name)}</h2>\n"
        f'<table>{head}{rows}<tr class="total">{total}</tr></table>\n'
    )


def render(snapshot: Snapshot, refresh_seconds: float, buttons: Buttons | None = None) -> str:
    """The whole page; it reloads itself every ``refresh_seconds`` (at least 1 s).

    With ``buttons``, every server's row has its drain / maint / ready buttons.
    """
    refresh = max(1, round(refresh_seconds))
    plural = "" if snapshot.workers == 1 else "es"
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{refresh}">',
        f"<title>ftplb statistics</title><style>{_STYLE}</style></head><body>",
        "<h1>ftplb statistics</h1>",
        f"<p>{_e(snapshot.generated)} &middot; {snapshot.workers} worker process{plural}"
        f" &middot; refresh every {refresh} s &middot; "
        '<a href="stats.json">JSON</a> &middot; <a href="metrics">metrics</a></p>\n',
        *(_frontend(frontend) for frontend in snapshot.frontends),
        *(_backend(backend, buttons) for backend in snapshot.backends),
        "</body></html>\n",
    ]
    return "".join(parts)
