"""TLS for the runtime: contexts built from the configuration, and handshakes on plain sockets.

Control connections use asyncio's own TLS (``loop.start_tls``, or a listener
or connection made with ``ssl=``).  Data connections do not: the relay works
on sockets, so a data leg is wrapped into an :class:`ssl.SSLSocket` here and
its handshake is driven by the event loop's readiness callbacks, like the
relay itself.

Every wait is bounded: a peer that stops in the middle of a handshake or of
a close costs a timer, never a stuck task.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from dataclasses import dataclass
from typing import Literal

from ftplb.config.backends import Backend
from ftplb.config.frontends import Frontend
from ftplb.runtime.proxy_protocol import remember_server_names

__all__ = [
    "BackendTls",
    "FrontendTls",
    "TlsPolicy",
    "TlsSetupError",
    "backend_context",
    "backend_tls",
    "close_notify",
    "frontend_context",
    "frontend_tls",
    "handshake",
    "session_of",
]

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """The TLS versions and TLS 1.2 ciphers a context allows (``tls_min_version`` and so on)."""

    min_version: str = "1.2"
    max_version: str = "1.3"
    ciphers: str | None = None
    """An OpenSSL cipher string; TLS 1.3 suites are OpenSSL's defaults whatever it says."""

    @classmethod
    def of(cls, section: Frontend | Backend) -> TlsPolicy:
        return cls(section.tls_min_version, section.tls_max_version, section.tls_ciphers)

    def apply(self, context: ssl.SSLContext, key_prefix: str = "") -> None:
        context.minimum_version = _VERSIONS[self.min_version]
        context.maximum_version = _VERSIONS[self.max_version]
        if self.ciphers is not None:
            try:
                context.set_ciphers(self.ciphers)
            except ssl.SSLError as error:  # checked at load; a changed OpenSSL may differ
                raise TlsSetupError(
                    f"{key_prefix}tls_ciphers", self.ciphers, _reason(error)
                ) from error


class TlsSetupError(Exception):
    """A certificate, key or CA file that OpenSSL refuses; ``key`` is the config key."""

    def __init__(self, key: str, path: str, reason: str) -> None:
        super().__init__(f"{key}: {path}: {reason}")
        self.key = key
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BackendTls:
    """How to speak TLS to the servers of one backend."""

    mode: Literal["explicit", "implicit"]
    context: ssl.SSLContext
    server_name: str | None
    """The name to verify (and send as SNI); None means the server's address."""

    def name_for(self, host: str) -> str:
        return self.server_name or host


class FrontendTls:
    """The TLS a frontend offers its clients: certificates, policy and session reuse.

    Without ``tls_sni`` and with optional session reuse, one context serves
    every connection of the frontend, as it always has.  ``tls_sni`` adds a
    context per certificate, picked by the client's SNI from the frontend's
    context (the default certificate when no name matches).  With
    ``tls_session_reuse = "required"``, each control session gets a context
    of its own (:meth:`session_context`): its session cache and ticket keys
    are that session's alone, so a data connection that resumes a session
    in it resumed one that this session's control connection started.
    """

    __slots__ = (
        "_by_name",
        "_default",
        "_files",
        "_policy",
        "_remember_names",
        "_wildcards",
        "context",
        "reuse_required",
    )

    def __init__(self, frontend: Frontend, certificate: str) -> None:
        self._files = (certificate, frontend.tls_key)
        self._remember_names = False
        self.reuse_required = frontend.tls_session_reuse == "required"
        self._policy = policy = TlsPolicy.of(frontend)
        self._by_name: dict[str, ssl.SSLContext] = {}
        self._wildcards: dict[str, ssl.SSLContext] = {}
        for i, entry in enumerate(frontend.tls_sni):
            where = f"tls_sni[{i}]."
            try:
                context = frontend_context(entry.certificate, entry.key, policy)
            except TlsSetupError as error:
                names = {"tls_certificate": "certificate", "tls_key": "key"}
                raise TlsSetupError(
                    where + names.get(error.key, error.key), error.path, error.reason
                ) from error
            for name in entry.names:
                table = self._wildcards if name.startswith("*.") else self._by_name
                table.setdefault(name.removeprefix("*."), context)
        self._default = frontend_context(*self._files, policy)
        """The default certificate, with no SNI callback: what a data connection pins."""
        self.context = self._entry_context()
        """The context connections start in: the listener's, and AUTH TLS's unless
        session reuse is required."""

    def _entry_context(self) -> ssl.SSLContext:
        context = frontend_context(*self._files, self._policy)
        if self._by_name or self._wildcards:
            context.sni_callback = self._pick_certificate
        if self._remember_names:
            remember_server_names(context)
        return context

    def remember_server_names(self) -> None:
        """Keep each client's SNI on its connection, for a version 2 PROXY header.

        Every context a connection starts in keeps it: the listener's, and
        each session's own when session reuse is required.
        """
        if not self._remember_names:
            self._remember_names = True
            remember_server_names(self.context)

    def certificate_for(self, server_name: str | None) -> ssl.SSLContext | None:
        """The context of the ``tls_sni`` certificate for ``server_name``; None for the default."""
        if server_name is None:
            return None
        name = server_name.lower().rstrip(".")
        exact = self._by_name.get(name)
        if exact is not None:
            return exact
        _, dot, parent = name.partition(".")
        return self._wildcards.get(parent) if dot else None

    def _pick_certificate(
        self, tls: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        if tls.context.sni_callback is None:
            # Pinned before the handshake (a data connection): OpenSSL still
            # asks the callback of the context the connection started in.
            return
        chosen = self.certificate_for(server_name)
        if chosen is not None:
            # Only the certificate changes: the session cache and the tickets
            # stay those of the context the connection started in (OpenSSL's
            # session_ctx), so resumption works across certificates.
            tls.context = chosen

    def session_context(self) -> ssl.SSLContext:
        """The context for one control session's AUTH TLS and its data connections.

        Raises :class:`TlsSetupError` if the certificate files no longer load
        (a private context reads them again).
        """
        if not self.reuse_required:
            return self.context
        context = self._entry_context()
        # TLS 1.3 resumes only from a ticket, so the control connection gets
        # one; see :meth:`control_started` for the data connections.
        context.num_tickets = 1
        return context

    @staticmethod
    def control_started(context: ssl.SSLContext) -> None:
        """The control connection's handshake in ``context`` (a private one) is done.

        Data connections get no TLS 1.3 tickets (see :func:`frontend_context`):
        OpenSSL copies the ticket count when a connection is made, so setting
        it now leaves the control connection's ticket alone.
        """
        context.num_tickets = 0

    def pinned(self, control: ssl.SSLContext | None) -> ssl.SSLContext | None:
        """The certificate a data connection presents: the one its control connection got.

        ``control`` is the context the control connection ended in (an SNI
        one, or the one it started in).  None when there are no SNI
        certificates, so there is nothing to pin.
        """
        if not (self._by_name or self._wildcards):
            return None
        if control is not None and control.sni_callback is None and control is not self._default:
            return control
        return self._default


def frontend_tls(frontend: Frontend) -> FrontendTls | None:
    """The TLS of ``frontend`` towards its clients; None when it has no TLS."""
    if frontend.tls == "none" or frontend.tls_certificate is None:
        return None
    return FrontendTls(frontend, frontend.tls_certificate)


def backend_tls(backend: Backend) -> BackendTls | None:
    """How to reach the servers of ``backend`` over TLS; None when it offloads."""
    if backend.tls == "none":
        return None
    context = backend_context(backend.tls_verify, backend.tls_ca, TlsPolicy.of(backend))
    return BackendTls(backend.tls, context, backend.tls_server_name)


def _reason(error: Exception) -> str:
    if isinstance(error, ssl.SSLError):
        # set_ciphers raises an SSLError with no reason attribute at all.
        reason: str | None = getattr(error, "reason", None)
        return reason or error.strerror or str(error)
    if isinstance(error, OSError):
        return error.strerror or str(error)
    return str(error)


def frontend_context(
    certificate: str, key: str | None = None, policy: TlsPolicy | None = None
) -> ssl.SSLContext:
    """The TLS server context of a frontend: its certificate chain and key, TLS 1.2 or later.

    The same context serves the control connection and every data
    connection, so a client can resume its control session's TLS session on
    its data connections (curl and lftp do; OpenSSL's session cache and
    tickets make that work without more code).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    (policy or TlsPolicy()).apply(context)
    # No TLS 1.3 session tickets. A server sends them after its handshake, and
    # a client that never reads its data connection (curl uploading) closes
    # it with the tickets unread: the kernel then resets the connection, and
    # the tail of the upload still in flight is lost while the client counts
    # it as sent. Clients resume sessions through the TLS 1.2 session cache
    # still, and make a full handshake under TLS 1.3.
    context.num_tickets = 0
    try:
        context.load_cert_chain(certificate, key)
    except (ssl.SSLError, OSError) as error:
        # OpenSSL does not say which of the two files it disliked; name the
        # key file when there is one and the chain itself loads.
        culprit = ("tls_certificate", certificate)
        if key is not None and _loads_as_chain(certificate):
            culprit = ("tls_key", key)
        raise TlsSetupError(*culprit, _reason(error)) from error
    return context


def _loads_as_chain(path: str) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(path)
    except (ssl.SSLError, OSError):
        return False
    return True


def backend_context(
    verify: bool = True, ca: str | None = None, policy: TlsPolicy | None = None
) -> ssl.SSLContext:
    """The TLS client context towards a backend's servers.

    With ``verify``, the server's certificate must chain to ``ca`` (or the
    system store) and name the server (checked against IP SANs for an
    address).  Without it, any certificate is accepted: encryption without
    authentication, for servers with self-signed certificates on a trusted
    network.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    (policy or TlsPolicy()).apply(context)
    if verify:
        try:
            if ca is None:
                context.load_default_certs(ssl.Purpose.SERVER_AUTH)
            else:
                context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as error:
            raise TlsSetupError("tls_ca", ca or "system store", _reason(error)) from error
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def session_of(transport: asyncio.BaseTransport | None) -> ssl.SSLSession | None:
    """The TLS session of a control connection, for data connections to resume.

    Ask when the data connection opens, not after the control handshake: with
    TLS 1.3 the session ticket arrives after the handshake.
    """
    if transport is None:
        return None
    tls = transport.get_extra_info("ssl_object")
    if tls is None:
        return None
    session = tls.session
    return session if isinstance(session, ssl.SSLSession) else None


async def _ready(fd: int, *, writable: bool) -> None:
    """Wait until ``fd`` is readable (or writable)."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not waiter.done():
            waiter.set_result(None)

    if writable:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await waiter
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def handshake(
    sock: socket.socket,
    context: ssl.SSLContext,
    *,
    server_side: bool,
    timeout: float,
    server_hostname: str | None = None,
    session: ssl.SSLSession | None = None,
    certificate: ssl.SSLContext | None = None,
) -> ssl.SSLSocket:
    """Wrap a connected non-blocking socket in TLS and complete the handshake.

    ``sock`` is consumed: from here on only the returned socket owns the
    connection (it stays non-blocking, ready for the relay), and on failure
    the connection is closed.  ``session`` asks to resume a TLS session
    (servers such as vsftpd demand it on data connections).  ``certificate``,
    on the server side, presents that context's certificate instead of
    ``context``'s, whatever the client's SNI, while sessions are still
    resumed from ``context``'s cache and tickets.  Raises
    ``TimeoutError`` after ``timeout`` seconds, ``ssl.SSLError`` or
    ``OSError`` when the handshake fails.
    """
    try:
        tls = context.wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=False,
            server_hostname=None if server_side else server_hostname,
            session=session,
        )
        if certificate is not None and certificate is not context:
            # Set before the handshake, and to a context without an SNI
            # callback, which FrontendTls's callback takes for a pin: the
            # data connection keeps its control connection's certificate.
            # OpenSSL keeps resuming from ``context``.
            tls.context = certificate
    except BaseException:
        sock.close()
        raise
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    tls.do_handshake()
                except ssl.SSLWantReadError:
                    await _ready(tls.fileno(), writable=False)
                except ssl.SSLWantWriteError:
                    await _ready(tls.fileno(), writable=True)
                else:
                    return tls
    except BaseException:
        tls.close()
        raise


async def close_notify(sock: ssl.SSLSocket, timeout: float) -> None:
    """Send TLS close_notify on ``sock``, waiting at most ``timeout`` to write it.

    The peer's own close_notify is not awaited: a peer that waits for the
    transfer's final reply before it answers would deadlock with us.  Errors
    are ignored, since the connection is being closed anyway; the socket is
    left open for the caller to close.
    """
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    sock.unwrap()
                except ssl.SSLWantWriteError:
                    await _ready(sock.fileno(), writable=True)
                except ssl.SSLWantReadError:
                    return  # ours is out; the peer's has not arrived yet
                else:
                    return
    except (OSError, ValueError, TimeoutError):
        return
