"""The whole configuration: :class:`Config`, and the checks only the whole file can tell.

Everything here is pure: it takes the plain data that a TOML parser produced
and either returns a frozen :class:`Config` or explains every problem it found,
each with the key path of the offending value so that the loader can point at
a file line. Unknown keys are errors, because a misspelt option that is
silently ignored is worse than a refusal to start.

Checks happen in two layers:

* pydantic validates each value on its own (types, ranges, forms), with the
  field types of :mod:`ftplb.config.fields` and the sections of
  :mod:`~ftplb.config.frontends`, :mod:`~ftplb.config.backends` and
  :mod:`~ftplb.config.general`;
* :func:`cross_check` validates what only the whole file can tell (a frontend
  naming a missing backend, overlapping passive port ranges, ...).

``Config.model_validate`` runs both, so no inconsistent ``Config`` can exist.
:func:`ftplb.config.problems.problems_from_error` turns the resulting
``ValidationError`` into one problem per finding, cross-check findings included.

The cross-checks read :class:`~ftplb.config.sections.Sections` rather than a
``Config``, so that the loader can also run them on the sections of a file
that did validate when others did not, and report both kinds of problem at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Annotated

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from ftplb.config.backends import Backend
from ftplb.config.defender import Defender
from ftplb.config.fields import Endpoint, PortRange, Section
from ftplb.config.frontends import Frontend
from ftplb.config.general import Admin, Defaults
from ftplb.config.problems import CROSS_CHECK_ERROR, KeyPath, Problem, format_key
from ftplb.config.sections import Sections, present

__all__ = ["PLAIN_PASSWORD_ADVICE", "Config", "advisories", "cross_check"]


class Config(Section):
    """A whole, consistent configuration."""

    defaults: Defaults = Defaults()
    frontends: Annotated[list[Frontend], Field(min_length=1)]
    backends: Annotated[list[Backend], Field(min_length=1)]
    admin: Admin | None = None
    defender: Defender | None = None

    def backend(self, name: str) -> Backend:
        """The backend called ``name``; KeyError if there is none."""
        index = _backend_index([b.name for b in self.backends], name)
        if index is None:
            raise KeyError(name)
        return self.backends[index]

    def sections(self) -> Sections:
        """Every section of this configuration, for the cross-checks."""
        return Sections(
            defaults=self.defaults,
            frontends=self.frontends,
            backends=self.backends,
            backend_names=[b.name for b in self.backends],
            admin=self.admin,
            defender=self.defender,
        )

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        problems = cross_check(self)
        if problems:
            # pydantic has one error location per validator; the problems travel
            # in the context so that problems_from_error can report each one.
            summary = "; ".join(f"{format_key(p.path)}: {p.message}" for p in problems)
            raise PydanticCustomError(
                CROSS_CHECK_ERROR, "{summary}", {"summary": summary, "problems": problems}
            )
        return self


# --------------------------------------------------------------------------
# Advisories: allowed, but worth a warning
# --------------------------------------------------------------------------

PLAIN_PASSWORD_ADVICE = (
    "the password is written in plain text; prefer [[admin.users]] with a password_hash "
    "(ftplb hash-password makes one)"
)


TCP_IGNORES_ADVICE = 'ignored in mode = "tcp", where ftplb does not read the FTP dialogue'
TCP_IGNORED_LIMITS = (
    "max_passive_per_ip",
    "transfer_rate_per_session",
    "transfer_rate_per_user",
    "transfer_rate_per_ip",
)
"""Per-client limits a tcp frontend cannot enforce: they need the FTP dialogue."""


def advisories(config: Config) -> list[Problem]:
    """What a valid configuration had better not do, each at the path of the value."""
    found: list[Problem] = []
    if config.admin is not None and config.admin.plain_password:
        found.append(Problem(("admin", "password"), PLAIN_PASSWORD_ADVICE))
    for index, frontend in enumerate(config.frontends):
        if frontend.mode == "tcp":
            found += [
                Problem(("frontends", index, key), TCP_IGNORES_ADVICE)
                for key in TCP_IGNORED_LIMITS
                if getattr(frontend, key)
            ]
    for f, frontend, b, backend in _tcp_backends(config.sections()):
        if backend.health.type not in ("ftp", "login"):
            continue  # not checked as FTP servers: SFTP, say, which needs no range
        found += [
            Problem(
                ("backends", b, "servers", s, "passive_ports"),
                f'missing: {format_key(("frontends", f))} ("{frontend.name}") relays this FTP '
                'server in mode = "tcp", and without a range of its own its passive '
                "transfers cannot pass ftplb",
            )
            for s, server in enumerate(backend.servers)
            if server.passive_ports is None
        ]
    return found


# --------------------------------------------------------------------------
# Cross-checks
# --------------------------------------------------------------------------


def cross_check(whole: Config | Sections) -> list[Problem]:
    """Every inconsistency between sections, each at the path of the value to fix.

    Given :class:`Sections` with some left out (None), only the sections that
    are there are checked.
    """
    config = whole.sections() if isinstance(whole, Config) else whole
    return [
        *_duplicate_names(config),
        *_unknown_backends(config),
        *_bind_conflicts(config),
        *_passive_range_conflicts(config),
        *_unknown_mapped_servers(config),
        *_user_routing_in_tcp_mode(config),
        *_frontend_tls_settings(config),
        *_backend_tls_settings(config),
        *_proxy_protocol_settings(config),
        *_passive_ranges_for_workers(config),
        *_admin_settings(config),
        *_defender_settings(config),
    ]


def _duplicate_names(config: Sections) -> Iterator[Problem]:
    groups: list[tuple[str, KeyPath, list[str | None]]] = [
        ("frontend", ("frontends",), [f.name if f is not None else None for f in config.frontends]),
        ("backend", ("backends",), list(config.backend_names)),
    ]
    for b, backend in present(config.backends):
        groups.append(("server", ("backends", b, "servers"), [s.name for s in backend.servers]))
    for kind, prefix, names in groups:
        first_seen: dict[str, int] = {}
        for index, name in enumerate(names):
            if name is None:
                continue
            if name in first_seen:
                where = format_key((*prefix, first_seen[name]))
                yield Problem(
                    (*prefix, index, "name"), f'duplicate {kind} name "{name}" (also {where})'
                )
            else:
                first_seen[name] = index


def _unknown_backends(config: Sections) -> Iterator[Problem]:
    # A backend that failed validation still exists, if its name can be read.
    known = [name for name in config.backend_names if name is not None]
    for f, frontend in present(config.frontends):
        if frontend.backend not in known:
            listed = ", ".join(f'"{name}"' for name in known)
            yield Problem(
                ("frontends", f, "backend"),
                f'unknown backend "{frontend.backend}" (backends: {listed})',
            )


def _binds_clash(a: Endpoint, b: Endpoint) -> bool:
    if a.port != b.port:
        return False
    if a.host == b.host:
        return True
    # A wildcard listener takes the port on every address of its family.
    same_family = (":" in a.host) == (":" in b.host)
    return same_family and (a.is_wildcard or b.is_wildcard)


def _bind_conflicts(config: Sections) -> Iterator[Problem]:
    seen: list[tuple[Endpoint, KeyPath]] = []
    for f, frontend in present(config.frontends):
        for i, endpoint in enumerate(frontend.bind):
            path: KeyPath = ("frontends", f, "bind", i)
            for other, other_path in seen:
                if _binds_clash(endpoint, other):
                    yield Problem(
                        path, f"{endpoint} clashes with {other} bound by {format_key(other_path)}"
                    )
                    break
            seen.append((endpoint, path))


def _passive_range_conflicts(config: Sections) -> Iterator[Problem]:
    """Ranges that two listeners would both claim.

    Frontend ranges are always listened on. In mode = "tcp" each server's own
    range is listened on too, so those join the same pool of claims.
    """
    claimed: list[tuple[PortRange, KeyPath]] = []

    def claim(ports: PortRange, path: KeyPath) -> Iterator[Problem]:
        for other, other_path in claimed:
            if ports.overlaps(other):
                yield Problem(path, f"range {ports} overlaps {other} of {format_key(other_path)}")
                break
        claimed.append((ports, path))

    for f, frontend in present(config.frontends):
        if frontend.passive_ports is not None:
            yield from claim(frontend.passive_ports, ("frontends", f, "passive_ports"))

    for _, _, b, backend in _tcp_backends(config):
        for s, server in enumerate(backend.servers):
            if server.passive_ports is not None:
                yield from claim(
                    server.passive_ports, ("backends", b, "servers", s, "passive_ports")
                )


def _unknown_mapped_servers(config: Sections) -> Iterator[Problem]:
    for b, backend in present(config.backends):
        servers = {s.name for s in backend.servers}
        for user, server in backend.user_map.items():
            if server not in servers:
                yield Problem(
                    ("backends", b, "user_map", user),
                    f'unknown server "{server}" in backend "{backend.name}"',
                )


def _user_routing_in_tcp_mode(config: Sections) -> Iterator[Problem]:
    """Routing on the USER name where no USER is ever read.

    A frontend in mode = "tcp" relays the control connection unread (it may be
    TLS from the first byte), so its server is chosen before any command.
    """
    for f, frontend, b, backend in _tcp_backends(config):
        reason = (
            f'{format_key(("frontends", f))} ("{frontend.name}") relays this backend in '
            'mode = "tcp" and never reads USER'
        )
        if backend.balance == "user":
            yield Problem(
                ("backends", b, "balance"),
                f'"user" cannot work: {reason}; use "source" to keep a client on one server',
            )
        if backend.sticky == "user":
            yield Problem(
                ("backends", b, "sticky"),
                f'"user" cannot work: {reason}; use "source" to keep a client on one server',
            )
        if backend.user_map:
            yield Problem(("backends", b, "user_map"), f"cannot work: {reason}")


def _passive_ranges_for_workers(config: Sections) -> Iterator[Problem]:
    """Frontend passive ranges too small to give every worker a slice of its own."""
    if config.defaults is None:
        return
    workers = config.defaults.workers
    for f, frontend in present(config.frontends):
        ports = frontend.passive_ports
        if ports is not None and ports.count < workers:
            yield Problem(
                ("frontends", f, "passive_ports"),
                f"range {ports} has {ports.count} port{'s' if ports.count != 1 else ''}, "
                f"fewer than defaults.workers = {workers}: each worker needs a slice of its own",
            )


def _tcp_backends(config: Sections) -> Iterator[tuple[int, Frontend, int, Backend]]:
    """(frontend index, frontend, backend index, backend) for each backend relayed
    in tcp mode, once per backend (through its first tcp frontend)."""
    checked: set[int] = set()
    for f, frontend in present(config.frontends):
        if frontend.mode != "tcp":
            continue
        b = _backend_index(config.backend_names, frontend.backend)
        if b is None or b in checked:
            continue
        backend = config.backends[b]
        if backend is None:
            continue
        checked.add(b)
        yield f, frontend, b, backend


def _backend_index(names: Sequence[str | None], name: str) -> int | None:
    for index, candidate in enumerate(names):
        if candidate == name:
            return index
    return None


def _frontend_tls_settings(config: Sections) -> Iterator[Problem]:
    """TLS keys that contradict each other on a frontend."""
    for f, frontend in present(config.frontends):
        here: KeyPath = ("frontends", f)
        if frontend.tls != "none" and frontend.mode == "tcp":
            yield Problem(
                (*here, "tls"),
                'cannot work with mode = "tcp": that mode relays TLS unread; '
                'use mode = "ftp" to terminate TLS here',
            )
        if frontend.tls != "none" and frontend.tls_certificate is None:
            yield Problem(
                (*here, "tls_certificate"), f'missing: tls = "{frontend.tls}" needs a certificate'
            )
        if frontend.tls == "none":
            # Compared with the defaults, not "was it written": a dumped and
            # reloaded config spells every default out.
            changed = {
                "tls_certificate": frontend.tls_certificate is not None,
                "tls_key": frontend.tls_key is not None,
                "tls_required": frontend.tls_required,
                **_tls_policy_changes(frontend),
                "tls_session_reuse": frontend.tls_session_reuse != "optional",
                "tls_sni": bool(frontend.tls_sni),
            }
            for key in (key for key, set_ in changed.items() if set_):
                yield Problem((*here, key), 'has no effect without tls = "explicit" or "implicit"')
            continue
        yield from _version_order(here, frontend)
        if frontend.tls == "implicit" and frontend.tls_session_reuse == "required":
            yield Problem(
                (*here, "tls_session_reuse"),
                'needs tls = "explicit": with implicit TLS every session shares the '
                "listener's handshake, so a data connection's resumption cannot be tied "
                "to its own control connection",
            )
        yield from _sni_duplicates(here, frontend)


def _tls_policy_changes(section: Frontend | Backend) -> dict[str, bool]:
    """Which of the TLS version and cipher keys differ from their defaults."""
    return {
        "tls_min_version": section.tls_min_version != "1.2",
        "tls_max_version": section.tls_max_version != "1.3",
        "tls_ciphers": section.tls_ciphers is not None,
    }


def _version_order(here: KeyPath, section: Frontend | Backend) -> Iterator[Problem]:
    # "1.2" < "1.3" as strings too: the versions are one digit after "1.".
    if section.tls_min_version > section.tls_max_version:
        yield Problem(
            (*here, "tls_max_version"),
            f'"{section.tls_max_version}" is below tls_min_version = '
            f'"{section.tls_min_version}": no TLS version is left',
        )


def _sni_duplicates(here: KeyPath, frontend: Frontend) -> Iterator[Problem]:
    """An SNI name given to two certificates: which one a client gets would be a guess."""
    seen: dict[str, int] = {}
    for i, entry in enumerate(frontend.tls_sni):
        for name in entry.names:
            if name in seen and seen[name] != i:
                yield Problem(
                    (*here, "tls_sni", i, "names"),
                    f'"{name}" is also a name of {format_key((*here, "tls_sni", seen[name]))}',
                )
            seen.setdefault(name, i)


def _backend_tls_settings(config: Sections) -> Iterator[Problem]:
    """TLS keys of a backend that only make sense with TLS towards its servers."""
    for f, frontend, b, backend in _tcp_backends(config):
        if backend.tls != "none":
            yield Problem(
                ("backends", b, "tls"),
                f'cannot work: {format_key(("frontends", f))} ("{frontend.name}") relays this '
                'backend in mode = "tcp", where the client\'s own TLS goes to the servers unread',
            )
    for b, backend in present(config.backends):
        if backend.tls != "none":
            yield from _version_order(("backends", b), backend)
            continue
        changed = {
            "tls_verify": not backend.tls_verify,
            "tls_ca": backend.tls_ca is not None,
            "tls_server_name": backend.tls_server_name is not None,
            **_tls_policy_changes(backend),
        }
        for key in (key for key, set_ in changed.items() if set_):
            yield Problem(
                ("backends", b, key), 'has no effect without tls = "explicit" or "implicit"'
            )


def _proxy_protocol_settings(config: Sections) -> Iterator[Problem]:
    """PROXY protocol keys that need their companion key."""
    for f, frontend in present(config.frontends):
        if frontend.accept_proxy and not frontend.proxy_trusted:
            yield Problem(
                ("frontends", f, "proxy_trusted"),
                "missing: accept_proxy = true needs the networks allowed to send the header",
            )
        elif frontend.proxy_trusted and not frontend.accept_proxy:
            yield Problem(("frontends", f, "proxy_trusted"), "has no effect without accept_proxy")
    for b, backend in present(config.backends):
        if backend.send_proxy_data and backend.send_proxy == "none":
            yield Problem(
                ("backends", b, "send_proxy_data"),
                'has no effect without send_proxy = "v1" or "v2"',
            )


def _admin_settings(config: Sections) -> Iterator[Problem]:
    """Admin credentials given by halves, and an admin bind that a frontend also needs."""
    admin = config.admin
    if admin is None:
        return
    if (admin.user is None) != (admin.password is None):
        given, missing = ("user", "password") if admin.password is None else ("password", "user")
        yield Problem(
            ("admin", missing), f"missing: {given} is set, and basic auth needs both or neither"
        )
    yield from _duplicate_admin_users(admin)
    for f, frontend in present(config.frontends):
        for i, endpoint in enumerate(frontend.bind):
            if _binds_clash(admin.bind, endpoint):
                where = format_key(("frontends", f, "bind", i))
                yield Problem(("admin", "bind"), f"{admin.bind} clashes with {endpoint} of {where}")
        ports = frontend.passive_ports
        if ports is not None and admin.bind.port in ports:
            where = format_key(("frontends", f, "passive_ports"))
            yield Problem(
                ("admin", "bind"),
                f"port {admin.bind.port} is in the passive range {ports} of {where}",
            )


def _duplicate_admin_users(admin: Admin) -> Iterator[Problem]:
    """Two users of one name, among ``[[admin.users]]`` and the legacy ``user``."""
    first_seen: dict[str, KeyPath] = {}
    if admin.user is not None:
        first_seen[admin.user] = ("admin", "user")
    for index, entry in enumerate(admin.users):
        path: KeyPath = ("admin", "users", index, "name")
        if entry.name in first_seen:
            where = format_key(first_seen[entry.name])
            yield Problem(path, f'duplicate admin user name "{entry.name}" (also {where})')
        else:
            first_seen[entry.name] = path


def _defender_settings(config: Sections) -> Iterator[Problem]:
    """A longest ban shorter than the first one."""
    defender = config.defender
    if defender is not None and defender.ban_time_max < defender.ban_time:
        yield Problem(
            ("defender", "ban_time_max"),
            f"{defender.ban_time_max:g} s is shorter than ban_time ({defender.ban_time:g} s): "
            "bans start at ban_time and double up to ban_time_max",
        )
