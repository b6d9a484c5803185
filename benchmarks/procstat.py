"""CPU time and memory of running processes, read from ``/proc`` (Linux only)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU seconds used so far by ``pid`` (not its children)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name in field 2 may contain spaces, so split after its ")".
    fields = text.rsplit(")", 1)[1].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / CLOCK_TICKS


def total_cpu_seconds(pids: Iterable[int]) -> float:
    return sum(cpu_seconds(pid) for pid in pids)


def memory_kib(pid: int, field: str = "VmRSS") -> int:
    """Return a memory field of ``/proc/<pid>/status`` in KiB: VmRSS (resident) or VmHWM (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"/proc/{pid}/status has no {field} line")
