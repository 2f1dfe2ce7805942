"""The HTML stats page: one table per frontend and per backend, like HAProxy's.

Every value that comes from the configuration or the metrics goes through
:func:`html.escape`, names included: a name is validated today, but the page
must not depend on that to stay well-formed.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping

from ftplb.admin.snapshot import BackendStats, FrontendStats, ServerStats, Snapshot

__all__ = ["render"]

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


def _server_row(server: ServerStats) -> str:
    state_class = _STATE_CLASSES.get(server.state, "mixed")
    cells = _cells(
        (
            server.name,
            server.address,
            server.weight,
            server.state,
            _n(server.current_sessions),
            _n(server.sessions),
            _n(server.bytes_in),
            _n(server.bytes_out),
            _n(server.transfers),
            _n(server.connect_failures),
            _check(server),
            f"{_n(server.checks_ok)} / {_n(server.checks_failed)}",
        )
    )
    return f'<tr class="{state_class}">{cells}</tr>'


def _backend(backend: BackendStats) -> str:
    head = _header(
        (
            "Server",
            "Address",
            "Weight",
            "State",
            "Cur",
            "Total",
            "Bytes in",
            "Bytes out",
            "Transfers",
            "Connect failures",
            "Last check",
            "Checks ok / failed",
        )
    )
    rows = "".join(_server_row(server) for server in backend.servers)
    total = _cells(
        (
            "BACKEND",
            f"balance {backend.balance}",
            "",
            f"{backend.servers_up}/{len(backend.servers)} UP",
            _n(backend.current_sessions),
            _n(backend.sessions),
            _n(backend.bytes_in),
            _n(backend.bytes_out),
            _n(backend.transfers),
            _n(backend.connect_failures),
            "",
            "",
        )
    )
    return (
        f"<h2>Backend {_e(backend.name)}</h2>\n"
        f'<table>{head}{rows}<tr class="total">{total}</tr></table>\n'
    )


def render(snapshot: Snapshot, refresh_seconds: float) -> str:
    """The whole page; it reloads itself every ``refresh_seconds`` (at least 1 s)."""
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
        *(_backend(backend) for backend in snapshot.backends),
        "</body></html>\n",
    ]
    return "".join(parts)
