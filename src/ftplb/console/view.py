"""The stats tables as rich renderables: the page's tables, coloured for a terminal."""

from __future__ import annotations

from rich import box
from rich.console import Console, RenderableType
from rich.console import Group as RenderGroup
from rich.table import Table as RichTable
from rich.text import Text

from ftplb.admin.page_tables import Cell, Table, process_facts, tables
from ftplb.admin.snapshot import Snapshot

__all__ = ["snapshot_view", "table_view"]

_STYLES = {
    "up": "bold green",
    "down": "bold red",
    "drain": "bold yellow",
    "maint": "bold blue",
    "mixed": "bold magenta",
    "unknown": "dim",
    "set": "bold",
}


_LEFT = {"name", "text", "state", "check"}
_FOLDED = {"Last check", "Path"}
"""Long free text: folded onto more lines rather than cut."""


def _style(cell: Cell) -> str:
    return " ".join(_STYLES[css] for css in cell.css.split() if css in _STYLES)


def table_view(table: Table, width: int | None = None) -> RenderableType:
    """One table; its groups head their first column, as "Sess / Cur".

    When it is wider than ``width``, its optional columns are left out, and
    if it is still too wide, all but its essential ones.
    """
    if not table.rows and table.empty:
        return Text.assemble((table.title, "bold"), "\n", (table.empty, "italic dim"), "\n")
    columns = {(group.name, column) for group in table.groups for column in group.columns}
    choices = [columns, columns - table.optional]
    if table.essential:
        choices.append(set(table.essential))
    for keep in choices:
        view = _rich_table(table, keep)
        if width is None or _width(view) <= width:
            break
    return view


def _width(view: RichTable) -> int:
    return Console(width=10_000).measure(view).maximum


def _rich_table(table: Table, keep: set[tuple[str, str]] | frozenset[tuple[str, str]]) -> RichTable:
    view = RichTable(
        title=table.title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, 1, 0, 0),
        caption="\n".join(table.notes) or None,
        caption_justify="left",
    )
    # Text columns (names, addresses, states) to the left, numbers to the right.
    first = table.rows[0].cells if table.rows else ()
    left = {i for i, cell in enumerate(first) if _LEFT & set(cell.css.split())}
    kept: list[int] = []
    index = 0
    for group in table.groups:
        label = group.short or group.name  # heads the group's first column shown
        for column in group.columns:
            if (group.name, column) in keep:
                heading, label = f"{label}\n{column}", ""
                view.add_column(
                    heading,
                    justify="left" if index in left else "right",
                    no_wrap=column not in _FOLDED,
                    min_width=12 if column in _FOLDED else None,
                    overflow="fold",
                )
                kept.append(index)
            index += 1
    for row in table.rows:
        view.add_row(
            *(Text(row.cells[i].text, style=_style(row.cells[i])) for i in kept),
            style="bold" if row.css == "total" else None,
        )
    return view


def snapshot_view(
    snapshot: Snapshot, problem: str = "", width: int | None = None
) -> RenderableType:
    """The process header, every table, and a ``problem`` of the last reading if any.

    ``width``: the terminal's, to leave out optional columns that would not fit.
    """
    header = Text("ftplb  ", style="bold")
    for label, value in process_facts(snapshot):
        header.append(f"{label} ", style="dim")
        header.append(f"{value}   ")
    parts: list[RenderableType] = [header]
    if problem:
        parts.append(Text(problem, style="bold red"))
    parts += [table_view(table, width) for table in tables(snapshot)]
    return RenderGroup(*parts)
