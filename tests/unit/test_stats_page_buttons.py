"""The stats page's admin column and its buttons: whole rows, with and without buttons."""

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

STATS_CELLS = (
    "<td>1</td><td>1,234</td><td>10</td><td>20</td><td>3</td><td>0</td>"
    "<td>ok in 4 ms</td><td>9 / 1</td>"
)
ROW_WITHOUT_BUTTONS = (
    '<tr class="drain"><td class="name">s1</td><td>127.0.0.11:21</td><td>2</td><td>DRAIN</td>'
    f'<td class="admin set" title="set by ops">DRAIN</td>{STATS_CELLS}</tr>'
)
ROW_WITH_BUTTONS = (
    '<tr class="drain"><td class="name">s1</td><td>127.0.0.11:21</td><td>2</td><td>DRAIN</td>'
    f'<td class="admin set" title="set by ops">DRAIN</td>{STATS_CELLS}'
    '<td class="act"><form method="post" action="/stats/action">'
    '<input type="hidden" name="backend" value="pool">'
    '<input type="hidden" name="server" value="s1">'
    '<input type="hidden" name="csrf" value="f00d">'
    '<button type="submit" name="state" value="drain" title="drain pool/s1" disabled>drain</button>'
    '<button type="submit" name="state" value="maint" title="maint pool/s1">maint</button>'
    '<button type="submit" name="state" value="ready" title="ready pool/s1">ready</button>'
    "</form></td></tr>"
)
HEADER = (
    '<tr><th class="name">Server</th><th>Address</th><th>Weight</th><th>State</th>'
    "<th>Admin</th><th>Cur</th><th>Total</th><th>Bytes in</th><th>Bytes out</th>"
    "<th>Transfers</th><th>Connect failures</th><th>Last check</th><th>Checks ok / failed</th>"
)
TOTAL = (
    '<tr class="total"><td class="name">BACKEND</td><td>balance roundrobin</td><td></td>'
    "<td>0/1 UP</td><td></td><td>1</td><td>1,234</td><td>10</td><td>20</td><td>3</td><td>0</td>"
    "<td></td><td></td>"
)


def snapshot(server: ServerStats = SERVER) -> Snapshot:
    backend = BackendStats("pool", "roundrobin", (server,), 0, 1, 1234, 10, 20, 3, 0)
    return Snapshot("2026-12-04T00:00:00Z", 1, (), (backend,))


def test_a_read_only_page_shows_the_admin_state_and_no_button() -> None:
    page = render(snapshot(), 5)
    assert f"<table>{HEADER}</tr>{ROW_WITHOUT_BUTTONS}{TOTAL}</tr></table>" in page
    assert "<form" not in page and "<button" not in page and "csrf" not in page


def test_an_admin_page_has_three_buttons_per_server() -> None:
    page = render(snapshot(), 5, BUTTONS)
    assert (
        f"<table>{HEADER}<th>Action</th></tr>{ROW_WITH_BUTTONS}{TOTAL}<td></td></tr></table>"
        in page
    )
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
    assert '<td>DRAIN</td><td class="admin">READY</td><td>1</td>' in page


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
    row = ROW_WITHOUT_BUTTONS.replace("<td>2</td>", "<td>5 (file: 2)</td>")
    assert row in page
    # The configured weight alone when no runtime weight differs from it.
    page = render(snapshot(replace(SERVER, configured_weight=2)), 5)
    assert ROW_WITHOUT_BUTTONS in page
