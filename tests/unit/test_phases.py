"""The phase tables, pinned move by move: any added, removed or redirected move fails here."""

from __future__ import annotations

import itertools

import pytest

from ftplb.proto.phases import (
    ABORTING,
    SERVER_REPLY_DUE,
    SESSION_TRANSITIONS,
    TRANSFER_TRANSITIONS,
    Phase,
    PhaseError,
    TransferEvent,
    TransferPhase,
    Trigger,
    next_phase,
    next_transfer_phase,
)

P, T = Phase, Trigger
TP, E = TransferPhase, TransferEvent

SESSION_MOVES: dict[tuple[Phase, Trigger], Phase] = {
    (P.NEW, T.CONNECT): P.CONNECTING,
    (P.NEW, T.GREET): P.READY,
    (P.NEW, T.CLOSE): P.CLOSED,
    (P.CONNECTING, T.SERVER_READY): P.READY,
    (P.CONNECTING, T.REPLAY_USER): P.COMMAND,
    (P.CONNECTING, T.CLOSE): P.CLOSED,
    (P.READY, T.CONNECT): P.CONNECTING,
    (P.READY, T.FORWARD): P.COMMAND,
    (P.READY, T.OPEN_LISTENER): P.OPENING_LISTENER,
    (P.READY, T.ASK_SERVER): P.SERVER_SETUP,
    (P.READY, T.START_TLS): P.TLS_HANDSHAKE,
    (P.READY, T.START_TRANSFER): P.TRANSFER,
    (P.READY, T.CLOSE): P.CLOSED,
    (P.COMMAND, T.ANSWERED): P.READY,
    (P.COMMAND, T.CLOSE): P.CLOSED,
    (P.OPENING_LISTENER, T.OPEN_LISTENER): P.OPENING_LISTENER,
    (P.OPENING_LISTENER, T.ASK_SERVER): P.SERVER_SETUP,
    (P.OPENING_LISTENER, T.ANSWERED): P.READY,
    (P.OPENING_LISTENER, T.CLOSE): P.CLOSED,
    (P.SERVER_SETUP, T.ANSWERED): P.READY,
    (P.SERVER_SETUP, T.CLOSE): P.CLOSED,
    (P.TLS_HANDSHAKE, T.TLS_DONE): P.READY,
    (P.TLS_HANDSHAKE, T.CLOSE): P.CLOSED,
    (P.TRANSFER, T.ANSWERED): P.READY,
    (P.TRANSFER, T.CLOSE): P.CLOSED,
}

TRANSFER_MOVES: dict[tuple[TransferPhase, TransferEvent], TransferPhase] = {
    (TP.REQUESTED, E.PRELIMINARY): TP.RUNNING,
    (TP.REQUESTED, E.DATA_ENDED): TP.DATA_FIRST,
    (TP.REQUESTED, E.FINAL): TP.DONE,
    (TP.REQUESTED, E.ABORT): TP.ABORT_BEFORE_START,
    (TP.DATA_FIRST, E.PRELIMINARY): TP.DATA_DONE,
    (TP.DATA_FIRST, E.FINAL): TP.DONE,
    (TP.DATA_FIRST, E.ABORT): TP.ABORT_BEFORE_START,
    (TP.RUNNING, E.PRELIMINARY): TP.RUNNING,
    (TP.RUNNING, E.DATA_ENDED): TP.DATA_DONE,
    (TP.RUNNING, E.FINAL): TP.REPLY_HELD,
    (TP.RUNNING, E.ABORT): TP.ABORT_AWAIT_FINAL,
    (TP.DATA_DONE, E.PRELIMINARY): TP.DATA_DONE,
    (TP.DATA_DONE, E.FINAL): TP.DONE,
    (TP.DATA_DONE, E.ABORT): TP.ABORT_AWAIT_FINAL,
    (TP.REPLY_HELD, E.DATA_ENDED): TP.DONE,
    (TP.REPLY_HELD, E.ABORT): TP.ABORT_AWAIT_REPLY,
    (TP.ABORT_BEFORE_START, E.PRELIMINARY): TP.ABORT_AWAIT_FINAL,
    (TP.ABORT_BEFORE_START, E.FINAL): TP.ABORT_AWAIT_REPLY,
    (TP.ABORT_BEFORE_START, E.DATA_ENDED): TP.ABORT_BEFORE_START,
    (TP.ABORT_AWAIT_FINAL, E.PRELIMINARY): TP.ABORT_AWAIT_REPLY,
    (TP.ABORT_AWAIT_FINAL, E.FINAL): TP.ABORT_AWAIT_REPLY,
    (TP.ABORT_AWAIT_FINAL, E.DATA_ENDED): TP.ABORT_AWAIT_FINAL,
    (TP.ABORT_AWAIT_REPLY, E.PRELIMINARY): TP.ABORT_AWAIT_REPLY,
    (TP.ABORT_AWAIT_REPLY, E.FINAL): TP.DONE,
    (TP.ABORT_AWAIT_REPLY, E.DATA_ENDED): TP.ABORT_AWAIT_REPLY,
}


def test_the_session_table_holds_exactly_the_expected_moves() -> None:
    table = {
        (phase, trigger): target
        for phase, moves in SESSION_TRANSITIONS.items()
        for trigger, target in moves.items()
    }
    assert table == SESSION_MOVES
    assert list(SESSION_TRANSITIONS) == list(Phase)


def test_the_transfer_table_holds_exactly_the_expected_moves() -> None:
    table = {
        (phase, event): target
        for phase, moves in TRANSFER_TRANSITIONS.items()
        for event, target in moves.items()
    }
    assert table == TRANSFER_MOVES
    assert list(TRANSFER_TRANSITIONS) == list(TransferPhase)


@pytest.mark.parametrize(("phase", "trigger"), list(itertools.product(Phase, Trigger)))
def test_next_phase_follows_the_table_or_refuses(phase: Phase, trigger: Trigger) -> None:
    expected = SESSION_MOVES.get((phase, trigger))
    if expected is None:
        message = f"{trigger.name} is not allowed in phase {phase.name}"
        with pytest.raises(PhaseError, match=f"^{message}$"):
            next_phase(phase, trigger)
    else:
        assert next_phase(phase, trigger) is expected


@pytest.mark.parametrize(("phase", "event"), list(itertools.product(TransferPhase, TransferEvent)))
def test_next_transfer_phase_follows_the_table_or_refuses(
    phase: TransferPhase, event: TransferEvent
) -> None:
    expected = TRANSFER_MOVES.get((phase, event))
    if expected is None:
        message = f"{event.name} is not allowed in transfer phase {phase.name}"
        with pytest.raises(PhaseError, match=f"^{message}$"):
            next_transfer_phase(phase, event)
    else:
        assert next_transfer_phase(phase, event) is expected


def test_a_phase_error_is_an_assertion_error_and_hides_the_key_error() -> None:
    with pytest.raises(PhaseError) as caught:
        next_phase(Phase.CLOSED, Trigger.CLOSE)
    assert isinstance(caught.value, AssertionError)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    with pytest.raises(PhaseError) as caught_transfer:
        next_transfer_phase(TransferPhase.DONE, TransferEvent.FINAL)
    assert caught_transfer.value.__cause__ is None and caught_transfer.value.__suppress_context__


def test_every_live_phase_can_close_and_closed_is_final() -> None:
    for phase in Phase:
        if phase is Phase.CLOSED:
            assert SESSION_TRANSITIONS[phase] == {}
        else:
            assert next_phase(phase, Trigger.CLOSE) is Phase.CLOSED


def test_aborting_phases() -> None:
    assert (
        frozenset({TP.ABORT_BEFORE_START, TP.ABORT_AWAIT_FINAL, TP.ABORT_AWAIT_REPLY}) == ABORTING
    )


def test_phases_where_the_server_owes_a_reply() -> None:
    expected = {
        TP.DATA_FIRST,
        TP.DATA_DONE,
        TP.ABORT_BEFORE_START,
        TP.ABORT_AWAIT_FINAL,
        TP.ABORT_AWAIT_REPLY,
    }
    assert frozenset(expected) == SERVER_REPLY_DUE
