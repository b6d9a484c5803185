"""A stand-in for the scheduler process in the supervisor and parent-guard tests.

On every start it appends its pid to ``--spawn-log``. With ``--exit-code`` it
exits at once with that code. Otherwise it installs its SIGTERM handler and
the parent guard chosen by ``--guard``, then writes ``--ready-file`` (JSON
with its pid, parent pid and a few environment values) and waits.

Lines appended to ``--event-file``:
    graceful        SIGTERM received, exiting with code 0
    term-ignored    SIGTERM received with --ignore-term, still running
    parent-gone     watch_parent returned, exiting with code 0
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType

import anyio

from z4j_scheduler.parent_guard import (
    install_parent_death_signal,
    parent_pid_from_environment,
    watch_parent,
)

WATCH_INTERVAL = 0.05


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ready-file", type=Path, required=True)
    parser.add_argument("--event-file", type=Path, required=True)
    parser.add_argument("--spawn-log", type=Path)
    parser.add_argument("--exit-code", type=int)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--guard", choices=["none", "pdeathsig", "watch", "both"], default="none")
    return parser.parse_args()


def append_line(path: Path, line: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def install_sigterm_handler(event_file: Path, *, ignore: bool) -> None:
    def handle_sigterm(signum: int, frame: FrameType | None) -> None:
        if ignore:
            append_line(event_file, "term-ignored")
            return
        append_line(event_file, "graceful")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, handle_sigterm)


def write_ready_file(path: Path, *, guard_installed: bool | None) -> None:
    # Written to a temporary name and renamed, so a reader never sees half a file.
    state = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "parent_pid_env": os.environ.get("Z4J_PARENT_PID"),
        "marker_env": os.environ.get("Z4J_TEST_MARKER"),
        "guard_installed": guard_installed,
    }
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(state), encoding="utf-8")
    os.replace(temporary, path)


def main() -> int:
    arguments = parse_arguments()
    if arguments.spawn_log is not None:
        append_line(arguments.spawn_log, str(os.getpid()))
    if arguments.exit_code is not None:
        return int(arguments.exit_code)

    install_sigterm_handler(arguments.event_file, ignore=arguments.ignore_term)
    guard_installed = None
    if arguments.guard in ("pdeathsig", "both"):
        guard_installed = install_parent_death_signal()
    write_ready_file(arguments.ready_file, guard_installed=guard_installed)

    if arguments.guard in ("watch", "both"):
        expected = parent_pid_from_environment()
        if expected is None:
            sys.exit("--guard watch needs Z4J_PARENT_PID")
        anyio.run(functools.partial(watch_parent, expected, interval=WATCH_INTERVAL))
        append_line(arguments.event_file, "parent-gone")
        return 0
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
