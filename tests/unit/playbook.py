"""Playbook: a session test states the exact ordered events in and actions out.

After mitmproxy's ``test/mitmproxy/proxy/tutils.py``::

    assert (
        Playbook(session)
        >> ClientSends(b"USER alice\\r\\n")
        << act.SendToServer(b"USER alice\\r\\n")
        >> ServerSends(b"331 Password please\\r\\n")
        << act.SendToClient(b"331 Password please\\r\\n")
    )

``>>`` feeds an event to the session, ``<<`` names the next action it must
return. The playbook runs when it is asserted, and fails on any extra,
missing or reordered action, showing both lists. A playbook can be asserted
again after more steps are added: only the new steps run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from ftplb.proto import actions as act
from ftplb.proto.addresses import HostPort
from ftplb.proto.control import ControlSession


class Event(Protocol):
    def __call__(self, session: ControlSession) -> list[act.Action]: ...


@dataclass(frozen=True)
class Start:
    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.start()


@dataclass(frozen=True)
class ClientSends:
    data: bytes

    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.client_data(self.data)


@dataclass(frozen=True)
class ServerSends:
    data: bytes

    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.server_data(self.data)


@dataclass(frozen=True)
class ServerConnected:
    address: str = "127.0.0.11"
    family: int = 1

    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.server_connected(self.address, self.family)


@dataclass(frozen=True)
class ServerUnavailable:
    detail: str

    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.server_unavailable(self.detail)


@dataclass(frozen=True)
class ClientCloses:
    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.client_closed()


@dataclass(frozen=True)
class ServerCloses:
    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.server_closed()


@dataclass(frozen=True)
class TimesOut:
    side: Literal["client", "server"]

    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.timed_out(self.side)


@dataclass(frozen=True)
class ClientListenerReady:
    address: HostPort

    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.client_listener_ready(self.address)


@dataclass(frozen=True)
class ClientListenerFails:
    reason: str

    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.client_listener_failed(self.reason)


@dataclass(frozen=True)
class ClientListenerRefused:
    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.client_listener_refused()


@dataclass(frozen=True)
class ServerListenerReady:
    address: HostPort

    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.server_listener_ready(self.address)


@dataclass(frozen=True)
class ServerListenerFails:
    reason: str

    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.server_listener_failed(self.reason)


@dataclass(frozen=True)
class ClientTlsStarted:
    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.client_tls_started()


@dataclass(frozen=True)
class ClientTlsFails:
    reason: str

    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.client_tls_failed(self.reason)


@dataclass(frozen=True)
class DataDone:
    error: str | None = None

    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.data_done(self.error)


@dataclass(frozen=True)
class StopGracefully:
    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.stop_gracefully()


@dataclass(frozen=True)
class StopNow:
    def __call__(self, session: ControlSession) -> list[act.Action]:
        return session.stop_now()


@dataclass(frozen=True)
class _In:
    event: Event


class Playbook:
    """Events in and the exact actions out, checked in order when asserted."""

    def __init__(self, session: ControlSession) -> None:
        self.session = session
        self._steps: list[_In | act.Action] = []
        self._done = 0

    def __rshift__(self, event: Event) -> Playbook:
        self._steps.append(_In(event))
        return self

    def __lshift__(self, action: act.Action) -> Playbook:
        self._steps.append(action)
        return self

    def __bool__(self) -> bool:
        steps, self._done = self._steps[self._done :], len(self._steps)
        expected: list[str] = []
        actual: list[str] = []
        for step in steps:
            if isinstance(step, _In):
                expected.append(f">> {step.event!r}")
                actual.append(f">> {step.event!r}")
                actual += [f"<< {action!r}" for action in step.event(self.session)]
            else:
                expected.append(f"<< {step!r}")
        if expected != actual:
            raise AssertionError(_mismatch(expected, actual))
        return True


def _mismatch(expected: list[str], actual: list[str]) -> str:
    width = max(len(line) for line in expected + actual)
    lines = ["playbook mismatch (expected | actual):"]
    for index in range(max(len(expected), len(actual))):
        left = expected[index] if index < len(expected) else ""
        right = actual[index] if index < len(actual) else ""
        mark = "  " if left == right else "!!"
        lines.append(f"{mark} {left:<{width}} | {right}")
    return "\n".join(lines)
