"""The setup dialogue with a server, driven by scripted events (no sockets, no loop).

Every event's whole list of actions is asserted, in order.
"""

from __future__ import annotations

import itertools
import re
from contextlib import AbstractContextManager

import pytest

from ftplb.proto.upstream import (
    Credentials,
    DialogueAction,
    DialogueFailed,
    DialogueReady,
    DialogueSettings,
    DialogueState,
    DialogueStateError,
    SendToServer,
    ServerDialogue,
    StartServerTls,
)

PLAIN_SESSION = DialogueSettings()
EXPLICIT_SESSION = DialogueSettings(tls="explicit", protect_data=True)
IMPLICIT_SESSION = DialogueSettings(tls="implicit", protect_data=True)
FTP_PROBE = DialogueSettings(quit_at_end=True)
LOGIN_PROBE = DialogueSettings(login=Credentials("alice", "s3cret"), quit_at_end=True)
EXPLICIT_LOGIN_PROBE = DialogueSettings(
    tls="explicit", login=Credentials("alice", "s3cret"), quit_at_end=True
)

AUTH = SendToServer(b"AUTH TLS\r\n")
PBSZ = SendToServer(b"PBSZ 0\r\n")
PROT = SendToServer(b"PROT P\r\n")
USER = SendToServer(b"USER alice\r\n")
PASS = SendToServer(b"PASS s3cret\r\n")
QUIT = SendToServer(b"QUIT\r\n")
MALFORMED = "Service not available, malformed reply from server"


def started(settings: DialogueSettings) -> ServerDialogue:
    dialogue = ServerDialogue(settings)
    assert (dialogue.state, dialogue.step) == (DialogueState.IDLE, "before the greeting")
    assert dialogue.start() == []
    assert (dialogue.state, dialogue.step, dialogue.layer) == (
        DialogueState.GREETING,
        "reading banner",
        "L7",
    )
    return dialogue


def where(dialogue: ServerDialogue) -> tuple[DialogueState, str, str]:
    return dialogue.state, dialogue.step, dialogue.layer


def assert_over(dialogue: ServerDialogue) -> None:
    """A failed dialogue ignores everything the runtime may still report."""
    assert dialogue.state is DialogueState.FAILED
    assert dialogue.server_data(b"220 late\r\n") == []
    assert dialogue.tls_started() == []
    assert dialogue.tls_failed("late") == []
    assert dialogue.server_closed() == []
    assert dialogue.state is DialogueState.FAILED


# ------------------------------------------------------------------ greeting


def test_plain_greeting_hands_over_at_once() -> None:
    dialogue = started(PLAIN_SESSION)
    assert dialogue.server_data(b"220 hello\r\n") == [DialogueReady("220 banner", b"")]
    assert where(dialogue) == (DialogueState.READY, "after the setup", "L7")


def test_ftp_probe_says_quit_before_it_is_done() -> None:
    dialogue = started(FTP_PROBE)
    assert dialogue.server_data(b"220 hello\r\n") == [QUIT, DialogueReady("220 banner", b"")]


def test_multiline_greeting() -> None:
    dialogue = started(PLAIN_SESSION)
    assert dialogue.server_data(b"220-welcome\r\n220-to\r\n") == []
    assert dialogue.server_data(b"220 here\r\n") == [DialogueReady("220 banner", b"")]


def test_120_then_220() -> None:
    dialogue = started(FTP_PROBE)
    assert dialogue.server_data(b"120 ready in 2 minutes\r\n") == []
    assert where(dialogue) == (DialogueState.GREETING, "reading banner", "L7")
    assert dialogue.server_data(b"120 ready in 1 minute\r\n") == []
    assert dialogue.server_data(b"220 ready now\r\n") == [QUIT, DialogueReady("220 banner", b"")]


@pytest.mark.parametrize(
    ("greeting", "detail"),
    [
        (b"421 too many users\r\n", "421 banner"),
        (b"530 not from your address\r\n", "530 banner"),
        (b"230 already logged in?\r\n", "230 banner"),
        # RFC 959 allows only 120 before the greeting.
        (b"110 restart marker\r\n", "110 banner"),
    ],
)
def test_greeting_other_than_220_fails(greeting: bytes, detail: str) -> None:
    dialogue = started(FTP_PROBE)
    assert dialogue.server_data(greeting) == [DialogueFailed("L7", detail)]
    assert_over(dialogue)


# ---------------------------------------------------------------------- TLS


def test_explicit_tls_then_pbsz_and_prot() -> None:
    dialogue = started(EXPLICIT_SESSION)
    assert dialogue.server_data(b"220 hello\r\n") == [AUTH]
    assert where(dialogue) == (DialogueState.AUTH, "waiting for AUTH TLS reply", "L7")
    assert dialogue.server_data(b"234 go ahead\r\n") == [StartServerTls()]
    assert where(dialogue) == (DialogueState.TLS_HANDSHAKE, "in the TLS handshake", "L6")
    assert dialogue.tls_started() == [PBSZ]
    assert where(dialogue) == (DialogueState.PBSZ, "waiting for PBSZ reply", "L7")
    assert dialogue.server_data(b"200 PBSZ=0\r\n") == [PROT]
    assert where(dialogue) == (DialogueState.PROT, "waiting for PROT reply", "L7")
    assert dialogue.server_data(b"200 protected\r\n") == [DialogueReady("220 banner", b"")]
    assert dialogue.state is DialogueState.READY


def test_implicit_tls_skips_auth_but_protects_data() -> None:
    dialogue = started(IMPLICIT_SESSION)
    assert dialogue.server_data(b"220 hello\r\n") == [PBSZ]
    assert dialogue.server_data(b"200 PBSZ=0\r\n") == [PROT]
    assert dialogue.server_data(b"200 protected\r\n") == [DialogueReady("220 banner", b"")]


def test_implicit_tls_probe_reads_only_the_greeting() -> None:
    dialogue = started(DialogueSettings(tls="implicit", quit_at_end=True))
    assert dialogue.server_data(b"220 hello\r\n") == [QUIT, DialogueReady("220 banner", b"")]


def test_explicit_tls_login_probe() -> None:
    dialogue = started(EXPLICIT_LOGIN_PROBE)
    assert dialogue.server_data(b"220 hello\r\n") == [AUTH]
    assert dialogue.server_data(b"234 go ahead\r\n") == [StartServerTls()]
    assert dialogue.tls_started() == [USER]
    assert dialogue.server_data(b"331 password\r\n") == [PASS]
    assert dialogue.server_data(b"230 in\r\n") == [QUIT, DialogueReady("230 logged in", b"")]


def test_explicit_tls_with_nothing_after_the_handshake() -> None:
    dialogue = started(DialogueSettings(tls="explicit"))
    assert dialogue.server_data(b"220 hello\r\n") == [AUTH]
    assert dialogue.server_data(b"234 go ahead\r\n") == [StartServerTls()]
    assert dialogue.tls_started() == [DialogueReady("220 banner", b"")]


def test_auth_refused_is_l6() -> None:
    dialogue = started(EXPLICIT_SESSION)
    assert dialogue.server_data(b"220 hello\r\n") == [AUTH]
    assert dialogue.server_data(b"504 not here\r\n") == [DialogueFailed("L6", "504 to AUTH TLS")]
    assert_over(dialogue)


def test_pbsz_refused() -> None:
    dialogue = started(IMPLICIT_SESSION)
    assert dialogue.server_data(b"220 hello\r\n") == [PBSZ]
    assert dialogue.server_data(b"500 what?\r\n") == [DialogueFailed("L6", "500 to PBSZ 0")]
    assert_over(dialogue)


def test_prot_refused() -> None:
    dialogue = started(IMPLICIT_SESSION)
    assert dialogue.server_data(b"220 hello\r\n") == [PBSZ]
    assert dialogue.server_data(b"200 PBSZ=0\r\n") == [PROT]
    assert dialogue.server_data(b"534 no\r\n") == [DialogueFailed("L6", "534 to PROT P")]
    assert_over(dialogue)


def test_tls_handshake_failure() -> None:
    dialogue = started(EXPLICIT_SESSION)
    assert dialogue.server_data(b"220 hello\r\n") == [AUTH]
    assert dialogue.server_data(b"234 go ahead\r\n") == [StartServerTls()]
    assert dialogue.tls_failed("certificate verify failed: self-signed certificate") == [
        DialogueFailed(
            "L6", "TLS handshake failed: certificate verify failed: self-signed certificate"
        )
    ]
    assert_over(dialogue)


def test_cleartext_after_234_is_not_read_as_a_later_reply() -> None:
    dialogue = started(EXPLICIT_SESSION)
    assert dialogue.server_data(b"220 hello\r\n") == [AUTH]
    assert dialogue.server_data(b"234 go ahead\r\n200 PBSZ=0\r\n") == [
        DialogueFailed("L6", "data in the clear before the TLS handshake")
    ]
    assert_over(dialogue)


def test_cleartext_during_the_handshake_fails() -> None:
    dialogue = started(EXPLICIT_SESSION)
    assert dialogue.server_data(b"220 hello\r\n") == [AUTH]
    assert dialogue.server_data(b"234 go ahead\r\n") == [StartServerTls()]
    assert dialogue.server_data(b"2") == [
        DialogueFailed("L6", "data in the clear before the TLS handshake")
    ]
    assert_over(dialogue)


def test_preliminary_replies_to_commands_are_skipped() -> None:
    dialogue = started(EXPLICIT_SESSION)
    assert dialogue.server_data(b"220 hello\r\n") == [AUTH]
    assert dialogue.server_data(b"150 hm\r\n") == []
    assert dialogue.server_data(b"234 go ahead\r\n") == [StartServerTls()]
    assert dialogue.tls_started() == [PBSZ]
    assert dialogue.server_data(b"110 hm\r\n200 PBSZ=0\r\n") == [PROT]
    assert dialogue.server_data(b"125 hm\r\n") == []
    assert dialogue.server_data(b"200 protected\r\n") == [DialogueReady("220 banner", b"")]


# -------------------------------------------------------------------- login


def test_login_230_at_user() -> None:
    dialogue = started(LOGIN_PROBE)
    assert dialogue.server_data(b"220 hello\r\n") == [USER]
    assert where(dialogue) == (DialogueState.USER, "waiting for USER reply", "L7")
    assert dialogue.server_data(b"230 no password needed\r\n") == [
        QUIT,
        DialogueReady("230 logged in", b""),
    ]


def test_login_331_then_230() -> None:
    dialogue = started(LOGIN_PROBE)
    assert dialogue.server_data(b"220 hello\r\n") == [USER]
    assert dialogue.server_data(b"331 password please\r\n") == [PASS]
    assert where(dialogue) == (DialogueState.PASS, "waiting for PASS reply", "L7")
    assert dialogue.server_data(b"230 welcome\r\n") == [QUIT, DialogueReady("230 logged in", b"")]


def test_login_sends_utf8_and_an_empty_password() -> None:
    dialogue = started(DialogueSettings(login=Credentials("zoë")))
    assert dialogue.server_data(b"220 hello\r\n") == [SendToServer(b"USER zo\xc3\xab\r\n")]
    assert dialogue.server_data(b"331 password please\r\n") == [SendToServer(b"PASS \r\n")]
    assert dialogue.server_data(b"230 welcome\r\n") == [DialogueReady("230 logged in", b"")]


def test_login_530_at_pass() -> None:
    dialogue = started(LOGIN_PROBE)
    assert dialogue.server_data(b"220 hello\r\n") == [USER]
    assert dialogue.server_data(b"331 password please\r\n") == [PASS]
    assert dialogue.server_data(b"530 Login incorrect.\r\n") == [
        DialogueFailed("L7", "530 login failed")
    ]
    assert_over(dialogue)


def test_login_530_at_user() -> None:
    dialogue = started(LOGIN_PROBE)
    assert dialogue.server_data(b"220 hello\r\n") == [USER]
    assert dialogue.server_data(b"530 go away\r\n") == [DialogueFailed("L7", "530 login failed")]
    assert_over(dialogue)


def test_login_332_needs_an_account_and_fails() -> None:
    dialogue = started(LOGIN_PROBE)
    assert dialogue.server_data(b"220 hello\r\n") == [USER]
    assert dialogue.server_data(b"331 password please\r\n") == [PASS]
    assert dialogue.server_data(b"332 account?\r\n") == [DialogueFailed("L7", "332 login failed")]


# ---------------------------------------------------------- broken servers


def test_malformed_greeting() -> None:
    dialogue = started(FTP_PROBE)
    assert dialogue.server_data(b"SSH-2.0-OpenSSH_9.2\r\n") == [
        DialogueFailed("L7", f"bad reply reading banner: {MALFORMED} (bad first line)")
    ]
    assert_over(dialogue)


def test_malformed_reply_names_the_step() -> None:
    dialogue = started(IMPLICIT_SESSION)
    assert dialogue.server_data(b"220 hello\r\n") == [PBSZ]
    assert dialogue.server_data(b"999 no such code\r\n") == [
        DialogueFailed("L7", f"bad reply waiting for PBSZ reply: {MALFORMED} (code out of range)")
    ]
    assert_over(dialogue)


def test_greeting_larger_than_the_cap() -> None:
    dialogue = started(DialogueSettings(max_reply_bytes=32))
    assert dialogue.server_data(b"220-hello\r\n220-hello\r\n") == []
    assert dialogue.server_data(b"220-hello\r\n") == [
        DialogueFailed("L7", f"bad reply reading banner: {MALFORMED} (reply too large)")
    ]


@pytest.mark.parametrize(
    ("settings", "script", "detail"),
    [
        (FTP_PROBE, [], "connection closed reading banner"),
        (FTP_PROBE, [b"220-hello\r\n"], "connection closed reading banner"),
        (EXPLICIT_SESSION, [b"220 hello\r\n"], "connection closed waiting for AUTH TLS reply"),
        (IMPLICIT_SESSION, [b"220 hello\r\n"], "connection closed waiting for PBSZ reply"),
        (
            IMPLICIT_SESSION,
            [b"220 hello\r\n", b"200 PBSZ=0\r\n"],
            "connection closed waiting for PROT reply",
        ),
        (LOGIN_PROBE, [b"220 hello\r\n"], "connection closed waiting for USER reply"),
        (LOGIN_PROBE, [b"220 hello\r\n331 pw\r\n"], "connection closed waiting for PASS reply"),
    ],
)
def test_server_closes_mid_dialogue(
    settings: DialogueSettings, script: list[bytes], detail: str
) -> None:
    dialogue = started(settings)
    for data in script:
        dialogue.server_data(data)
    assert dialogue.server_closed() == [DialogueFailed("L7", detail)]
    assert_over(dialogue)


def test_server_closes_during_the_handshake() -> None:
    dialogue = started(EXPLICIT_SESSION)
    assert dialogue.server_data(b"220 hello\r\n") == [AUTH]
    assert dialogue.server_data(b"234 go ahead\r\n") == [StartServerTls()]
    assert dialogue.server_closed() == [
        DialogueFailed("L7", "connection closed in the TLS handshake")
    ]
    assert_over(dialogue)


# ----------------------------------------------------------- chunking


def test_several_replies_in_one_chunk() -> None:
    dialogue = started(LOGIN_PROBE)
    assert dialogue.server_data(b"120 soon\r\n220 hello\r\n331 pw\r\n230 in\r\n") == [
        USER,
        PASS,
        QUIT,
        DialogueReady("230 logged in", b""),
    ]


def test_bytes_after_the_last_setup_reply_are_handed_over() -> None:
    dialogue = started(IMPLICIT_SESSION)
    assert dialogue.server_data(
        b"220 hello\r\n200 PBSZ=0\r\n200 protected\r\n421 idle\r\n421-go\r\n421"
    ) == [PBSZ, PROT, DialogueReady("220 banner", b"421 idle\r\n421-go\r\n421")]


def test_garbage_after_the_last_setup_reply_is_the_sessions() -> None:
    dialogue = started(PLAIN_SESSION)
    assert dialogue.server_data(b"220 hello\r\nnot a reply\r\n") == [
        DialogueReady("220 banner", b"not a reply\r\n")
    ]


def test_ready_dialogue_refuses_more_bytes() -> None:
    dialogue = started(PLAIN_SESSION)
    assert dialogue.server_data(b"220 hello\r\n") == [DialogueReady("220 banner", b"")]
    with pytest.raises(DialogueStateError):
        dialogue.server_data(b"421 bye\r\n")
    assert dialogue.server_closed() == []


LOGIN_STREAM = b"120-wait\r\n120 soon\r\n220-hi\r\n220 there\r\n331 pw\r\n230 in\r\n421 idle\r\n"
# Where each reply of LOGIN_STREAM ends, and what the dialogue does then.
LOGIN_STEPS: list[tuple[int, list[DialogueAction]]] = [
    (len(b"120-wait\r\n120 soon\r\n"), []),
    (len(b"120-wait\r\n120 soon\r\n220-hi\r\n220 there\r\n"), [USER]),
    (len(b"120-wait\r\n120 soon\r\n220-hi\r\n220 there\r\n331 pw\r\n"), [PASS]),
]
LOGIN_DONE = len(LOGIN_STREAM) - len(b"421 idle\r\n")


def test_any_split_gives_the_same_dialogue() -> None:
    """Every split into three chunks (at CR/LF too): each chunk's actions are exactly
    those of the replies it completes, and the bytes after the last setup reply
    reach the session whole."""
    for first, second in itertools.combinations_with_replacement(range(len(LOGIN_STREAM) + 1), 2):
        cuts = [0, first, second, len(LOGIN_STREAM)]
        dialogue = started(LOGIN_PROBE)
        handed_over = b""
        for start, end in itertools.pairwise(cuts):
            chunk = LOGIN_STREAM[start:end]
            if dialogue.state is DialogueState.READY:
                handed_over += chunk
                continue
            expected = [actions for boundary, actions in LOGIN_STEPS if start < boundary <= end]
            flat = [action for actions in expected for action in actions]
            if start < LOGIN_DONE <= end:
                unread = LOGIN_STREAM[LOGIN_DONE:end]
                flat += [QUIT, DialogueReady("230 logged in", unread)]
                handed_over += unread
            assert dialogue.server_data(chunk) == flat, (first, second)
        assert dialogue.state is DialogueState.READY, (first, second)
        assert handed_over == b"421 idle\r\n", (first, second)


def test_byte_by_byte() -> None:
    dialogue = started(EXPLICIT_SESSION)
    greeting = b"220-a\r\n220 b\r\n"
    for index in range(len(greeting) - 1):
        assert dialogue.server_data(greeting[index : index + 1]) == []
    assert dialogue.server_data(b"\n") == [AUTH]
    for byte in b"234 ok\r":
        assert dialogue.server_data(bytes([byte])) == []
    assert dialogue.server_data(b"\n") == [StartServerTls()]


# ------------------------------------------------------------ misuse


def test_events_out_of_order_are_errors_of_the_runtime() -> None:
    def raises(message: str) -> AbstractContextManager[pytest.ExceptionInfo[DialogueStateError]]:
        return pytest.raises(DialogueStateError, match=f"^{re.escape(message)}$")

    dialogue = ServerDialogue(EXPLICIT_SESSION)
    with raises("server_data() in state IDLE"):
        dialogue.server_data(b"220 hello\r\n")
    with raises("server_closed() before start()"):
        dialogue.server_closed()
    assert dialogue.start() == []
    with raises("start() in state GREETING"):
        dialogue.start()
    with raises("tls_started() in state GREETING"):
        dialogue.tls_started()
    with raises("tls_failed() in state GREETING"):
        dialogue.tls_failed("no")
    assert dialogue.state is DialogueState.GREETING


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"^PBSZ and PROT protect data only over TLS$"):
        DialogueSettings(protect_data=True)
    with pytest.raises(ValueError, match=r"^credentials must not contain CR or LF$"):
        Credentials("alice\r\nDELE x")
    with pytest.raises(ValueError, match=r"^credentials must not contain CR or LF$"):
        Credentials("alice", "pw\nDELE x")
    # Any other character is the user's own business.
    assert Credentials("XX x", "pwX").user == "XX x"


def test_a_malformed_reply_behind_a_good_one_keeps_the_good_ones_action() -> None:
    dialogue = started(IMPLICIT_SESSION)
    assert dialogue.server_data(b"220 hello\r\n999 no such code\r\n") == [
        PBSZ,
        DialogueFailed("L7", f"bad reply waiting for PBSZ reply: {MALFORMED} (code out of range)"),
    ]
    assert_over(dialogue)
