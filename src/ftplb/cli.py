"""Command line: ``ftplb run|check|demo|hash-password|admin|status|top|example``."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ftplb import __version__
from ftplb.config.load import ConfigError, check_config, config_warnings, load_config
from ftplb.config.schema import Config
from ftplb.config.workers import WorkerSlot
from ftplb.runtime.logs import event_log
from ftplb.runtime.metrics_home import metrics_home

# The balancer itself (ftplb.app, ftplb.supervisor, ftplb.demo) is imported
# inside the commands that run it: they import prometheus_client, which must
# find this run's metrics directory in the environment when it is first
# imported (ftplb.runtime.metrics_home).


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftplb", description="An FTP-aware load balancer.")
    parser.add_argument("--version", action="version", version=f"ftplb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run in the foreground until SIGTERM or SIGINT")
    run.add_argument("-c", "--config", required=True, help="the TOML configuration file")
    # Set by the master of a `workers = N` run for each worker process it starts.
    run.add_argument("--worker", type=WorkerSlot.parse, help=argparse.SUPPRESS)
    run.add_argument("--status-fd", type=int, help=argparse.SUPPRESS)
    check = commands.add_parser(
        "check", help="validate a configuration file: list every problem, then warnings"
    )
    check_file = check.add_mutually_exclusive_group(required=True)
    check_file.add_argument("-c", "--config", metavar="FILE", help="the TOML configuration file")
    check_file.add_argument("file", nargs="?", metavar="FILE", help="the same, without -c")
    demo = commands.add_parser("demo", help="run a demo with two built-in FTP servers")
    demo.add_argument("--port", type=_port, default=2121, help="the balancer's port (2121)")
    demo.add_argument(
        "--stats-port",
        type=lambda text: _port(text, allow_zero=True),
        default=8404,
        help="the stats page's port (8404; 0: none)",
    )
    commands.add_parser(
        "hash-password",
        help="print a password_hash for [[admin.users]] (the password from stdin or a prompt)",
    )
    _admin_parser(commands)
    _watch_parsers(commands)
    example = commands.add_parser(
        "example", help="print an example file: the configuration, or the systemd unit"
    )
    example.add_argument("kind", choices=["config", "systemd"])
    example.add_argument("--path", action="store_true", help="print where it is instead")
    return parser


def _port(text: str, *, allow_zero: bool = False) -> int:
    lowest = 0 if allow_zero else 1
    if text.isascii() and text.isdigit() and lowest <= int(text) <= 65535:
        return int(text)
    raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected {lowest} to 65535")


def _watch_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, words in (
        ("status", "print a running ftplb's stats tables once"),
        ("top", "show a running ftplb's stats tables live, until q or Ctrl-C"),
    ):
        watch = commands.add_parser(
            name,
            help=words,
            description=(
                f"{words[0].upper()}{words[1:]}, read from /stats.json of the admin listener. "
                "The password comes from FTPLB_ADMIN_PASSWORD, the file's plain password, "
                "or a prompt."
            ),
        )
        watch.add_argument("-c", "--config", help="the TOML configuration: its [admin] listener")
        watch.add_argument(
            "--admin", metavar="URL", help="the admin listener, e.g. http://127.0.0.1:8404"
        )
        watch.add_argument("--user", help="the admin user (default: the file's only user)")
        if name == "top":
            watch.add_argument(
                "--interval", type=float, default=1.0, help="seconds between readings (1)"
            )


def _target(text: str) -> tuple[str, str]:
    from ftplb.admin_client import parse_target  # noqa: PLC0415

    try:
        return parse_target(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _admin_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = commands.add_parser(
        "admin",
        help="act on a running ftplb: drain, maint, ready, weight, show; bans, unban",
        description=(
            "Send one request to the admin listener's API. The password comes from "
            "FTPLB_ADMIN_PASSWORD, or a prompt."
        ),
    )
    admin.add_argument("-c", "--config", help="the TOML configuration: where to connect, who")
    admin.add_argument("--url", help="the admin listener, e.g. http://127.0.0.1:8404")
    admin.add_argument("--user", help="the admin user (default: the config's only admin)")
    actions = admin.add_subparsers(dest="action", required=True, metavar="ACTION")
    for state, words in (
        ("drain", "no new sessions; running ones finish"),
        ("maint", "out of service: no new sessions, no health checks"),
        ("ready", "back in service"),
    ):
        action = actions.add_parser(state, help=words)
        action.add_argument("target", type=_target, metavar="BACKEND/SERVER")
    weight = actions.add_parser("weight", help="set a runtime weight (0-256)")
    weight.add_argument("target", type=_target, metavar="BACKEND/SERVER")
    weight.add_argument("weight", type=int, metavar="N")
    show = actions.add_parser("show", help="every server, or one")
    show.add_argument("target", type=_target, nargs="?", metavar="BACKEND/SERVER")
    actions.add_parser("bans", help="the client addresses the login defender bans now")
    unban = actions.add_parser("unban", help="lift the login defender's ban on an address")
    unban.add_argument("address", metavar="ADDRESS")


def _hash_password() -> int:
    from ftplb.admin.passwords import hash_password  # noqa: PLC0415

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("ftplb: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        print("ftplb: empty password", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def _admin(args: argparse.Namespace) -> int:
    from ftplb.admin_client import (  # noqa: PLC0415
        AdminClient,
        AdminClientError,
        default_url,
        default_user,
        read_password,
    )

    settings = None
    if args.config is not None:
        config = _load_or_report(args.config)
        if config is None:
            return 1
        settings = config.admin
        if settings is None and args.url is None:
            print(f"ftplb: {args.config} has no [admin] section: give --url", file=sys.stderr)
            return 1
    url = args.url or (default_url(settings) if settings is not None else None)
    if url is None:
        print("ftplb admin: give -c CONFIG or --url URL", file=sys.stderr)
        return 2
    user = args.user or (default_user(settings) if settings is not None else None)
    try:
        client = AdminClient(url, user, read_password(user, settings) if user else "")
        if args.action == "show":
            result = client.show(args.target)
        elif args.action == "bans":
            result = client.bans()
        elif args.action == "unban":
            result = client.unban(args.address)
        elif args.action == "weight":
            result = client.act(args.target, {"weight": args.weight})
        else:
            result = client.act(args.target, {"state": args.action})
    except AdminClientError as error:
        print(f"ftplb admin: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1))
    return 0


def _example(kind: str, *, path_only: bool) -> int:
    from ftplb.example_files import example_path  # noqa: PLC0415

    path = example_path(kind)
    if path is None:
        print(f"ftplb: the example {kind} file is not installed", file=sys.stderr)
        return 1
    if path_only:
        print(path)
    else:
        sys.stdout.write(path.read_text(encoding="utf-8"))
    return 0


def _load_or_report(path: str) -> Config | None:
    """The configuration at ``path``, or None once its problems are printed."""
    try:
        return load_config(path)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return None


def _check(path: str) -> int:
    problems = check_config(path)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        for warning in config_warnings(path):
            print(warning, file=sys.stderr)
        print(f"{path}: configuration is valid")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.config if args.config is not None else args.file)
    if args.command == "demo":
        with metrics_home(args.stats_port != 0) as metrics_dir:
            from ftplb.demo import run_demo  # noqa: PLC0415 - see the imports above

            return run_demo(args.port, args.stats_port, metrics_dir)
    if args.command == "hash-password":
        return _hash_password()
    if args.command == "admin":
        return _admin(args)
    if args.command == "status":
        from ftplb.console.status import run_status  # noqa: PLC0415 - rich only when asked

        return run_status(args.config, args.admin, args.user)
    if args.command == "top":
        from ftplb.console.top import run_top  # noqa: PLC0415 - rich only when asked

        return run_top(args.config, args.admin, args.user, args.interval)
    if args.command == "example":
        return _example(args.kind, path_only=args.path)
    if args.worker is not None:
        if args.status_fd is None:
            print("ftplb: --worker needs --status-fd", file=sys.stderr)
            return 2
        from ftplb.supervisor import run_worker  # noqa: PLC0415 - see the imports above

        return run_worker(args.config, args.worker, args.status_fd)
    config = _load_or_report(args.config)
    if config is None:
        return 1
    with metrics_home(config.admin is not None) as metrics_dir:
        return _run(args.config, config, metrics_dir)


def _run(path: str, config: Config, metrics_dir: str | None) -> int:
    """``ftplb run``: one process, or the master of ``workers = N``; the exit status."""
    if config.defaults.workers > 1:
        from ftplb.supervisor import run_supervisor  # noqa: PLC0415 - see the imports above

        try:
            # The text that was just validated goes to every worker.
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            print(f"{path}: cannot read file: {error}", file=sys.stderr)
            return 1
        return run_supervisor(path, config, text, metrics_dir)
    from ftplb.app import StartupError, run_event_loop, serve  # noqa: PLC0415 - see above

    try:
        run_event_loop(
            lambda: serve(
                config,
                metrics_dir=metrics_dir,
                reload_source=lambda: (load_config(path), None),
            )
        )
    except StartupError as error:
        event_log(config.defaults).error(str(error))
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
