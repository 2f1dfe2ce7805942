"""The runtime admin API of a real ``ftplb run``: users, codes, actions, routing after a drain.

Each FTP server's root holds a ``whoami`` file with the server's name, so a
client learns at once which server its session reached. The admin users'
hashes come from ``ftplb hash-password`` itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from ftplb.runtime.steering import steered_index
from tests.integration.admin_api import (
    APPLIED_WITHIN,
    LEGACY,
    LEGACY_PASSWORD,
    OPS,
    OPS_PASSWORD,
    SOURCES,
    VIEWER,
    VIEWER_PASSWORD,
    Api,
    api_farm,
    ftplb,
)
from tests.integration.test_admin_live import free_port_for_admin
from tests.integration.workers_farm import records, source_of, wait_ready
from tests.support import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    with api_farm() as running:
        yield running


@pytest.fixture
def ready_after(api: Api) -> Iterator[Api]:
    """Every server back to READY at its configured weight after the test."""
    yield api
    for name in ("s1", "s2"):
        api.act(name, {"state": "ready", "weight": 1})
    # The balancer follows the record within a second: the next test starts from both.
    wait_until(lambda: {api.landed(), api.landed()} == {"s1", "s2"}, 2, "both servers in use")


# ------------------------------------------------------------------ codes


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, ""), (OPS, "wrong"), (OPS, VIEWER_PASSWORD), ("nobody", OPS_PASSWORD), (LEGACY, "x")],
)
@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/servers"), ("POST", "/api/servers/pool/s1")]
)
def test_no_or_wrong_credentials_get_401_with_a_challenge(
    api: Api, user: str | None, password: str, method: str, path: str
) -> None:
    body = b'{"state": "drain"}' if method == "POST" else None
    status, headers, _ = api.call(method, path, body, user=user, password=password)
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="ftplb", charset="UTF-8"'
    assert api.server("s1")["admin_state"] == "READY"


def test_a_read_only_user_reads_and_gets_403_for_an_action(api: Api) -> None:
    status, _, servers = api.call("GET", "/api/servers", user=VIEWER, password=VIEWER_PASSWORD)
    assert status == 200 and isinstance(servers, list)
    assert [(s["backend"], s["server"]) for s in servers] == [("pool", "s1"), ("pool", "s2")]
    status, answer = api.act("s1", {"state": "drain"}, user=VIEWER, password=VIEWER_PASSWORD)
    assert status == 403
    assert answer == {"error": "user 'viewer' is read-only: actions need a user with role = admin"}
    assert api.server("s1")["admin_state"] == "READY"


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("target", ["pool/s9", "nope/s1"])
def test_an_unknown_server_is_404(api: Api, method: str, target: str) -> None:
    body = b'{"state": "drain"}' if method == "POST" else None
    status, headers, answer = api.call(method, f"/api/servers/{target}", body)
    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    assert answer == {"error": f"no server {target}"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api"),
        ("GET", "/api/servers/pool"),
        ("DELETE", "/api/servers/pool/s1"),
        ("POST", "/api/servers"),
        ("POST", "/stats"),
    ],
)
def test_other_paths_and_methods_stay_404(api: Api, method: str, path: str) -> None:
    status, _, _ = api.call(method, path, b"{}" if method == "POST" else None)
    assert status == 404


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "the body is not valid JSON: "),
        (b"", "the body is not valid JSON: "),
        (b'{"state": "up"}', '"state" must be "drain", "maint" or "ready"'),
        (b'{"weight": 300}', '"weight" must be a whole number from 0 to 256'),
        (b'{"weight": -1}', '"weight" must be a whole number from 0 to 256'),
        (b'{"weight": "2"}', '"weight" must be a whole number from 0 to 256'),
        (b"{}", "expected an object"),
        (b'["drain"]', "expected an object"),
        (b'{"state": "drain", "why": "x"}', "unknown field 'why'"),
    ],
)
def test_a_bad_body_is_400_with_a_json_error(api: Api, body: bytes, error: str) -> None:
    status, headers, answer = api.call("POST", "/api/servers/pool/s1", body)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert isinstance(answer, dict) and set(answer) == {"error"}
    assert answer["error"].startswith(error)
    assert api.server("s1")["admin_state"] == "READY"


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_an_action_must_be_sent_as_json(api: Api, content_type: str | None) -> None:
    # What a cross-site HTML form can send is refused: the CSRF defence.
    status, _, answer = api.call(
        "POST", "/api/servers/pool/s1", b'{"state": "drain"}', content_type=content_type
    )
    assert status == 415
    assert answer == {"error": "the body must be JSON, sent as Content-Type: application/json"}
    assert api.server("s1")["admin_state"] == "READY"


# ---------------------------------------------------------------- actions


def test_drain_answers_the_new_state_shows_at_once_and_is_logged(ready_after: Api) -> None:
    api = ready_after
    status, answer = api.act("s1", {"state": "drain"})
    assert status == 200
    assert isinstance(answer, dict)
    assert {
        k: answer[k] for k in ("backend", "server", "address", "admin_state", "changed_by")
    } == {
        "backend": "pool",
        "server": "s1",
        "address": f"{api.farm.servers[0].host}:{api.farm.servers[0].port}",
        "admin_state": "DRAIN",
        "changed_by": OPS,
    }
    assert set(answer) == {
        "backend",
        "server",
        "address",
        "state",
        "admin_state",
        "weight",
        "configured_weight",
        "current_sessions",
        "sessions",
        "transfers",
        "connect_failures",
        "last_check",
        "changed_by",
    }
    shown = api.server("s1")
    assert (shown["admin_state"], shown["changed_by"]) == ("DRAIN", OPS)
    assert api.server("s2")["admin_state"] == "READY"
    # The effective state follows through the metrics, within about a second.
    wait_until(lambda: api.server("s1")["state"] == "DRAIN", 5, "s1 shown DRAIN")
    actions = [f for f in records(api.farm.lb, "info") if f.get("message") == "admin action"]
    assert actions[-1] == {
        "message": "admin action",
        "user": OPS,
        "backend": "pool",
        "server": "s1",
        "state": "DRAIN",
    }


def test_a_runtime_weight_and_maint(ready_after: Api) -> None:
    api = ready_after
    status, answer = api.act("s2", {"weight": 5})
    assert status == 200 and isinstance(answer, dict)
    assert (answer["weight"], answer["configured_weight"], answer["admin_state"]) == (5, 1, "READY")
    status, answer = api.act("s2", {"state": "maint"}, user=LEGACY, password=LEGACY_PASSWORD)
    assert status == 200 and isinstance(answer, dict)
    assert (answer["weight"], answer["admin_state"], answer["changed_by"]) == (5, "MAINT", LEGACY)
    status, answer = api.act("s2", {"state": "ready", "weight": 1})
    assert status == 200 and isinstance(answer, dict)
    assert (answer["weight"], answer["admin_state"]) == (1, "READY")


def test_after_a_drain_new_sessions_all_reach_the_other_server(ready_after: Api) -> None:
    api = ready_after
    assert {api.landed(), api.landed()} == {"s1", "s2"}  # round robin over both
    status, _ = api.act("s1", {"state": "drain"})
    assert status == 200
    wait_until(lambda: api.landed() == "s2" and api.landed() == "s2", APPLIED_WITHIN, "s1 drained")
    assert [api.landed() for _ in range(10)] == ["s2"] * 10
    status, _ = api.act("s1", {"state": "ready"})
    assert status == 200
    wait_until(lambda: "s1" in {api.landed(), api.landed()}, APPLIED_WITHIN, "s1 back")


def test_the_plain_password_is_warned_about_at_start(api: Api) -> None:
    warnings = [f["warning"] for f in records(api.farm.lb, "warning")]
    assert warnings.count("plain_admin_password") == 1
    result = ftplb("check", "-c", str(api.farm.lb.config_path))
    assert result.returncode == 0
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{api.farm.lb.config_path}:")
    assert ": admin.password: warning: the password is written in plain text" in line
    assert result.stdout == f"{api.farm.lb.config_path}: configuration is valid\n"


# ------------------------------------------------------------- ftplb admin


def test_ftplb_admin_drains_shows_and_readies_end_to_end(ready_after: Api) -> None:
    api = ready_after
    config = str(api.farm.lb.config_path)
    env = {"FTPLB_ADMIN_PASSWORD": OPS_PASSWORD}
    result = ftplb("admin", "-c", config, "--user", OPS, "drain", "pool/s1", env=env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert (answer["server"], answer["admin_state"], answer["changed_by"]) == ("s1", "DRAIN", OPS)
    assert api.server("s1")["admin_state"] == "DRAIN"

    result = ftplb("admin", "--url", api.url, "--user", OPS, "show", env=env)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert [(s["server"], s["admin_state"]) for s in shown] == [("s1", "DRAIN"), ("s2", "READY")]

    result = ftplb("admin", "-c", config, "--user", OPS, "weight", "pool/s2", "4", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["weight"] == 4

    # The legacy user's plain password comes from the configuration itself.
    result = ftplb("admin", "-c", config, "--user", LEGACY, "ready", "pool/s1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["admin_state"] == "READY"


@pytest.mark.parametrize(
    ("args", "password", "words"),
    [
        (
            ("--user", OPS, "drain", "pool/s1"),
            "wrong",
            "authentication failed: wrong user name or password (HTTP 401)",
        ),
        (
            ("--user", VIEWER, "drain", "pool/s1"),
            VIEWER_PASSWORD,
            "not allowed: user 'viewer' is read-only: actions need a user with role = admin "
            "(HTTP 403)",
        ),
        (
            ("--user", OPS, "maint", "pool/s9"),
            OPS_PASSWORD,
            "not found: no server pool/s9 (HTTP 404)",
        ),
        (
            ("--user", OPS, "weight", "pool/s1", "999"),
            OPS_PASSWORD,
            'the request was refused: "weight" must be a whole number from 0 to 256 (HTTP 400)',
        ),
    ],
)
def test_ftplb_admin_failures_exit_1_with_a_clear_message(
    api: Api, args: tuple[str, ...], password: str, words: str
) -> None:
    result = ftplb(
        "admin",
        "-c",
        str(api.farm.lb.config_path),
        *args,
        env={"FTPLB_ADMIN_PASSWORD": password},
    )
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"ftplb admin: {words}\n"
    assert api.server("s1")["admin_state"] == "READY"


def test_ftplb_admin_says_when_nothing_listens() -> None:
    port = free_port_for_admin()
    result = ftplb("admin", "--url", f"http://127.0.0.1:{port}", "show")
    assert (result.returncode, result.stdout) == (1, "")
    assert (
        result.stderr == f"ftplb admin: cannot reach http://127.0.0.1:{port}: Connection refused\n"
    )


def test_hash_password_reads_stdin_and_refuses_an_empty_one() -> None:
    first = ftplb("hash-password", stdin="same\n")
    second = ftplb("hash-password", stdin="same\n")
    assert first.returncode == second.returncode == 0
    assert first.stdout != second.stdout  # salted
    empty = ftplb("hash-password", stdin="\n")
    assert (empty.returncode, empty.stdout, empty.stderr) == (1, "", "ftplb: empty password\n")


# ---------------------------------------------------------------- workers


def test_with_two_workers_a_drain_reaches_both() -> None:
    with api_farm(defaults="workers = 2") as api:
        wait_ready(api.farm.lb)
        opened: list[str] = []

        def landed(source: str) -> str:
            opened.append(source)
            return api.landed(source)

        def served() -> list[dict[str, str]]:
            return [f for f in records(api.farm.lb, "session") if f.get("server", "-") != "-"]

        # One source steered to each worker, to see when both follow the record.
        probes = [next(s for s in SOURCES if steered_index(s, 2) == index) for index in (0, 1)]
        for probe in probes:  # round robin in each worker, over both servers
            assert {landed(probe), landed(probe)} == {"s1", "s2"}
        status, answer = api.act("s1", {"state": "drain"})
        assert status == 200 and isinstance(answer, dict) and answer["admin_state"] == "DRAIN"
        wait_until(
            lambda: all(landed(p) == "s2" and landed(p) == "s2" for p in probes),
            APPLIED_WITHIN,
            "both workers following the drain",
        )
        wait_until(lambda: len(served()) == len(opened), 10, "the probes' sessions logged")
        before = len(opened)
        with ThreadPoolExecutor(4) as pool:
            assert list(pool.map(landed, SOURCES)) == ["s2"] * len(SOURCES)
        wait_until(lambda: len(served()) == len(opened), 10, "every session logged")
        after = served()[before:]
        assert sorted(source_of(f) for f in after) == sorted(SOURCES)
        assert {f["server"] for f in after} == {"s2"}
        assert {f["worker"] for f in after} == {"0", "1"}
