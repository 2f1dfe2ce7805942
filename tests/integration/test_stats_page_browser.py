"""The stats page's buttons in a real browser, against a real ``ftplb run``.

Headless Chromium (Debian's, driven by playwright; never a browser that
playwright downloads) logs in with basic auth, presses "drain" on s1, and the
page and the routing must follow: new FTP sessions all reach s2. Requests from
another site, and requests without the page's token, must change nothing.

The page also shows the transfers in progress, their bytes rising from one
reading to the next, and the process header; on a phone's 390 px screen it
does not scroll sideways. A screenshot of it with two transfers in progress
is kept as a test artefact: ``test-artifacts/stats-page.png`` in the repository.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, sync_playwright

from ftplb import __version__
from tests.integration import clients
from tests.integration.farms import Farm, farm
from tests.integration.test_admin_live import free_port_for_admin
from tests.support import skip_or_fail, wait_until

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
USER, PASSWORD = "ops", "pa55 word"
ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "stats-page.png"
APPLIED_WITHIN = 1.0
"""Seconds within which every balancer process applies an action (the documented bound)."""
WAIT = 10.0


def admin_section(port: int, *, auth: bool = True) -> str:
    # A long refresh: the page must not reload itself in the middle of a test.
    credentials = f'user = "{USER}"\npassword = "{PASSWORD}"\n' if auth else ""
    return f'[admin]\nbind = "127.0.0.1:{port}"\nstats_refresh = "60s"\n{credentials}'


@contextlib.contextmanager
def admin_farm(
    *, auth: bool = True, files: dict[str, bytes] | None = None
) -> Iterator[tuple[Farm, str]]:
    """Two pyftpdlib servers behind a one-process ``ftplb run``; and the admin URL.

    Each server's ``who.txt`` holds its name, so a download tells where a session went.
    """
    port = free_port_for_admin()
    with farm(files=files, sections=admin_section(port, auth=auth)) as group:
        for server, name in zip(group.servers, ("s1", "s2"), strict=True):
            (server.root / "who.txt").write_text(name)
            (server.root / "who.txt").chmod(0o644)
        yield group, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        skip_or_fail(f"{CHROMIUM} missing: run scripts/install-test-deps.sh as root")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def who(group: Farm) -> str:
    """Where one new FTP session goes: the name of the server that served it."""
    lb = group.lb
    with clients.ftplib_session(lb.host, lb.port, group.user, group.password, "epsv") as c:
        return c.retr("who.txt").decode()


def request(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    sent = {"Authorization": f"Basic {token}", **(headers or {})}
    call = urllib.request.Request(url, data=body, headers=sent, method=method)
    try:
        with urllib.request.urlopen(call, timeout=WAIT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a 303 is the answer under test, not something to follow


def post_form(url: str, fields: dict[str, str], headers: dict[str, str]) -> tuple[int, str]:
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    body = urllib.parse.urlencode(fields).encode()
    call = urllib.request.Request(
        url + "/stats/action",
        data=body,
        method="POST",
        headers={
            "Authorization": f"Basic {token}",
            "Content-Type": "application/x-www-form-urlencoded",
            **headers,
        },
    )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(call, timeout=WAIT) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def servers(url: str) -> dict[str, dict[str, Any]]:
    """The servers of /stats.json by name."""
    status, body = request(url + "/stats.json")
    assert status == 200, body
    (backend,) = json.loads(body)["backends"]
    return {server["name"]: server for server in backend["servers"]}


def admin_states(url: str) -> dict[str, tuple[str, str]]:
    return {name: (s["admin"], s["admin_by"]) for name, s in servers(url).items()}


def both_up(url: str) -> bool:
    return [s["state"] for s in servers(url).values()] == ["UP", "UP"]


def row(page: Page, server: str) -> Locator:
    return page.locator("tr", has=page.locator(f'td.name:text-is("{server}")'))


def buttons_disabled(page: Page, server: str) -> dict[str, bool]:
    return {
        state: page.locator(f'button[title="{state} pool/{server}"]').is_disabled()
        for state in ("drain", "maint", "ready")
    }


def keep_screenshot(page: Page, tmp_path: Path) -> Path:
    shot = tmp_path / "stats-page.png"
    page.screenshot(path=str(shot), full_page=True)
    ARTIFACT.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, ARTIFACT)
    return shot


def test_the_drain_button_drains_a_server() -> None:
    with admin_farm() as (group, url), chromium() as browser:
        # Both servers take sessions before the press: what changes is the press's doing.
        assert sorted(who(group) for _ in range(2)) == ["s1", "s2"]
        wait_until(lambda: both_up(url), WAIT, "both servers UP on /stats.json")
        context = browser.new_context(
            http_credentials={"username": USER, "password": PASSWORD},
            viewport={"width": 1400, "height": 600},
        )
        page = context.new_page()
        assert page.goto(url + "/stats") is not None
        assert row(page, "s1").locator("td.admin").inner_text() == "READY"
        assert buttons_disabled(page, "s1") == {"drain": False, "maint": False, "ready": True}
        s2_form = page.locator("form", has=page.locator('button[title="drain pool/s2"]'))
        s2_before = s2_form.evaluate("form => form.outerHTML")

        with page.expect_navigation():
            page.locator('button[title="drain pool/s1"]').click()
        pressed = time.monotonic()

        assert page.url == url + "/stats"  # 303 See Other, back to the page
        assert row(page, "s1").locator("td.admin").inner_text() == "DRAIN"
        assert row(page, "s1").locator("td.admin").get_attribute("title") == f"set by {USER}"
        assert buttons_disabled(page, "s1") == {"drain": True, "maint": False, "ready": False}
        assert row(page, "s2").locator("td.admin").inner_text() == "READY"
        assert s2_form.evaluate("form => form.outerHTML") == s2_before
        assert admin_states(url) == {"s1": ("DRAIN", USER), "s2": ("READY", "")}

        # Round robin over s1 and s2 sends one of two sessions in a row to s1, until
        # the balancer has taken the record: then every new session goes to s2.
        left = max(0.0, APPLIED_WITHIN - (time.monotonic() - pressed))
        wait_until(lambda: [who(group), who(group)] == ["s2", "s2"], left, "s1 drained")
        assert [who(group) for _ in range(10)] == ["s2"] * 10

        actions = [line for line in group.lb.log_lines("info") if "admin action" in line]
        assert len(actions) == 1
        assert actions[0].endswith(
            'message="admin action" user=ops backend=pool server=s1 state=DRAIN'
        )

        # The effective state follows once the metrics are sampled (about once a second).
        def page_shows_drain() -> bool:
            page.reload()
            return str(row(page, "s1").locator("td.state").inner_text()).split()[0] == "DRAIN"

        wait_until(page_shows_drain, WAIT, "s1 DRAIN in the State column")
        context.close()


def csrf_token(url: str) -> str:
    status, page = request(url + "/stats")
    assert status == 200
    tokens = set(re.findall(r'name="csrf" value="([0-9a-f]{64})"', page))
    assert len(tokens) == 1, tokens  # one token per user, in every row
    return str(tokens.pop())


def test_cross_site_and_tokenless_posts_change_nothing() -> None:
    with admin_farm() as (group, url), chromium() as browser:
        token = csrf_token(url)
        drain = {"backend": "pool", "server": "s1", "state": "drain"}
        refusals = [
            ({**drain, "csrf": token}, {"Origin": "http://evil.example"}),
            ({**drain, "csrf": token}, {"Sec-Fetch-Site": "cross-site"}),
            ({**drain, "csrf": ""}, {"Origin": url}),
            ({**drain, "csrf": "0" * 64}, {}),
        ]
        for fields, headers in refusals:
            status, text = post_form(url, fields, headers)
            assert status == 403, (fields, headers, text)
        status, text = post_form(url, drain, {})  # no csrf field at all
        assert (status, text) == (400, "400 bad request: missing field 'csrf'\n")

        # A page of another site that knows the token: the browser names its origin.
        page = browser.new_context(
            http_credentials={"username": USER, "password": PASSWORD}
        ).new_page()
        evil = (
            f'<form method="post" action="{url}/stats/action">'
            '<input type="hidden" name="backend" value="pool">'
            '<input type="hidden" name="server" value="s1">'
            f'<input type="hidden" name="csrf" value="{token}">'
            '<button name="state" value="drain">win a prize</button></form>'
        )
        page.route(
            "http://evil.example/",
            lambda route: route.fulfill(body=evil, content_type="text/html"),
        )
        page.goto("http://evil.example/")
        with page.expect_navigation():
            page.get_by_text("win a prize").click()
        assert page.inner_text("body").startswith("403 forbidden: a request from another site")

        assert admin_states(url) == {"s1": ("READY", ""), "s2": ("READY", "")}
        assert not [line for line in group.lb.log_lines("info") if "admin action" in line]
        time.sleep(APPLIED_WITHIN)  # had anything been recorded, it would be applied by now
        assert sorted(who(group) for _ in range(2)) == ["s1", "s2"]

        # The same request with the token and from the page's origin does act: the
        # refusals above came from the checks, not from some other fault.
        status, _ = post_form(url, {**drain, "csrf": token}, {"Origin": url})
        assert status == 303
        assert admin_states(url)["s1"] == ("DRAIN", USER)


def test_without_admin_users_the_page_has_no_buttons_and_posts_get_403() -> None:
    with admin_farm(auth=False) as (group, url):
        status, page = request(url + "/stats")
        assert status == 200
        assert '<td class="admin">READY</td>' in page
        assert "<form" not in page and "csrf" not in page
        status, text = post_form(
            url, {"backend": "pool", "server": "s1", "state": "drain", "csrf": "x"}, {}
        )
        assert (status, text) == (403, "403 forbidden: an anonymous user may not act on servers\n")
        assert admin_states(url) == {"s1": ("READY", ""), "s2": ("READY", "")}
        assert sorted(who(group) for _ in range(2)) == ["s1", "s2"]


SLOW_SIZE = 24 * 1024 * 1024
SLOW_RATE = "1M"
"""curl's --limit-rate: about 24 s for SLOW_SIZE, less what the socket buffers hold."""


def transfer_bytes(page: Page, path: str) -> int | None:
    """The bytes so far of the transfer of ``path`` on the page; None when it is not there."""
    cell = page.locator("tr.transfer", has=page.locator(f'td.path:text-is("{path}")'))
    if cell.count() != 1:
        return None
    title = cell.locator("td.bytes").get_attribute("title")  # the exact count: "1,234 bytes"
    assert title is not None and title.endswith(" bytes"), title
    return int(title.removesuffix(" bytes").replace(",", ""))


def test_the_page_shows_transfers_in_progress_and_fits_a_phone(tmp_path: Path) -> None:
    content = os.urandom(SLOW_SIZE)
    upload = tmp_path / "up.bin"
    upload.write_bytes(os.urandom(SLOW_SIZE))
    down = tmp_path / "slow.bin"
    with (
        ThreadPoolExecutor(2) as pool,
        admin_farm(files={"slow.bin": content}) as (group, url),
        chromium() as browser,
    ):
        lb = group.lb

        def ftp(name: str) -> str:
            return clients.ftp_url(lb.host, lb.port, name, group.user, group.password)

        throttle = ["--limit-rate", SLOW_RATE]
        download = pool.submit(clients.curl_retr, ftp("slow.bin"), down, "epsv", None, throttle)
        uploading = pool.submit(clients.curl_stor, ftp("up.bin"), upload, "epsv", None, throttle)
        context = browser.new_context(
            http_credentials={"username": USER, "password": PASSWORD},
            # Wide enough for the backend's table with its buttons, for the screenshot.
            viewport={"width": 1900, "height": 700},
        )
        page = context.new_page()
        readings: list[int] = []

        def reading() -> int | None:
            page.goto(url + "/stats")
            now = transfer_bytes(page, "slow.bin")
            if now is not None:
                readings.append(now)
            return now

        wait_until(lambda: reading() and transfer_bytes(page, "up.bin"), WAIT, "both transfers")
        # The same transfer, read again: its bytes rise while curl reads.
        wait_until(lambda: (reading() or 0) > readings[0], WAIT, "the bytes to rise")
        wait_until(lambda: both_up(url), WAIT, "both servers UP")
        page.goto(url + "/stats")
        assert page.locator("span.version").inner_text() == f"version{__version__}"
        assert page.locator("span.pid").inner_text() == f"pid{lb.process.pid}"
        assert page.locator("span.workers").inner_text() == "workers1"
        assert page.locator("span.generation").inner_text() == "generation1"
        assert page.locator("span.uptime").inner_text().startswith("uptime")
        row = page.locator("tr.transfer", has=page.locator('td.path:text-is("slow.bin")'))
        texts = [row.locator("td").nth(i).inner_text() for i in range(9)]
        assert texts[2:5] == [group.user, texts[3], "RETR"] and texts[3].startswith("pool/s")
        keep_screenshot(page, tmp_path)  # with the transfers in progress

        # A phone: the page is no wider than the screen; the tables scroll in their boxes.
        phone = browser.new_context(
            http_credentials={"username": USER, "password": PASSWORD},
            viewport={"width": 390, "height": 844},
            device_scale_factor=3,
            is_mobile=True,
            has_touch=True,
        ).new_page()
        phone.goto(url + "/stats")
        widths = phone.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[1] == 390 and widths[0] <= widths[1], widths
        boxes = phone.locator("div.scroll")
        assert boxes.count() == 3  # frontend, backend, transfers
        assert boxes.nth(1).evaluate("box => box.scrollWidth > box.clientWidth")  # it scrolls

        download.result(120).check()
        uploading.result(120).check()
        assert hashlib.sha256(down.read_bytes()).digest() == hashlib.sha256(content).digest()
        (stored,) = group.holder_of("up.bin")
        assert hashlib.sha256((stored.root / "up.bin").read_bytes()).digest() == (
            hashlib.sha256(upload.read_bytes()).digest()
        )
        # Once done, they leave the table.
        wait_until(
            lambda: page.goto(url + "/stats") and page.locator("tr.transfer").count() == 0,
            WAIT,
            "the finished transfers to leave the table",
        )
        assert "No transfer in progress." in page.inner_text("body")
        context.close()
