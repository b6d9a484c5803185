"""The ``z4j-scheduler`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="z4j-scheduler",
        description="Preview schedules and run the z4j scheduler process.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from z4j_scheduler import preview, serve_options

    preview.add_commands(commands)
    serve_options.add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())
