"""The stats tables as rich renderables: the page's tables, coloured for a terminal."""

from __future__ import annotations

from rich import box
from rich.console import Group as RenderGroup
from rich.console import RenderableType
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


def _style(cell: Cell) -> str:
    return " ".join(_STYLES[css] for css in cell.css.split() if css in _STYLES)


def table_view(table: Table) -> RenderableType:
    """One table; its groups head their first column, as "Sessions / Cur"."""
    if not table.rows and table.empty:
        return Text.assemble((table.title, "bold"), "\n", (table.empty, "italic dim"), "\n")
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
    for group in table.groups:
        for index, column in enumerate(group.columns):
            label = group.short or group.name
            heading = f"{label}\n{column}" if index == 0 and label else f"\n{column}"
            view.add_column(
                heading,
                justify="left" if len(view.columns) in left else "right",
                no_wrap=column not in {"Last check", "Path"},
                overflow="fold",
            )
    for row in table.rows:
        view.add_row(
            *(Text(cell.text, style=_style(cell)) for cell in row.cells),
            style="bold" if row.css == "total" else None,
        )
    return view


def snapshot_view(snapshot: Snapshot, problem: str = "") -> RenderableType:
    """The process header, every table, and a ``problem`` of the last reading if any."""
    header = Text("ftplb  ", style="bold")
    for label, value in process_facts(snapshot):
        header.append(f"{label} ", style="dim")
        header.append(f"{value}   ")
    parts: list[RenderableType] = [header]
    if problem:
        parts.append(Text(problem, style="bold red"))
    parts += [table_view(table) for table in tables(snapshot)]
    return RenderGroup(*parts)
