"""The HTML stats page: a process header, then HAProxy-like tables per frontend
and per backend, and the transfers in progress.

The tables themselves (columns, groups, how each value reads) come from
:mod:`ftplb.admin.page_tables`, which the terminal views share; this module
only lays them out as HTML. Every value goes through :func:`html.escape`,
names included: a name is validated today, but the page must not depend on
that to stay well-formed.

A user who may act on servers gets a drain / maint / ready button in each
server's row: plain HTML forms, so the page stays free of scripts. Each form
carries the user's CSRF token (see :mod:`ftplb.admin.csrf`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from ftplb.admin.page_style import STYLE
from ftplb.admin.page_tables import Cell, Group, Row, Table, process_facts, tables
from ftplb.admin.snapshot import ServerStats, Snapshot
from ftplb.balancing.state import AdminState

__all__ = ["Buttons", "render"]


@dataclass(frozen=True, slots=True)
class Buttons:
    """What the action buttons need: where their forms go, and the user's CSRF token."""

    action: str
    token: str


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _attrs(css: str, title: str = "") -> str:
    out = f' class="{_e(css)}"' if css else ""
    return out + (f' title="{_e(title)}"' if title else "")


def _group_starts(groups: tuple[Group, ...]) -> set[int]:
    """The indexes of the columns that open a named group (drawn with a heavier line)."""
    starts, index = set(), 0
    for group in groups:
        if group.name and index:
            starts.add(index)
        index += len(group.columns)
    return starts


def _join(*classes: str) -> str:
    return " ".join(css for css in classes if css)


def _head(groups: tuple[Group, ...], left: set[int]) -> str:
    """The two header rows; the columns in ``left`` hold text, and their names go left too."""
    starts = _group_starts(groups)
    top, index = [], 0
    for group in groups:
        css = _join("name" if index == 0 else "", "gs" if index in starts else "")
        top.append(f'<th colspan="{len(group.columns)}"{_attrs(css)}>{_e(group.name)}</th>')
        index += len(group.columns)
    names = [column for group in groups for column in group.columns]
    bottom = "".join(
        f"<th{_attrs(_join(_left(i, left), 'gs' if i in starts else ''))}>{_e(n)}</th>"
        for i, n in enumerate(names)
    )
    return f'<tr class="groups">{"".join(top)}</tr><tr>{bottom}</tr>'


def _left(index: int, left: set[int]) -> str:
    return "name" if index == 0 else "text" if index in left else ""


def _cell(cell: Cell, group_start: bool) -> str:
    css = _join(cell.css, "gs" if group_start else "")
    return f"<td{_attrs(css, cell.title)}>{_e(cell.text)}</td>"


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
        f'<td class="act gs"><form method="post" action="{_e(buttons.action)}">'
        f"{hidden}{pressable}</form></td>"
    )


def _row(table: Table, row: Row, starts: set[int], buttons: Buttons | None) -> str:
    cells = "".join(_cell(cell, index in starts) for index, cell in enumerate(row.cells))
    if buttons is not None:
        if row.server is None:
            cells += '<td class="gs"></td>'
        else:
            cells += _buttons_cell(table.name, row.server, buttons)
    return f"<tr{_attrs(row.css)}>{cells}</tr>"


def _table(table: Table, buttons: Buttons | None) -> str:
    with_buttons = buttons if table.kind == "backend" else None
    groups = table.groups + (() if with_buttons is None else (Group("Admin", ("Action",)),))
    starts = _group_starts(groups)
    notes = "".join(f'<p class="detail">{_e(note)}</p>\n' for note in table.notes)
    if not table.rows and table.empty:
        body = f'<p class="empty">{_e(table.empty)}</p>\n'
    else:
        rows = "".join(_row(table, row, starts, with_buttons) for row in table.rows)
        left = {
            i
            for i, cell in enumerate(table.rows[0].cells)
            if {"text", "check", "state"} & set(cell.css.split())
        }
        body = f'<div class="scroll"><table>{_head(groups, left)}{rows}</table></div>\n'
    return f'<section class="{table.kind}"><h2>{_e(table.title)}</h2>\n{body}{notes}</section>\n'


def render(snapshot: Snapshot, refresh_seconds: float, buttons: Buttons | None = None) -> str:
    """The whole page; it reloads itself every ``refresh_seconds`` (at least 1 s).

    With ``buttons``, every server's row has its drain / maint / ready buttons.
    """
    refresh = max(1, round(refresh_seconds))
    facts = "".join(
        f'<span class="{_e(label.replace(" ", "-"))}"><b>{_e(label)}</b>{_e(value)}</span>'
        for label, value in process_facts(snapshot)
    )
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{refresh}">',
        f"<title>ftplb statistics</title><style>{STYLE}</style></head><body>",
        "<h1>ftplb statistics</h1>",
        f'<p class="process">{facts}</p>\n',
        f'<p class="links">refresh every {refresh} s &middot; '
        '<a href="stats.json">JSON</a> &middot; <a href="metrics">metrics</a></p>\n',
        *(_table(table, buttons) for table in tables(snapshot)),
        "</body></html>\n",
    ]
    return "".join(parts)
