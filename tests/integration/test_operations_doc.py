"""The examples of docs/operations.md, run as written against a real ``ftplb run``.

Every ``$`` command of a ``console`` block is run with bash, one section's
commands in one script, with the documented file and listener replaced by
the test's own and ``$MAINPID`` set to ftplb's PID. Then the test checks what
the section promises: a reload line, admin actions with their user, a hash,
a stop with exit status 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ftplb.admin.passwords import hash_password
from tests.integration.balancer import RunningBalancer, balancer, log_fields, simple_config
from tests.integration.farms import started_servers
from tests.integration.test_admin_live import free_port_for_admin
from tests.support import free_port, wait_until

pytestmark = pytest.mark.integration

DOC = Path(__file__).parents[2] / "docs" / "operations.md"
DOC_CONFIG = "/etc/ftplb/ftplb.toml"
DOC_ADMIN = "127.0.0.1:8404"
PASSWORD = "long pass phrase"
"""The password the page exports for the user ops."""


def console_commands(text: str) -> dict[str, list[str]]:
    """The ``$`` commands of the console blocks, per ``##`` section title."""
    sections: dict[str, list[str]] = {}
    title = ""
    in_console = False
    pending = ""
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
        elif line.strip() == "```console":
            in_console = True
        elif line.strip() == "```":
            in_console = False
        elif in_console and (line.startswith("$ ") or pending):
            pending += line[2:] if not pending else "\n" + line
            if not line.endswith("\\"):
                sections.setdefault(title, []).append(pending)
                pending = ""
    return sections


def run_section(
    commands: list[str], lb: RunningBalancer, admin: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    script = "set -euo pipefail\n" + "\n".join(commands)
    script = script.replace(DOC_CONFIG, str(lb.config_path)).replace(DOC_ADMIN, admin)
    env = {
        **os.environ,
        "MAINPID": str(lb.process.pid),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("FTPLB_ADMIN_PASSWORD", None)
    return subprocess.run(
        ["bash", "-c", script],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def section(sections: dict[str, list[str]], prefix: str) -> list[str]:
    return next(commands for title, commands in sections.items() if title.startswith(prefix))


def test_the_operations_page_examples_work_as_written() -> None:
    sections = console_commands(DOC.read_text())
    assert f"export FTPLB_ADMIN_PASSWORD='{PASSWORD}'" in section(sections, "Draining")
    with started_servers("pyftpdlib", ["127.0.0.51", "127.0.0.52"]) as servers:
        port, admin_port = free_port(), free_port_for_admin()
        admin = f"127.0.0.1:{admin_port}"
        users = (
            f'[admin]\nbind = "{admin}"\n\n[[admin.users]]\nname = "ops"\n'
            f'password_hash = "{hash_password(PASSWORD)}"\nrole = "admin"\n'
        )
        text = simple_config([(s.host, s.port) for s in servers], port=port, sections=users)
        with balancer(text, "127.0.0.1", port) as lb:
            # Reloading: the file gains a weight, the block checks and reloads it.
            lb.config_path.write_text(text.replace('name = "s2"', 'name = "s2"\nweight = 2'))
            done = run_section(section(sections, "Reloading"), lb, admin)
            assert done.returncode == 0, done.stderr
            assert "configuration is valid" in done.stdout

            def reloaded() -> list[dict[str, str]]:
                lines = [log_fields(line) for line in lb.log_lines("info")]
                return [f for f in lines if f.get("message") == "reloaded"]

            wait_until(reloaded, 10, "the reload")
            assert (reloaded()[0]["generation"], reloaded()[0]["changed"]) == ("2", "pool/s2")

            # Draining: every action is logged with its user, in order.
            done = run_section(section(sections, "Draining"), lb, admin)
            assert done.returncode == 0, done.stderr
            assert '"admin_state": "DRAIN"' in done.stdout or '"admin_state":"DRAIN"' in done.stdout
            actions = [log_fields(line) for line in lb.log_lines("info") if "admin action" in line]
            assert [(a["user"], a.get("state"), a.get("weight")) for a in actions] == [
                ("ops", "DRAIN", None),
                ("ops", "MAINT", None),
                ("ops", "READY", None),
                ("ops", None, "3"),
            ]

            # The admin API: hash-password makes a hash for the configuration.
            done = run_section(section(sections, "The admin API"), lb, admin, stdin="secret\n")
            assert done.returncode == 0, done.stderr
            assert re.fullmatch(r"\$scrypt\$ln=15,r=8,p=1\$\S+\$\S+\n", done.stdout), done.stdout

            # Stopping: the process ends with 0.
            done = run_section(section(sections, "Stopping"), lb, admin)
            assert done.returncode == 0, done.stderr
            assert lb.process.wait(30) == 0
