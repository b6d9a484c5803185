"""An intermediate parent for the parent-death tests.

It starts ``child_program.py`` with the remaining arguments and with
``Z4J_PARENT_PID`` set to its own pid, as the brain's supervisor does, then
waits for the child. The test kills this process with SIGKILL and checks that
the child exits on its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CHILD_PROGRAM = Path(__file__).with_name("child_program.py")


def main() -> int:
    environment = dict(os.environ)
    environment["Z4J_PARENT_PID"] = str(os.getpid())
    child = subprocess.Popen(
        [sys.executable, str(CHILD_PROGRAM), *sys.argv[1:]],
        env=environment,
        stdin=subprocess.DEVNULL,
    )
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
