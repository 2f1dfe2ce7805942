"""The Playbook helper itself: it must fail on any extra, missing or reordered action."""

from __future__ import annotations

import pytest

from ftplb.proto import actions as act
from ftplb.proto.control import ControlSession, SessionPolicy
from tests.unit.playbook import ClientSends, Playbook, ServerConnected, ServerSends, Start


def greeted() -> Playbook:
    playbook = Playbook(ControlSession(SessionPolicy(), "127.0.0.100", 1))
    assert (
        playbook
        >> Start()
        << act.ConnectServer(None)
        >> ServerConnected()
        << act.SendToClient(b"220 ftplb ready\r\n")
    )
    return playbook


def test_a_matching_playbook_passes_and_only_new_steps_run_again() -> None:
    playbook = greeted()
    assert playbook >> ClientSends(b"NOOP\r\n") << act.SendToServer(b"NOOP\r\n")
    assert playbook >> ServerSends(b"200 ok\r\n") << act.SendToClient(b"200 ok\r\n")


def test_a_missing_action_fails() -> None:
    playbook = greeted() >> ClientSends(b"NOOP\r\n")
    with pytest.raises(AssertionError, match="playbook mismatch"):
        assert playbook


def test_an_extra_action_fails() -> None:
    playbook = (
        greeted()
        >> ClientSends(b"NOOP\r\n")
        << act.SendToServer(b"NOOP\r\n")
        << act.SendToClient(b"200 ok\r\n")
    )
    with pytest.raises(AssertionError, match="playbook mismatch"):
        assert playbook


def test_a_reordered_action_fails() -> None:
    playbook = Playbook(ControlSession(SessionPolicy(), "127.0.0.100", 1))
    assert playbook >> Start() << act.ConnectServer(None)
    playbook = (
        playbook
        >> ServerConnected()
        >> ClientSends(b"NOOP\r\n")
        << act.SendToClient(b"220 ftplb ready\r\n")
        << act.SendToServer(b"NOOP\r\n")
    )
    # The greeting belongs to ServerConnected, not to the client's NOOP.
    with pytest.raises(AssertionError, match="playbook mismatch"):
        assert playbook
