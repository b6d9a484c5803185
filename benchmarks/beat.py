"""Celery beat on the same Redis broker, as the yardstick for the burst and idle figures."""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

from benchmarks import broker, procstat
from benchmarks.context import Bench, sleep_until
from benchmarks.services import REPO_ROOT, Service, spawn, wait_until

logger = logging.getLogger(__name__)

READY_MARKER = "beat: Starting..."


def measure_beat(bench: Bench, lead_time: float) -> dict[str, Any]:
    """Run beat with every entry due ``lead_time`` seconds after its start; time the burst, then idle CPU."""
    entries = bench.sizes.beat_entries
    queue = bench.queue("beat")
    broker.delete_keys(bench.broker_url, queue)
    due_at = time.time() + lead_time
    beat = _start_beat(bench, entries, due_at, queue)
    try:
        ready_at = wait_until(lambda: _ready(beat), "celery beat to start", lead_time, 0.05)
        sleep_until(due_at - 0.5)
        cpu_before = procstat.cpu_seconds(beat.pid)
        done_at = broker.wait_for_length(bench.broker_url, queue, entries, bench.sizes.beat_timeout)
        result = _burst_result(bench, queue, entries, due_at, done_at)
        result["cpu_per_entry_ms"] = round(
            (procstat.cpu_seconds(beat.pid) - cpu_before) / max(result["messages"], 1) * 1000, 3
        )
        result["ready_before_due_s"] = round(due_at - ready_at, 1)
        result["idle"] = _idle_cpu(beat, bench.sizes.beat_idle_window)
    finally:
        beat.stop()
        broker.delete_keys(bench.broker_url, queue)
    return result


def _start_beat(bench: Bench, entries: int, due_at: float, queue: str) -> Service:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "Z4J_BENCH_BEAT_BROKER": bench.broker_url,
        "Z4J_BENCH_BEAT_ENTRIES": str(entries),
        "Z4J_BENCH_BEAT_DUE_AT": repr(due_at),
        "Z4J_BENCH_BEAT_QUEUE": queue,
    }
    schedule_file = bench.stack.workdir / f"beat-schedule-{int(due_at)}"
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "benchmarks.beat_app",
        "beat",
        f"--schedule={schedule_file}",
        "--loglevel=INFO",
        "--pidfile=",
    ]
    return spawn("celery-beat", command, env, bench.stack.workdir)


def _ready(beat: Service) -> bool:
    beat.check_running()
    return READY_MARKER in beat.log_tail(100_000)


def _burst_result(
    bench: Bench, queue: str, entries: int, due_at: float, done_at: float | None
) -> dict[str, Any]:
    messages = broker.queue_length(bench.broker_url, queue)
    result: dict[str, Any] = {
        "entries": entries,
        "messages": messages,
        "complete": done_at is not None,
    }
    if done_at is not None:
        result["all_on_broker_s"] = round(done_at - due_at, 3)
        return result
    # Beat did not finish within the time limit: extrapolate from its rate so
    # far, and mark the figure as an estimate.
    elapsed = time.time() - due_at
    result["stopped_after_s"] = round(elapsed, 1)
    result["estimated_all_on_broker_s"] = round(elapsed * entries / max(messages, 1), 1)
    return result


def _idle_cpu(beat: Service, window: float) -> dict[str, Any]:
    before = procstat.cpu_seconds(beat.pid)
    started = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - started
    return {
        "window_s": round(elapsed, 1),
        "percent": round((procstat.cpu_seconds(beat.pid) - before) / elapsed * 100, 3),
    }
