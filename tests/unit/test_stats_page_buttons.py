"""The stats page's admin column and its buttons, with and without buttons."""

from __future__ import annotations

from dataclasses import replace

from ftplb.admin.snapshot import BackendStats, ServerStats, Snapshot
from ftplb.admin.stats_page import Buttons, render

SERVER = ServerStats(
    name="s1", address="127.0.0.11:21", weight=2, state="DRAIN", current_sessions=1,
    sessions=1234, bytes_in=10, bytes_out=20, transfers=3, connect_failures=0,
    last_check="ok", last_check_duration=0.004, checks_ok=9, checks_failed=1,
    admin="DRAIN", admin_by="ops",
)  # fmt: skip
BUTTONS = Buttons(action="/stats/action", token="f00d")

ADMIN_CELL = '<td class="admin set" title="set by ops">DRAIN</td>'
ACTION_CELL = (
    '<td class="act gs"><form method="post" action="/stats/action">'
    '<input type="hidden" name="backend" value="pool">'
    '<input type="hidden" name="server" value="s1">'
    '<input type="hidden" name="csrf" value="f00d">'
    '<button type="submit" name="state" value="drain" title="drain pool/s1" disabled>drain</button>'
    '<button type="submit" name="state" value="maint" title="maint pool/s1">maint</button>'
    '<button type="submit" name="state" value="ready" title="ready pool/s1">ready</button>'
    "</form></td>"
)
ACTION_HEADS = ('<th colspan="1" class="gs">Admin</th></tr>', '<th class="gs">Action</th></tr>')


def server_row(page: str, name: str = "s1") -> str:
    """The whole ``<tr>`` of server ``name``."""
    start = page.index(f'<td class="name">{name}</td>')
    start = page.rindex("<tr", 0, start)
    return page[start : page.index("</tr>", start) + len("</tr>")]


def total_row(page: str) -> str:
    start = page.index('<tr class="total">')
    return page[start : page.index("</tr>", start) + len("</tr>")]


def snapshot(server: ServerStats = SERVER) -> Snapshot:
    backend = BackendStats("pool", "roundrobin", (server,), 0, 1, 1234, 10, 20, 3, 0)
    return Snapshot("2026-12-04T00:00:00Z", 1, (), (backend,))


def test_a_read_only_page_shows_the_admin_state_and_no_button() -> None:
    page = render(snapshot(), 5)
    row = server_row(page)
    assert row.startswith('<tr class="drain"><td class="name">s1</td>')
    assert '<td class="state drain gs">DRAIN</td>' in row
    assert row.endswith(
        f'{ADMIN_CELL}<td title="checks ok / failed">9/1</td>'
        '<td title="time spent DOWN since start">0s</td></tr>'
    )
    assert "<form" not in page and "<button" not in page and "csrf" not in page
    assert not any(head in page for head in ACTION_HEADS)


def test_an_admin_page_has_three_buttons_per_server() -> None:
    page = render(snapshot(), 5, BUTTONS)
    row = server_row(page)
    assert ADMIN_CELL in row and row.endswith(f"{ACTION_CELL}</tr>")
    assert all(head in page for head in ACTION_HEADS)
    assert total_row(page).endswith('<td class="gs"></td></tr>')  # no buttons for the sum
    assert page.count("<form") == 1 and page.count("<button") == 3


def test_the_button_of_the_state_in_force_is_disabled() -> None:
    def disabled(admin: str) -> list[str]:
        page = render(snapshot(replace(SERVER, admin=admin, admin_by="")), 5, BUTTONS)
        return [s for s in ("drain", "maint", "ready") if f'pool/s1" disabled>{s}<' in page]

    assert disabled("READY") == ["ready"]
    assert disabled("DRAIN") == ["drain"]
    assert disabled("MAINT") == ["maint"]
    assert disabled("?") == []  # the record is unreadable: every button stays usable


def test_a_ready_server_shows_plain_ready() -> None:
    page = render(snapshot(replace(SERVER, admin="READY", admin_by="")), 5)
    assert '<td class="admin">READY</td>' in server_row(page)


def test_the_form_fields_are_escaped() -> None:
    evil = '"><script>x</script>'
    server = replace(SERVER, name=evil)
    backend = BackendStats(evil, "roundrobin", (server,), 0, 0, 0, 0, 0, 0, 0)
    page = render(Snapshot("t", 1, (), (backend,)), 5, Buttons(action="/a", token=evil))
    assert "<script>" not in page
    escaped = "&quot;&gt;&lt;script&gt;x&lt;/script&gt;"
    assert f'<input type="hidden" name="backend" value="{escaped}">' in page
    assert f'<input type="hidden" name="server" value="{escaped}">' in page
    assert f'<input type="hidden" name="csrf" value="{escaped}">' in page
    assert f'title="drain {escaped}/{escaped}"' in page


def test_a_runtime_weight_shows_beside_the_configured_one() -> None:
    page = render(snapshot(replace(SERVER, weight=5, configured_weight=2)), 5)
    assert f"<td>5 (file: 2)</td>{ADMIN_CELL}" in server_row(page)
    # The configured weight alone when no runtime weight differs from it.
    page = render(snapshot(replace(SERVER, configured_weight=2)), 5)
    assert f"<td>2</td>{ADMIN_CELL}" in server_row(page)
    assert "(file:" not in page
