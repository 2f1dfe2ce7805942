"""The admin HTTP listener: the stats page, the JSON stats, the metrics and the API.

Reading: ``/stats`` (HTML), ``/stats.json``, ``/metrics``,
``GET /api/servers[/{backend}/{server}]`` and ``GET /api/bans``. Acting:
``POST /api/servers/{backend}/{server}`` with a JSON body, and ``DELETE
/api/bans/{address}``, for an admin user (see docs/admin.md). It reads the
metric files of every process (see :mod:`ftplb.runtime.metrics`), so one
listener, in any one process, shows the sums over all workers; an action goes
to the shared record of overrides, which every process follows, and a lifted
ban to the login defender's shared record. Reading the metric files is
blocking I/O, so it runs in a thread: the event loop keeps serving sessions
while a page is built.

Start it once per balancer (in the supervisor, or in the only process)::

    admin = await start_admin(config.admin, directory, config, log)
    ...
    admin.update_config(new_config)   # after a reload: new names, same files
    await admin.close()
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from ftplb.admin.actions import (
    ActionError,
    Caller,
    ServerActions,
    UnknownServerError,
    parse_action,
)
from ftplb.admin.api import find_server, servers_json
from ftplb.admin.auth import CHALLENGE, Authenticator
from ftplb.admin.csrf import cross_origin_reason
from ftplb.admin.overrides_store import OverridesStore
from ftplb.admin.page_actions import ACTION_PATH, PageActions
from ftplb.admin.process_metrics import BuildInfo, DefenderBans, Processes, start_time
from ftplb.admin.snapshot import (
    ProcessStats,
    Snapshot,
    ban_info,
    build_snapshot,
    collect,
    snapshot_dict,
)
from ftplb.admin.stats_page import render
from ftplb.balancing.defender import Ban
from ftplb.balancing.overrides import Override, OverrideError, ServerKey
from ftplb.config.general import Admin
from ftplb.config.schema import Config
from ftplb.runtime.defender import DefenderStore, StoreError, active_bans, lift_ban
from ftplb.runtime.logs import EventLog, LogWarning
from ftplb.runtime.process_report import ProcessReport, read_reports

__all__ = ["AdminError", "AdminServer", "start_admin"]

_NO_DEFENDER = "the login defender is off: the configuration has no [defender] section"

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # The page has inline CSS and forms to itself, nothing else: no scripts, no frames.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'",
    "X-Frame-Options": "DENY",
}


def _version() -> str:
    try:
        return importlib.metadata.version("ftplb")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_VERSION = _version()


class AdminError(Exception):
    """The admin listener cannot start; the message says why."""


Handler = Callable[[web.Request, Caller, Mapping[str, str]], Awaitable[web.StreamResponse]]
"""A route's handler: the request, its authenticated caller, the path's named parts."""


@dataclass(frozen=True, slots=True)
class Route:
    methods: frozenset[str]
    path: re.Pattern[str]
    handler: Handler


_READ = frozenset({"GET", "HEAD"})
_SERVER_PATH = r"/api/servers/(?P<backend>[^/]+)/(?P<server>[^/]+)"
_BAN_PATH = r"/api/bans/(?P<address>[^/]+)"


class AdminServer:
    """A running admin listener."""

    def __init__(
        self,
        settings: Admin,
        directory: str,
        config: Config,
        log: EventLog | None = None,
        defender: DefenderStore | None = None,
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.config = config
        self.log = log or EventLog(config.defaults.log_format)
        self.auth = Authenticator(settings)
        self.store = OverridesStore(directory)
        self.actions = ServerActions(self.store, config, self.log)
        self.page_actions = PageActions(self.actions)
        self.defender = defender
        """The login defender's record (the file the workers share, or a lone process's)."""
        self.started = start_time(os.getpid()) or time.time()
        self.generation = 1
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] = (settings.bind.host, settings.bind.port)
        # Matched in order against the whole path; anything else is a 404.
        self.routes: list[Route] = [
            self._route(_READ, "/stats", self._stats_page),
            self._route(_READ, "/stats.json", self._stats_json),
            self._route(_READ, "/metrics", self._metrics),
            self._route(_READ, "/api/servers", self._api_servers),
            self._route(_READ, _SERVER_PATH, self._api_server),
            self._route({"POST"}, _SERVER_PATH, self._api_act),
            self._route({"POST"}, re.escape(ACTION_PATH), self._page_action),
            self._route(_READ, "/api/bans", self._api_bans),
            self._route({"DELETE"}, _BAN_PATH, self._api_lift),
        ]

    @staticmethod
    def _route(methods: set[str] | frozenset[str], path: str, handler: Handler) -> Route:
        return Route(frozenset(methods), re.compile(path), handler)

    def update_config(self, config: Config, generation: int | None = None) -> None:
        """Lay out later pages, and check later actions, along ``config`` (after a reload).

        Users and passwords follow the new ``[admin]`` section; the listener's
        address stays the one it opened with. ``generation`` is the reload's number.
        """
        self.config = config
        if generation is not None:
            self.generation = generation
        self.actions.update_config(config)
        new = config.admin
        if new is not None and (new.users, new.user, new.password) != (
            self.settings.users,
            self.settings.user,
            self.settings.password,
        ):
            self.auth = Authenticator(new)
            self.settings = self.settings.model_copy(
                update={"users": new.users, "user": new.user, "password": new.password}
            )

    async def _open(self) -> None:
        if self.settings.plain_password:
            self.log.warning(LogWarning.PLAIN_ADMIN_PASSWORD)
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
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        caller = await self.auth.caller(request.headers.get("Authorization"))
        if caller is None:
            return web.Response(
                status=401,
                text="401 authentication required\n",
                headers={**_HEADERS, "WWW-Authenticate": CHALLENGE},
            )
        for route in self.routes:
            if request.method not in route.methods:
                continue
            match = route.path.fullmatch(request.path)
            if match is not None:
                return await route.handler(request, caller, match.groupdict())
        return _not_found()

    async def _metrics(
        self, request: web.Request, caller: Caller, parts: Mapping[str, str]
    ) -> web.StreamResponse:
        bans = self._bans()
        count = None if bans is None or isinstance(bans, str) else len(bans)
        body = await asyncio.to_thread(_exposition, self.directory, count)
        return web.Response(body=body, headers={**_HEADERS, "Content-Type": CONTENT_TYPE_LATEST})

    async def _stats_page(
        self, request: web.Request, caller: Caller, parts: Mapping[str, str]
    ) -> web.StreamResponse:
        buttons = self.page_actions.buttons(caller)
        page = render(await self._snapshot(), self.settings.stats_refresh, buttons)
        return web.Response(text=page, content_type="text/html", headers=_HEADERS)

    async def _page_action(
        self, request: web.Request, caller: Caller, parts: Mapping[str, str]
    ) -> web.StreamResponse:
        return await self.page_actions.handle(request, caller, _HEADERS)

    async def _stats_json(
        self, request: web.Request, caller: Caller, parts: Mapping[str, str]
    ) -> web.StreamResponse:
        return _json(snapshot_dict(await self._snapshot()))

    async def _api_servers(
        self, request: web.Request, caller: Caller, parts: Mapping[str, str]
    ) -> web.StreamResponse:
        try:
            snapshot, overrides = await self._servers_state()
        except OverrideError as error:
            return _json_error(500, str(error))
        return _json(servers_json(snapshot, overrides))

    async def _api_server(
        self, request: web.Request, caller: Caller, parts: Mapping[str, str]
    ) -> web.StreamResponse:
        return await self._server_answer(parts["backend"], parts["server"])

    async def _api_act(
        self, request: web.Request, caller: Caller, parts: Mapping[str, str]
    ) -> web.StreamResponse:
        backend, server = parts["backend"], parts["server"]
        if not caller.may_act:
            who = f"user {caller.name!r} is" if caller.name else "anonymous callers are"
            return _json_error(403, f"{who} read-only: actions need a user with role = admin")
        try:
            self.actions.configured_weight(backend, server)
        except UnknownServerError as error:
            return _json_error(404, str(error))
        # Only a script can send this type: an HTML form on another site
        # cannot, so a browser logged in here cannot be made to act (CSRF).
        if request.content_type != "application/json":
            return _json_error(415, "the body must be JSON, sent as Content-Type: application/json")
        try:
            body = json.loads(await request.read())
        except ValueError as error:
            return _json_error(400, f"the body is not valid JSON: {error}")
        try:
            action = parse_action(body)
        except ActionError as error:
            return _json_error(400, str(error))
        try:
            # A lock, a read and a replace of one small local file: quick
            # enough to do here, and the action's log line stays on the loop.
            self.actions.act(caller, backend, server, action)
        except UnknownServerError as error:
            return _json_error(404, str(error))
        except OverrideError as error:
            return _json_error(500, str(error))
        return await self._server_answer(backend, server)

    async def _api_bans(
        self, request: web.Request, caller: Caller, parts: Mapping[str, str]
    ) -> web.StreamResponse:
        bans = self._bans()
        if bans is None:
            return _json_error(404, _NO_DEFENDER)
        if isinstance(bans, str):
            return _json_error(500, bans)
        now = time.time()
        return _json([asdict(ban_info(ban, now)) for ban in bans])

    async def _api_lift(
        self, request: web.Request, caller: Caller, parts: Mapping[str, str]
    ) -> web.StreamResponse:
        if not caller.may_act:
            who = f"user {caller.name!r} is" if caller.name else "anonymous callers are"
            return _json_error(
                403, f"{who} read-only: lifting a ban needs a user with role = admin"
            )
        # No HTML form can send DELETE, and a script on another site would need a
        # CORS preflight that is never granted; a browser's own word is checked too.
        refused = cross_origin_reason(
            request.headers.get("Origin"),
            request.headers.get("Sec-Fetch-Site"),
            f"{request.scheme}://{request.host}",
        )
        if refused is not None:
            return _json_error(403, f"a request from another site ({refused})")
        store = self.defender
        if store is None or self.config.defender is None:
            return _json_error(404, _NO_DEFENDER)
        try:
            lifted = lift_ban(store, parts["address"])
        except ValueError:
            return _json_error(400, f"{parts['address']!r} is not an IP address")
        except StoreError as error:
            return _json_error(500, str(error))
        if lifted is None:
            return _json_error(404, f"{parts['address']} is not banned")
        self.log.info("ban lifted", user=caller.name or "-", client=lifted.address)
        return _json(asdict(ban_info(lifted, time.time())))

    def _bans(self) -> list[Ban] | str | None:
        """The bans in force; None without a defender; the reason when the record is unreadable.

        Read on the event loop: a lone process's record lives in its memory.
        """
        if self.defender is None or self.config.defender is None:
            return None
        try:
            return active_bans(self.defender)
        except StoreError as error:
            return str(error)

    async def _server_answer(self, backend: str, server: str) -> web.StreamResponse:
        try:
            snapshot, overrides = await self._servers_state()
        except OverrideError as error:
            return _json_error(500, str(error))
        found = find_server(snapshot, overrides, backend, server)
        if found is None:
            return _json_error(404, f"no server {backend}/{server}")
        return _json(found)

    async def _snapshot(self) -> Snapshot:
        families, overrides, reports = await asyncio.to_thread(self._read)
        return self._build(families, overrides, reports)

    def _build(
        self,
        families: list[Metric],
        overrides: dict[ServerKey, Override] | None,
        reports: list[ProcessReport],
    ) -> Snapshot:
        bans = self._bans()
        return build_snapshot(
            self.config,
            families,
            overrides=overrides,
            reports=reports,
            process=self.process_stats(),
            # An unreadable record shows as no bans; the balancers log why.
            bans=[] if isinstance(bans, str) else bans,
        )

    def process_stats(self) -> ProcessStats:
        """The header: this process hosts the admin listener (the master, or the lone one)."""
        now = time.time()
        return ProcessStats(
            version=_VERSION,
            pid=os.getpid(),
            started=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            uptime=round(now - self.started, 3),
            workers=self.config.defaults.workers,
            generation=self.generation,
        )

    def _read(self) -> tuple[list[Metric], dict[ServerKey, Override] | None, list[ProcessReport]]:
        """The metrics, the record of admin states (None if unreadable) and the processes'
        reports: blocking I/O."""
        try:
            overrides: dict[ServerKey, Override] | None = self.store.load()
        except OverrideError:
            overrides = None  # shown as unknown; the balancers log why
        return collect(self.directory), overrides, read_reports(self.directory)

    async def _servers_state(self) -> tuple[Snapshot, dict[ServerKey, Override]]:
        families, overrides, reports = await asyncio.to_thread(
            lambda: (collect(self.directory), self.store.load(), read_reports(self.directory))
        )
        return self._build(families, overrides, reports), overrides


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


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(data, indent=1) + "\n",
        content_type="application/json",
        headers=_HEADERS,
    )


def _json_error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _exposition(directory: str, bans: int | None = None) -> bytes:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    registry.register(BuildInfo(_VERSION))
    registry.register(Processes(directory))
    if bans is not None:
        registry.register(DefenderBans(bans))
    return generate_latest(registry)


async def start_admin(
    settings: Admin,
    directory: str,
    config: Config,
    log: EventLog | None = None,
    *,
    defender: DefenderStore | None = None,
) -> AdminServer:
    """Listen on ``settings.bind`` and serve the metrics found in ``directory``.

    ``directory`` is the one every process gave to ``ftplb.runtime.metrics.enable``;
    actions are recorded there too, and logged on ``log`` with the user.
    ``defender`` is the login defender's record, whose bans it shows and lifts.
    Raises :class:`AdminError` when the address cannot be bound.
    """
    server = AdminServer(settings, directory, config, log, defender)
    await server._open()
    return server
