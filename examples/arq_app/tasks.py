"""Tasks of the arq example, registered by ``examples.arq_app.worker.WorkerSettings``.

arq names each function by its ``__qualname__``, so the task names that
z4j-scheduler sends are ``record_run``, ``send_report`` and ``cleanup``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from examples.runlog import append_run, delete_old_reports, write_report

__all__ = ["cleanup", "record_run", "send_report"]

logger = logging.getLogger(__name__)

Context = dict[str, Any]


def _queue(ctx: Context) -> str | None:
    # The worker's Redis pool has the worker's queue as its default queue,
    # and a worker reads only that queue.
    redis = ctx.get("redis")
    queue: str | None = getattr(redis, "default_queue_name", None)
    return queue


async def record_run(ctx: Context, label: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Log this run with its arguments, job id and queue."""
    return append_run(label, args, kwargs, task_id=ctx["job_id"], queue=_queue(ctx))


async def send_report(ctx: Context, name: str) -> str:
    """Write a summary of the run log to ``reports/NAME.txt``."""
    path = write_report(name, datetime.now(UTC))
    logger.info("report %s written to %s", name, path)
    append_run("send_report", (name,), {}, task_id=ctx["job_id"], queue=_queue(ctx))
    return str(path)


async def cleanup(ctx: Context, days: float = 7) -> list[str]:
    """Delete reports older than ``days`` days."""
    removed = delete_old_reports(days, datetime.now(UTC))
    logger.info("cleanup removed %d report(s) older than %s day(s)", len(removed), days)
    append_run("cleanup", (), {"days": days}, task_id=ctx["job_id"], queue=_queue(ctx))
    return removed
