"""Health probes: one bounded check of one backend, reported as a ProbeResult.

Probes use plain asyncio streams: they run a few times a second at most and
are not on the data path. A probe never raises; every failure, including a
server that talks garbage, becomes ``ProbeResult(ok=False, ...)`` with a detail
that an operator can act on ("connect refused", "timeout reading banner",
"530 login failed").
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass

from ftplb.proto.addresses import HostPort, kernel_host
from ftplb.proto.upstream import (
    Credentials,
    DialogueReady,
    DialogueSettings,
    SendToServer,
    ServerDialogue,
    StartServerTls,
)
from ftplb.runtime.proxy_protocol import ProxyOutlet
from ftplb.runtime.tls import BackendTls

PROBE_KINDS = ("tcp", "ftp", "login")

_READ_SIZE = 4096
_MAX_REPLY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """The outcome of one probe."""

    ok: bool
    layer: str  # "L4" (connect), "L6" (TLS handshake), "L7" (FTP)
    detail: str
    duration: float  # seconds


class _CheckFailedError(Exception):
    """A check that failed for a known reason, carrying the layer and detail."""

    def __init__(self, layer: str, detail: str) -> None:
        super().__init__(detail)
        self.layer = layer
        self.detail = detail


class _Progress:
    """Where the probe is, so that a timeout can say what it was waiting for.

    Before the dialogue starts, the probe's own step (connecting, an implicit
    TLS handshake); then the dialogue's.
    """

    __slots__ = ("_dialogue", "_layer", "_step", "passed")

    def __init__(self) -> None:
        self._layer = "L4"
        self._step = "connecting"
        self._dialogue: ServerDialogue | None = None
        # Set once the check has passed and only the polite QUIT remains: a
        # server that then stalls or resets has still answered correctly.
        self.passed = ""

    def at(self, step: str, layer: str = "L7") -> None:
        self._dialogue = None
        self._layer = layer
        self._step = step

    def follow(self, dialogue: ServerDialogue) -> None:
        self._dialogue = dialogue

    @property
    def layer(self) -> str:
        return self._layer if self._dialogue is None else self._dialogue.layer

    @property
    def step(self) -> str:
        return self._step if self._dialogue is None else self._dialogue.step


async def probe(  # noqa: PLR0917 - the runtime calls it positionally
    kind: str,
    host: str,
    port: int,
    timeout: float,
    user: str | None = None,
    password: str | None = None,
    *,
    tls: BackendTls | None = None,
    proxy: ProxyOutlet | None = None,
) -> ProbeResult:
    """Check ``host:port`` with a ``kind`` probe ("tcp", "ftp" or "login").

    "tcp" only connects. "ftp" reads the whole greeting, requires 220, then
    sends QUIT. "login" also sends USER and PASS and requires 230. The whole
    probe, connect and close included, is bounded by ``timeout`` seconds.

    With ``tls`` (the backend's TLS towards its servers), "ftp" and "login"
    handshake right after connecting when it is implicit, and "login" sends
    AUTH TLS and handshakes before USER when it is explicit.  A failed
    handshake is reported at layer "L6".

    With ``proxy`` (the backend's ``send_proxy``), every probe starts with a
    PROXY header naming its own two addresses, since a server that expects
    the header refuses a connection without one.
    """
    started = time.monotonic()
    progress = _Progress()

    def result(ok: bool, layer: str, detail: str) -> ProbeResult:
        return ProbeResult(ok, layer, detail, time.monotonic() - started)

    if kind not in PROBE_KINDS:
        return result(False, "L4", f"unknown probe kind {kind!r}")
    if kind == "login":
        problem = _credentials_problem(user, password)
        if problem:
            return result(False, "L7", problem)
    try:
        async with asyncio.timeout(timeout):
            layer, detail = await _run(
                kind=kind,
                host=host,
                port=port,
                user=user,
                password=password,
                progress=progress,
                tls=tls,
                proxy=proxy,
            )
    except (TimeoutError, OSError) as exc:
        if progress.passed:
            return result(True, "L7", progress.passed)
        if isinstance(exc, ssl.SSLError):
            return result(False, "L6", f"TLS handshake failed: {_tls_reason(exc)}")
        if isinstance(exc, TimeoutError):
            return result(False, progress.layer, _timeout_detail(progress.step))
        if isinstance(exc, ConnectionRefusedError):
            return result(False, "L4", "connect refused")
        where = "connect" if progress.step == "connecting" else progress.step
        return result(False, progress.layer, f"{where} failed: {exc.strerror or exc}")
    except _CheckFailedError as exc:
        return result(False, exc.layer, exc.detail)
    except Exception as exc:  # a probe must never take its checker down
        return result(False, progress.layer, f"probe error {progress.step}: {exc!r}")
    return result(True, layer, detail)


def _tls_reason(error: ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return f"certificate verify failed: {error.verify_message}"
    return error.reason or str(error)


def _timeout_detail(step: str) -> str:
    if step == "connecting":
        return "connect timeout"
    return f"timeout {step}"


def _credentials_problem(user: str | None, password: str | None) -> str:
    if not user:
        return "login probe needs a user"
    # A CR or LF would let the configured text inject a second command.
    if any(ch in text for text in (user, password or "") for ch in "\r\n"):
        return "login probe credentials contain CR or LF"
    return ""


def _dialogue_settings(
    kind: str, tls: BackendTls | None, user: str | None, password: str | None
) -> DialogueSettings:
    """An "ftp" probe reads the greeting (in the clear, with explicit TLS); a
    "login" probe also secures the connection and logs in. Neither protects data."""
    if kind == "ftp":
        return DialogueSettings(
            tls="implicit" if tls is not None and tls.mode == "implicit" else "none",
            quit_at_end=True,
            max_reply_bytes=_MAX_REPLY_BYTES,
        )
    return DialogueSettings(
        tls="none" if tls is None else tls.mode,
        login=Credentials(user or "", password or ""),
        quit_at_end=True,
        max_reply_bytes=_MAX_REPLY_BYTES,
    )


async def _run(
    *,
    kind: str,
    host: str,
    port: int,
    user: str | None,
    password: str | None,
    progress: _Progress,
    tls: BackendTls | None = None,
    proxy: ProxyOutlet | None = None,
) -> tuple[str, str]:
    """Carry out the probe; returns (layer, detail) on success, raises on failure."""
    reader, writer = await asyncio.open_connection(host, port)
    closed_cleanly = False
    try:
        if proxy is not None:
            local, peer = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
            writer.write(
                proxy.header(
                    HostPort(kernel_host(local[0]), local[1]),
                    HostPort(kernel_host(peer[0]), peer[1]),
                )
            )
            await writer.drain()
        if kind == "tcp":
            return "L4", "connected"
        if tls is not None and tls.mode == "implicit":
            await _start_tls(writer, tls, host, progress)
        dialogue = ServerDialogue(_dialogue_settings(kind, tls, user, password))
        progress.follow(dialogue)
        detail = await _converse(dialogue, reader, writer, tls, host)
        # The dialogue has written its QUIT: the check passed, whatever follows.
        progress.passed = detail
        progress.at("sending QUIT")
        await writer.drain()
        progress.at("closing")
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        closed_cleanly = True
        return "L7", detail
    finally:
        if not closed_cleanly:
            # Abort rather than close: a probe that failed, timed out or was
            # cancelled must not linger waiting to flush to a stuck server. A
            # plain connect check ends the same way, as HAProxy's does, so that
            # frequent checks leave no TIME_WAIT sockets behind.
            writer.transport.abort()


async def _converse(
    dialogue: ServerDialogue,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    tls: BackendTls | None,
    host: str,
) -> str:
    """Drive the dialogue to its end: its detail when it passed, else _CheckFailedError."""
    actions = dialogue.start()
    while True:
        handshake = False
        for action in actions:
            if isinstance(action, SendToServer):
                writer.write(action.data)
            elif isinstance(action, StartServerTls):
                handshake = True
            elif isinstance(action, DialogueReady):
                return action.detail
            else:
                raise _CheckFailedError(action.layer, action.detail)
        await writer.drain()
        if handshake:
            assert tls is not None
            try:
                await writer.start_tls(tls.context, server_hostname=tls.name_for(host))
            except ssl.SSLError as exc:
                actions = dialogue.tls_failed(_tls_reason(exc))
            else:
                actions = dialogue.tls_started()
            continue
        try:
            data = await reader.read(_READ_SIZE)
        except ConnectionError as exc:
            raise _CheckFailedError("L7", f"connection lost {dialogue.step}") from exc
        actions = dialogue.server_data(data) if data else dialogue.server_closed()


async def _start_tls(
    writer: asyncio.StreamWriter, tls: BackendTls, host: str, progress: _Progress
) -> None:
    progress.at("in the TLS handshake", "L6")
    await writer.start_tls(tls.context, server_hostname=tls.name_for(host))
