"""Sizes of a full and a quick run, and the state the scenarios share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import database
from benchmarks.database import BenchDatabase
from benchmarks.services import Service, Stack, wait_until


@dataclass(frozen=True)
class Sizes:
    """Counts and durations of one run; seconds unless named otherwise."""

    lateness_schedules: int
    lateness_period: int
    burst_schedules: int
    burst_repeats: int
    idle_schedules: int
    idle_window: float
    rss_large_schedules: int
    start_repeats: int
    failover_repeats: int
    rest_bulk_schedules: int
    rest_single_schedules: int
    history_fires: int
    history_requests: int
    beat_entries: int
    beat_timeout: float
    beat_idle_window: float


FULL = Sizes(
    lateness_schedules=10_000,
    lateness_period=60,
    burst_schedules=10_000,
    burst_repeats=3,
    idle_schedules=100_000,
    idle_window=60.0,
    rss_large_schedules=1_000_000,
    start_repeats=3,
    failover_repeats=3,
    rest_bulk_schedules=10_000,
    rest_single_schedules=300,
    history_fires=1_000_000,
    history_requests=200,
    beat_entries=10_000,
    beat_timeout=420.0,
    beat_idle_window=60.0,
)

QUICK = Sizes(
    lateness_schedules=1_000,
    lateness_period=10,
    burst_schedules=2_000,
    burst_repeats=1,
    idle_schedules=100_000,
    idle_window=15.0,
    rss_large_schedules=300_000,
    start_repeats=1,
    failover_repeats=1,
    rest_bulk_schedules=2_000,
    rest_single_schedules=100,
    history_fires=100_000,
    history_requests=60,
    beat_entries=1_000,
    beat_timeout=90.0,
    beat_idle_window=15.0,
)

# Prefix of every queue and schedule name the benchmarks create.
PREFIX = "z4j_bench_"


@dataclass
class Bench:
    sizes: Sizes
    stack: Stack
    db: BenchDatabase
    broker_url: str
    # Where py-spy profiles go; None runs without profiling.
    profile_dir: Path | None = None
    results: dict[str, Any] = field(default_factory=dict)

    def queue(self, name: str) -> str:
        return PREFIX + name

    def start_leader(self, instance_id: str) -> Service:
        """Start a scheduler and wait until the leader row names it."""
        service = self.stack.start_scheduler(instance_id)
        wait_until(
            lambda: _leads(self, service, instance_id),
            f"scheduler {instance_id} to lead",
            60.0,
            0.02,
        )
        return service

    def named_pids(self) -> dict[str, int]:
        """PIDs of the brain and the running schedulers, by a name usable in file names."""
        pids = {"brain": self.stack.brain.pid} if self.stack.brain is not None else {}
        for service in self.stack.schedulers:
            if service.running():
                pids[service.name.replace(" ", "-")] = service.pid
        return pids

    def pids(self) -> list[int]:
        """PIDs of the brain and every running scheduler."""
        brain = self.stack.brain
        pids = [brain.pid] if brain is not None else []
        return pids + [service.pid for service in self.stack.schedulers if service.running()]


def _leads(bench: Bench, service: Service, instance_id: str) -> bool:
    service.check_running()
    return database.leader(bench.db)[1] == instance_id


def sleep_until(instant: float) -> None:
    delay = instant - time.time()
    if delay > 0:
        time.sleep(delay)
