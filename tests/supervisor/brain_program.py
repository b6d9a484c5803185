"""A minimal brain for the parent-death tests: it runs ``ChildSupervisor`` on the arguments.

The test kills this process with SIGKILL, so the supervisor gets no chance to
stop its child, and checks that the child exits on its own.
"""

from __future__ import annotations

import sys

import anyio

from z4j_brain_plugin.supervisor import ChildSupervisor


async def main() -> None:
    supervisor = ChildSupervisor(sys.argv[1:])
    await supervisor.run()


if __name__ == "__main__":
    anyio.run(main)
