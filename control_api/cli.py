"""The ``voicecall`` console script."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from control_api.config import ConfigError, load_config


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(args.config)
    except ConfigError as e:
        print(f"voicecall: configuration error: {e}", file=sys.stderr)
        return 2
    from control_api.daemon import run_daemon

    return run_daemon(loaded)


def _cmd_check_config(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(args.config)
    except ConfigError as e:
        print(f"voicecall: configuration error: {e}", file=sys.stderr)
        return 2
    for w in loaded.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"{loaded.source}: OK")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicecall", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a node (SIP, RTP, control API, metrics)")
    serve.add_argument("--config", help="TOML file (spec/config.md); default: embedded demo")
    serve.set_defaults(func=_cmd_serve)
    check = sub.add_parser("check-config", help="validate a configuration file and exit")
    check.add_argument("--config", help="TOML file")
    check.set_defaults(func=_cmd_check_config)
    from control_api import admin_cli, call_cli

    admin_cli.register(sub)
    call_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
