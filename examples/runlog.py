"""The run log: one JSON line per task run, in the file named by ``Z4J_EXAMPLE_OUTPUT``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OUTPUT_ENV = "Z4J_EXAMPLE_OUTPUT"
DEFAULT_OUTPUT = "example-runs.jsonl"


def output_path() -> Path:
    """Return the run log's path, relative to the working directory unless absolute."""
    return Path(os.environ.get(OUTPUT_ENV, DEFAULT_OUTPUT))


def reports_dir() -> Path:
    """Return the directory where ``send_report`` writes, next to the run log."""
    return output_path().parent / "reports"


def append_run(
    label: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    task_id: str | None,
    queue: str | None,
) -> dict[str, Any]:
    """Append one run to the log and return it."""
    run = {
        "label": label,
        "args": list(args),
        "kwargs": dict(kwargs),
        "task_id": task_id,
        "queue": queue,
        "pid": os.getpid(),
        "at": datetime.now(UTC).isoformat(),
    }
    # One write of one line to a file opened for appending, so lines from
    # several worker processes do not interleave.
    with output_path().open("a", encoding="utf-8") as log:
        log.write(json.dumps(run, sort_keys=True) + "\n")
    return run


def count_runs_by_label() -> dict[str, int]:
    """Count the logged runs of each label. An absent log counts as empty."""
    counts: dict[str, int] = {}
    try:
        lines = output_path().read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return counts
    for line in lines:
        label = json.loads(line)["label"]
        counts[label] = counts.get(label, 0) + 1
    return counts


def write_report(name: str, now: datetime) -> Path:
    """Write a summary of the run log to ``reports/NAME.txt`` and return its path."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(
            f"invalid report name {name!r}: use a file name without '/' or a leading '.'"
        )
    lines = [f"report {name} at {now.isoformat()}"]
    lines += [f"{label}: {count}" for label, count in sorted(count_runs_by_label().items())]
    path = reports_dir() / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def delete_old_reports(days: float, now: datetime) -> list[str]:
    """Delete reports last written more than ``days`` days before ``now``, returning their names."""
    if days < 0:
        raise ValueError(f"invalid days {days!r}: must be 0 or more")
    cutoff = now.timestamp() - days * 86400
    removed = []
    for path in sorted(reports_dir().glob("*.txt")):
        if path.stat().st_mtime < cutoff:
            path.unlink()
            removed.append(path.name)
    return removed
