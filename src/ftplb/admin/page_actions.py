"""The stats page's buttons: ``POST /stats/action`` from a plain HTML form.

The form sends ``backend``, ``server``, ``state`` (drain, maint or ready) and
``csrf``. The request passes, in this order:

1. the caller may act (an admin user), else 403;
2. it does not come from another site (``Origin``, ``Sec-Fetch-Site``), else 403;
3. a well-formed form, else 400;
4. the caller's CSRF token, else 403;
5. a known state (400) of a known server (404);

and then :meth:`ServerActions.act` records it, and the browser is sent back to
the page with ``303 See Other``, so that reloading it does not post again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from aiohttp import web

from ftplb.admin.actions import (
    ActionError,
    Caller,
    ServerActions,
    UnknownServerError,
    parse_action,
)
from ftplb.admin.csrf import CsrfTokens, cross_origin_reason
from ftplb.admin.stats_page import Buttons
from ftplb.balancing.overrides import OverrideError

__all__ = ["ACTION_PATH", "MAX_FORM_BYTES", "FormError", "PageActions", "PageForm", "parse_form"]

ACTION_PATH = "/stats/action"
PAGE_PATH = "/stats"
MAX_FORM_BYTES = 4096
"""Far above what the page's form sends: a larger body is not from the page."""

_FIELDS = ("backend", "server", "state", "csrf")


class FormError(ValueError):
    """A body that is not the page's form; the message is the 400's text."""


@dataclass(frozen=True, slots=True)
class PageForm:
    """The fields of one button press, as sent (not yet checked)."""

    backend: str
    server: str
    state: str
    csrf: str


def parse_form(body: bytes) -> PageForm:
    """The fields of an ``application/x-www-form-urlencoded`` body; FormError if malformed.

    Each of the four fields must be there exactly once and nothing else:
    a request the page's form cannot send is refused rather than guessed at.
    """
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text))
    except (UnicodeDecodeError, ValueError) as error:
        raise FormError(f"malformed form body: {error}") from error
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name not in _FIELDS:
            raise FormError(f"unknown field {name!r}")
        if name in fields:
            raise FormError(f"field {name!r} given twice")
        fields[name] = value
    missing = [name for name in _FIELDS if name not in fields]
    if missing:
        raise FormError(f"missing field {missing[0]!r}")
    return PageForm(**fields)


class PageActions:
    """Carries out the page's button presses and gives the page its buttons."""

    def __init__(self, actions: ServerActions, tokens: CsrfTokens | None = None) -> None:
        self.actions = actions
        self.tokens = tokens or CsrfTokens()

    def buttons(self, caller: Caller) -> Buttons | None:
        """The buttons for ``caller``'s page; None for a caller who may not act."""
        if not caller.may_act:
            return None
        return Buttons(action=ACTION_PATH, token=self.tokens.token(caller.name))

    async def handle(
        self, request: web.Request, caller: Caller, headers: Mapping[str, str]
    ) -> web.Response:
        """Answer one ``POST`` to :data:`ACTION_PATH`; ``headers`` go on every answer."""

        def answer(status: int, text: str) -> web.Response:
            return web.Response(status=status, text=f"{status} {text}\n", headers=headers)

        if not caller.may_act:
            who = f"user {caller.name!r}" if caller.name else "an anonymous user"
            return answer(403, f"forbidden: {who} may not act on servers")
        own_origin = f"{request.scheme}://{request.host}"
        refused = cross_origin_reason(
            request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), own_origin
        )
        if refused is not None:
            return answer(403, f"forbidden: a request from another site ({refused})")
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            return answer(413, "form too large")
        body = await request.content.read(MAX_FORM_BYTES + 1)
        if len(body) > MAX_FORM_BYTES:
            return answer(413, "form too large")
        try:
            form = parse_form(body)
        except FormError as error:
            return answer(400, f"bad request: {error}")
        if not self.tokens.valid(caller.name, form.csrf):
            return answer(
                403, "forbidden: missing or invalid CSRF token; reload the stats page and retry"
            )
        try:
            action = parse_action({"state": form.state})
        except ActionError as error:
            return answer(400, f"bad request: {error}")
        try:
            # The record is a locked file: blocking I/O, off the event loop.
            await asyncio.to_thread(self.actions.act, caller, form.backend, form.server, action)
        except UnknownServerError as error:
            return answer(404, f"not found: {error}")
        except (OverrideError, OSError) as error:
            return answer(500, f"cannot record the action: {error}")
        return web.Response(status=303, headers={**headers, "Location": PAGE_PATH})
