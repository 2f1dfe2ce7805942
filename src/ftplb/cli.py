"""Command line: ``ftplb run|check|demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ftplb import __version__
from ftplb.app import StartupError, run_event_loop, serve
from ftplb.config.load import ConfigError, check_config, config_warnings, load_config
from ftplb.config.workers import WorkerSlot
from ftplb.runtime.logs import EventLog
from ftplb.supervisor import run_supervisor, run_worker


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ftplb", description="An FTP-aware load balancer.")
    parser.add_argument("--version", action="version", version=f"ftplb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run in the foreground until SIGTERM or SIGINT")
    run.add_argument("-c", "--config", required=True, help="the TOML configuration file")
    # Set by the master of a `workers = N` run for each worker process it starts.
    run.add_argument("--worker", type=WorkerSlot.parse, help=argparse.SUPPRESS)
    run.add_argument("--status-fd", type=int, help=argparse.SUPPRESS)
    check = commands.add_parser("check", help="validate a configuration file")
    check.add_argument("-c", "--config", required=True, help="the TOML configuration file")
    demo = commands.add_parser("demo", help="run a demo with two built-in FTP servers")
    demo.add_argument("--port", type=int, default=2121, help="the balancer's port (2121)")
    demo.add_argument(
        "--stats-port", type=int, default=8404, help="the stats page's port (8404; 0: none)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        problems = check_config(args.config)
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            for warning in config_warnings(args.config):
                print(warning, file=sys.stderr)
            print(f"{args.config}: configuration is valid")
        return 1 if problems else 0
    if args.command == "demo":
        from ftplb.demo import run_demo  # noqa: PLC0415 - pulls in pyftpdlib only when asked

        return run_demo(args.port, args.stats_port)
    if args.worker is not None:
        if args.status_fd is None:
            print("ftplb: --worker needs --status-fd", file=sys.stderr)
            return 2
        return run_worker(args.config, args.worker, args.status_fd)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 1
    if config.defaults.workers > 1:
        try:
            # The text that was just validated goes to every worker.
            text = Path(args.config).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            print(f"{args.config}: cannot read file: {error}", file=sys.stderr)
            return 1
        return run_supervisor(args.config, config, text)
    try:
        run_event_loop(lambda: serve(config))
    except StartupError as error:
        EventLog(config.defaults.log_format).error(str(error))
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
