"""The stats page's form POST: the form parser, and the answers of the handler.

The handler runs behind a real aiohttp server on loopback, with a real
:class:`ServerActions` writing the shared record into a temporary directory.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from ftplb.admin.actions import Caller, Role, ServerActions
from ftplb.admin.csrf import CsrfTokens
from ftplb.admin.overrides_store import OverridesStore
from ftplb.admin.page_actions import (
    ACTION_PATH,
    MAX_FORM_BYTES,
    FormError,
    PageActions,
    PageForm,
    parse_form,
)
from ftplb.admin.stats_page import Buttons
from ftplb.balancing.overrides import Override
from ftplb.balancing.state import AdminState
from ftplb.config.load import load_config_text
from ftplb.runtime.logs import EventLog
from tests.config_texts import TWO_SERVERS

# ------------------------------------------------------------------- parser


def test_the_form_of_a_button_press() -> None:
    assert parse_form(b"backend=pool&server=s1&csrf=ab12&state=drain") == PageForm(
        backend="pool", server="s1", state="drain", csrf="ab12"
    )


def test_form_values_are_url_decoded() -> None:
    body = b"backend=my+pool&server=s%C3%A9&csrf=&state=%20x"
    assert parse_form(body) == PageForm(backend="my pool", server="sé", state=" x", csrf="")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "missing field 'backend'"),
        (b"backend=pool&server=s1&state=drain", "missing field 'csrf'"),
        (b"backend=pool&server=s1&csrf=t", "missing field 'state'"),
        (b"backend=pool&server=s1&state=drain&csrf=t&weight=3", "unknown field 'weight'"),
        (b"backend=pool&server=s1&state=drain&state=ready&csrf=t", "field 'state' given twice"),
        (b"backend=pool&server=s1&state=drain&csrf=t&csrf=t", "field 'csrf' given twice"),
    ],
)
def test_a_form_the_page_cannot_send_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(FormError) as caught:
        parse_form(body)
    assert str(caught.value) == reason


@pytest.mark.parametrize("body", [b"backend", b"backend=pool&&server=s1", b"\xff=1"])
def test_a_malformed_body_is_refused(body: bytes) -> None:
    with pytest.raises(FormError) as caught:
        parse_form(body)
    assert str(caught.value).startswith("malformed form body: ")


# ------------------------------------------------------------------ handler

CONFIG = load_config_text(TWO_SERVERS)
ADMIN = Caller("ops", Role.ADMIN)
VIEWER = Caller("viewer", Role.READ_ONLY)
HEADERS = {"X-Test": "1"}


@dataclass
class Harness:
    client: TestClient[web.Request, web.Application]
    store: OverridesStore
    tokens: CsrfTokens
    log: io.StringIO

    async def post(
        self, body: str | bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        response = await self.client.post(
            ACTION_PATH,
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", **(headers or {})},
            allow_redirects=False,
        )
        return response.status, await response.text(), response


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    store = OverridesStore(str(tmp_path))
    stream = io.StringIO()
    tokens = CsrfTokens()
    page = PageActions(ServerActions(store, CONFIG, EventLog("text", stream)), tokens)

    async def handle(request: web.Request) -> web.Response:
        # The listener derives the caller from basic auth; here a header names it.
        caller = VIEWER if request.headers.get("X-Caller") == "viewer" else ADMIN
        return await page.handle(request, caller, HEADERS)

    app = web.Application()
    app.router.add_post(ACTION_PATH, handle)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield Harness(client, store, tokens, stream)


def form(tokens: CsrfTokens, state: str = "drain", server: str = "s1", user: str = "ops") -> str:
    return f"backend=pool&server={server}&state={state}&csrf={tokens.token(user)}"


async def test_a_button_press_records_the_state_and_goes_back_to_the_page(
    harness: Harness,
) -> None:
    status, _, response = await harness.post(form(harness.tokens))
    assert (status, response.headers["Location"]) == (303, "/stats")
    assert response.headers["X-Test"] == "1"
    assert harness.store.load() == {("pool", "s1"): Override(admin=AdminState.DRAIN, user="ops")}
    (line,) = harness.log.getvalue().splitlines()
    assert line.split(" ", 1)[1] == (
        'info message="admin action" user=ops backend=pool server=s1 state=DRAIN'
    )
    status, _, _ = await harness.post(form(harness.tokens, state="ready"))
    assert status == 303
    assert harness.store.load() == {}


async def test_the_same_origin_passes(harness: Harness) -> None:
    own = f"http://127.0.0.1:{harness.client.port}"
    headers = {"Origin": own, "Sec-Fetch-Site": "same-origin"}
    status, _, _ = await harness.post(form(harness.tokens, state="maint"), headers)
    assert status == 303
    assert harness.store.load()[("pool", "s1")].admin is AdminState.MAINT


@pytest.mark.parametrize(
    ("headers", "body", "status", "text"),
    [
        (
            {"X-Caller": "viewer"},
            "valid",
            403,
            "403 forbidden: user 'viewer' may not act on servers\n",
        ),
        (
            {"Origin": "http://evil.example"},
            "valid",
            403,
            "403 forbidden: a request from another site (Origin 'http://evil.example' is not "
            "'http://127.0.0.1:PORT')\n",
        ),
        (
            {"Sec-Fetch-Site": "cross-site"},
            "valid",
            403,
            "403 forbidden: a request from another site (Sec-Fetch-Site: cross-site)\n",
        ),
        (
            {},
            "backend=pool&server=s1&state=drain&csrf=",
            403,
            "403 forbidden: missing or invalid CSRF token; reload the stats page and retry\n",
        ),
        (
            {},
            "of viewer",
            403,
            "403 forbidden: missing or invalid CSRF token; reload the stats page and retry\n",
        ),
        (
            {},
            "backend=pool&server=s1&state=drain",
            400,
            "400 bad request: missing field 'csrf'\n",
        ),
        (
            {},
            "bad state",
            400,
            '400 bad request: "state" must be "drain", "maint" or "ready"\n',
        ),
        ({}, "unknown server", 404, "404 not found: no server pool/s9\n"),
        ({}, "x" * (MAX_FORM_BYTES + 1), 413, "413 form too large\n"),
    ],
)
async def test_refused_requests_change_nothing(
    harness: Harness, headers: dict[str, str], body: str, status: int, text: str
) -> None:
    bodies = {
        "valid": form(harness.tokens),
        "of viewer": form(harness.tokens, user="viewer"),
        "bad state": form(harness.tokens, state="down"),
        "unknown server": form(harness.tokens, server="s9"),
    }
    got_status, got_text, response = await harness.post(bodies.get(body, body), headers)
    expected = text.replace("PORT", str(harness.client.port))
    assert (got_status, got_text) == (status, expected)
    assert response.headers["X-Test"] == "1"
    assert harness.store.load() == {}
    assert "admin action" not in harness.log.getvalue()


def test_buttons_only_for_a_caller_who_may_act() -> None:
    tokens = CsrfTokens()
    page = PageActions(ServerActions(OverridesStore("/nonexistent"), CONFIG, EventLog()), tokens)
    assert page.buttons(ADMIN) == Buttons(action=ACTION_PATH, token=tokens.token("ops"))
    assert page.buttons(VIEWER) is None
    assert page.buttons(Caller("", Role.READ_ONLY)) is None


async def test_an_unreadable_record_is_a_500_and_stays_as_it_was(harness: Harness) -> None:
    Path(harness.store.path).write_text("{not json")
    status, text, _ = await harness.post(form(harness.tokens))
    assert status == 500
    assert text.startswith(f"500 cannot record the action: {harness.store.path}: ")
    assert Path(harness.store.path).read_text() == "{not json"
