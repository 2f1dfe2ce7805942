"""The admin HTTP listener: ``/stats`` (HTML), ``/stats.json``, ``/metrics``,
and ``POST /stats/action`` for the page's buttons (:mod:`ftplb.admin.page_actions`).

It reads the metric files of every process (see :mod:`ftplb.runtime.metrics`),
so one listener, in any one process, shows the sums over all workers. Reading
the files is blocking I/O, so it runs in a thread: the event loop keeps
serving sessions while a page is built.

Start it once per balancer (in the supervisor, or in the only process)::

    admin = await start_admin(config.admin, directory, config, log)
    ...
    admin.update_config(new_config)   # after a reload: new names, same files
    await admin.close()
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import socket

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from ftplb.admin.actions import Caller, Role, ServerActions
from ftplb.admin.overrides_store import OverridesStore
from ftplb.admin.page_actions import ACTION_PATH, PageActions
from ftplb.admin.snapshot import Snapshot, build_snapshot, collect, snapshot_dict
from ftplb.admin.stats_page import render
from ftplb.balancing.overrides import Override, OverrideError, ServerKey
from ftplb.config.general import Admin
from ftplb.config.schema import Config
from ftplb.runtime.logs import EventLog

__all__ = ["AdminError", "AdminServer", "start_admin"]

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # The page has inline CSS and forms to itself, nothing else: no scripts, no frames.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Frame-Options": "DENY",
}


class AdminError(Exception):
    """The admin listener cannot start; the message says why."""


class AdminServer:
    """A running admin listener."""

    def __init__(
        self, settings: Admin, directory: str, config: Config, log: EventLog | None = None
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.config = config
        self.store = OverridesStore(directory)
        self.actions = ServerActions(
            self.store, config, log if log is not None else EventLog(config.defaults.log_format)
        )
        self.page_actions = PageActions(self.actions)
        self._credentials: bytes | None = None
        if settings.user is not None and settings.password is not None:
            self._credentials = f"{settings.user}:{settings.password}".encode()
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] = (settings.bind.host, settings.bind.port)

    def update_config(self, config: Config) -> None:
        """Lay out later pages, and check later actions, along ``config`` (after a reload)."""
        self.config = config
        self.actions.update_config(config)

    async def _open(self) -> None:
        sock = _listen(self.settings.bind.host, self.settings.bind.port)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # access_log=None: the balancer's own log is for sessions, and a
        # scraper every few seconds would drown it.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        sockname = sock.getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))

    async def close(self) -> None:
        """Stop listening; requests in flight are cut short."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # ------------------------------------------------------------ requests
    def _caller(self, header: str | None) -> Caller | None:
        """Who sent the request; None when the credentials are missing or wrong."""
        if self._credentials is None:
            return Caller("", Role.READ_ONLY)
        if header is None:
            return None
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            given = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, self._credentials):
            return None
        return Caller(self.settings.user or "", Role.ADMIN)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        caller = self._caller(request.headers.get("Authorization"))
        if caller is None:
            return web.Response(
                status=401,
                text="401 authentication required\n",
                headers={**_HEADERS, "WWW-Authenticate": 'Basic realm="ftplb", charset="UTF-8"'},
            )
        # -- the stats page's buttons (page_actions.py) --
        if request.path == ACTION_PATH and request.method == "POST":
            return await self.page_actions.handle(request, caller, _HEADERS)
        # --
        if request.method not in ("GET", "HEAD"):
            return _not_found()
        if request.path == "/metrics":
            body = await asyncio.to_thread(_exposition, self.directory)
            return web.Response(
                body=body, headers={**_HEADERS, "Content-Type": CONTENT_TYPE_LATEST}
            )
        if request.path == "/stats":
            buttons = self.page_actions.buttons(caller)
            page = render(await self._snapshot(), self.settings.stats_refresh, buttons)
            return web.Response(text=page, content_type="text/html", headers=_HEADERS)
        if request.path == "/stats.json":
            data = snapshot_dict(await self._snapshot())
            return web.Response(
                text=json.dumps(data, indent=1) + "\n",
                content_type="application/json",
                headers=_HEADERS,
            )
        return _not_found()

    async def _snapshot(self) -> Snapshot:
        families, overrides = await asyncio.to_thread(self._read)
        return build_snapshot(self.config, families, overrides=overrides)

    def _read(self) -> tuple[list[Metric], dict[ServerKey, Override] | None]:
        """The metrics and the record of admin states (None if unreadable): blocking I/O."""
        try:
            overrides: dict[ServerKey, Override] | None = self.store.load()
        except OverrideError:
            overrides = None  # shown as unknown; the balancers log why
        return collect(self.directory), overrides


def _listen(host: str, port: int) -> socket.socket:
    host = "127.0.0.1" if host == "localhost" else host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # "[::]" means IPv6 only, as for frontends: "*" is the IPv4 wildcard.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as error:
        sock.close()
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        reason = error.strerror or str(error)
        raise AdminError(f"[admin] cannot listen on {shown}: {reason}") from error
    return sock


def _not_found() -> web.Response:
    return web.Response(status=404, text="404 not found\n", headers=_HEADERS)


def _exposition(directory: str) -> bytes:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


async def start_admin(
    settings: Admin, directory: str, config: Config, log: EventLog | None = None
) -> AdminServer:
    """Listen on ``settings.bind`` and serve the metrics found in ``directory``.

    ``directory`` is the one every process gave to ``ftplb.runtime.metrics.enable``,
    and holds the shared record of admin actions. Actions are logged to ``log``
    (a new log in the configured format when None).
    Raises :class:`AdminError` when the address cannot be bound.
    """
    server = AdminServer(settings, directory, config, log)
    await server._open()
    return server
