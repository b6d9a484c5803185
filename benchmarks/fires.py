"""Fire path figures: lateness, a burst of simultaneous slots, start-up and fail-over.

Every figure is measured on the broker: a ``QueueWatcher`` or an LLEN poll
sees the Celery message on Redis. The fire rows in the database then give
each message's slot (``scheduled_for``), the brain's ``dispatched_at`` and
the leader epoch that recorded it.
"""

from __future__ import annotations

import logging
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from benchmarks import broker, database, procstat
from benchmarks.context import Bench, sleep_until
from benchmarks.profiling import sampled
from benchmarks.services import wait_until

logger = logging.getLogger(__name__)

# Seconds between seeding schedules and their first slot, so that the
# scheduler has read them and every process is idle when the slots come.
LEAD_TIME = 8.0


def percentile(values: list[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values``; ``fraction`` is 0.5 for p50."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[index]


def summary_ms(values: list[float]) -> dict[str, float]:
    """Return min, p50, p99 and max of values given in seconds, in milliseconds.

    The minimum shows whether any message reached the broker before its slot.
    """
    return {
        "min_ms": round(min(values) * 1000, 2),
        "p50_ms": round(percentile(values, 0.50) * 1000, 2),
        "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        "max_ms": round(max(values) * 1000, 2),
    }


def utc(epoch_seconds: float) -> datetime:
    return datetime.fromtimestamp(epoch_seconds, UTC)


def measure_lateness(bench: Bench) -> dict[str, Any]:
    """Fire N schedules spread evenly over one period and time each message's arrival."""
    sizes = bench.sizes
    count, period = sizes.lateness_schedules, sizes.lateness_period
    queue = bench.queue("lateness")
    database.clear_schedules(bench.db)
    first = time.time() + LEAD_TIME
    step = timedelta(seconds=period) / count
    watcher = broker.QueueWatcher(bench.broker_url, [queue]).start()
    database.seed_schedules(
        bench.db,
        prefix="lateness-",
        count=count,
        first=utc(first),
        step=step,
        period_seconds=period,
        queue=queue,
    )
    sleep_until(first)
    with sampled(bench.named_pids(), bench.profile_dir, "lateness"):
        cpu_before = procstat.total_cpu_seconds(bench.pids())
        complete = watcher.wait_for(count, period + 60.0)
        cpu_used = procstat.total_cpu_seconds(bench.pids()) - cpu_before
    watcher.stop()
    in_period = [arrival for arrival in watcher.arrivals if arrival.at < first + period + 5.0]
    # The last slot of the first period is one step before its end. Half a
    # step of margin keeps float rounding from admitting the next period.
    period_end = first + period - period / count / 2
    result = _lateness_result(bench, in_period, count, period_end, complete)
    result["cpu_per_fire_ms"] = round(cpu_used / max(len(watcher.arrivals), 1) * 1000, 3)
    database.clear_schedules(bench.db)
    broker.delete_keys(bench.broker_url, queue)
    return result


def _lateness_result(
    bench: Bench, arrivals: list[broker.Arrival], count: int, period_end: float, complete: bool
) -> dict[str, Any]:
    # Only the first period's slots count; the next period may have begun.
    rows = {row[0]: row for row in database.fire_rows(bench.db) if row[1].timestamp() < period_end}
    on_broker: list[float] = []
    dispatched: list[float] = []
    measured = []
    for arrival in arrivals:
        row = rows.get(arrival.task_id)
        if row is None:
            continue
        measured.append(arrival.task_id)
        on_broker.append(arrival.at - row[1].timestamp())
        if row[2] is not None:
            dispatched.append((row[2] - row[1]).total_seconds())
    return {
        "schedules": count,
        "period_s": bench.sizes.lateness_period,
        "messages": len(measured),
        "complete": complete,
        "distinct_fires": len(set(measured)),
        "broker": summary_ms(on_broker) if on_broker else None,
        "dispatched_at": summary_ms(dispatched) if dispatched else None,
    }


def measure_burst(bench: Bench) -> dict[str, Any]:
    """Make N slots due at one instant, several times; report each run and the median."""
    runs = [_one_burst(bench, index) for index in range(bench.sizes.burst_repeats)]
    on_broker = [run["all_on_broker_s"] for run in runs if run["all_on_broker_s"] is not None]
    cpu = [run["cpu_per_fire_ms"] for run in runs]
    return {
        "schedules": bench.sizes.burst_schedules,
        "runs": runs,
        "median_all_on_broker_s": statistics.median(on_broker) if on_broker else None,
        "max_all_on_broker_s": max(on_broker) if on_broker else None,
        "median_cpu_per_fire_ms": statistics.median(cpu),
    }


def _one_burst(bench: Bench, index: int) -> dict[str, Any]:
    count = bench.sizes.burst_schedules
    queue = bench.queue(f"burst{index}")
    database.clear_schedules(bench.db)
    due = time.time() + LEAD_TIME
    database.seed_schedules(
        bench.db,
        prefix=f"burst{index}-",
        count=count,
        first=utc(due),
        step=timedelta(0),
        period_seconds=3600,
        queue=queue,
    )
    sleep_until(due - 0.5)
    with sampled(bench.named_pids(), bench.profile_dir, f"burst{index}"):
        cpu_before = {pid: procstat.cpu_seconds(pid) for pid in bench.pids()}
        on_broker = broker.wait_for_length(bench.broker_url, queue, count, timeout=300.0)
        recorded = _wait_dispatched(bench, count)
        cpu_after = {pid: procstat.cpu_seconds(pid) for pid in cpu_before}
    cpu_used = sum(cpu_after[pid] - cpu_before[pid] for pid in cpu_before)
    result = {
        "all_on_broker_s": round(on_broker - due, 3) if on_broker else None,
        "all_dispatched_in_db_s": round(recorded - due, 3) if recorded else None,
        "messages": broker.queue_length(bench.broker_url, queue),
        "fires": database.scalar(bench.db, "SELECT count(*) FROM schedule_fires"),
        "cpu_per_fire_ms": round(cpu_used / count * 1000, 3),
        "cpu_by_process_s": {
            str(pid): round(cpu_after[pid] - cpu_before[pid], 3) for pid in cpu_before
        },
    }
    broker.delete_keys(bench.broker_url, queue)
    logger.info("burst %d: %s", index, result)
    return result


def _wait_dispatched(bench: Bench, count: int) -> float | None:
    sql = "SELECT count(*) FROM schedule_fires WHERE status = 'dispatched'"
    try:
        return wait_until(
            lambda: database.scalar(bench.db, sql) == count, "all fires dispatched", 300.0, 0.05
        )
    except TimeoutError:
        return None


def measure_start(bench: Bench) -> dict[str, Any]:
    """Time from spawning ``z4j-scheduler serve`` to its first message on the broker."""
    bench.stack.stop_schedulers()
    queue = bench.queue("start")
    runs = [_one_start(bench, queue, index) for index in range(bench.sizes.start_repeats)]
    broker.delete_keys(bench.broker_url, queue)
    first_fire = [run["first_fire_s"] for run in runs if run["first_fire_s"] is not None]
    return {
        "schedules": _schedule_count(bench),
        "runs": runs,
        "median_first_fire_s": statistics.median(first_fire) if first_fire else None,
        "max_first_fire_s": max(first_fire) if first_fire else None,
    }


def _one_start(bench: Bench, queue: str, index: int) -> dict[str, Any]:
    watcher = broker.QueueWatcher(bench.broker_url, [queue]).start()
    database.seed_schedules(
        bench.db,
        prefix=f"start{index}-",
        count=1,
        first=utc(time.time()),
        step=timedelta(0),
        period_seconds=3600,
        queue=queue,
    )
    service = bench.stack.start_scheduler(f"start-{index}")
    arrived = watcher.wait_for(1, 60.0)
    watcher.stop()
    epoch_claimed = database.scalar(
        bench.db, "SELECT acquired_at FROM scheduler_leader WHERE id = 1"
    )
    bench.stack.stop_schedulers()
    result: dict[str, Any] = {"first_fire_s": None, "leader_s": None}
    if arrived:
        result["first_fire_s"] = round(watcher.arrivals[0].at - service.started_at, 3)
    if isinstance(epoch_claimed, datetime):
        result["leader_s"] = round(epoch_claimed.timestamp() - service.started_at, 3)
    logger.info("start %d: %s", index, result)
    return result


def measure_failover(bench: Bench) -> dict[str, Any]:
    """SIGKILL the leader while a standby runs; time until the standby's first message."""
    queue = bench.queue("failover")
    spacing = timedelta(milliseconds=100)
    database.seed_schedules(
        bench.db,
        prefix="failover-",
        count=10,
        first=utc(time.time() + 2),
        step=spacing,
        period_seconds=1,
        queue=queue,
    )
    watcher = broker.QueueWatcher(bench.broker_url, [queue]).start()
    bench.stack.stop_schedulers()
    leader = bench.start_leader("failover-0")
    runs = []
    for index in range(bench.sizes.failover_repeats):
        standby = bench.stack.start_scheduler(f"failover-{index + 1}")
        time.sleep(3.0)
        runs.append(_one_failover(bench, watcher, leader))
        bench.stack.schedulers.remove(leader)
        leader = standby
    watcher.stop()
    bench.stack.stop_schedulers()
    database.execute(bench.db, "DELETE FROM schedules WHERE name LIKE 'failover-%'")
    broker.delete_keys(bench.broker_url, queue)
    takeover = [run["first_fire_s"] for run in runs if run["first_fire_s"] is not None]
    return {"runs": runs, "max_first_fire_s": max(takeover) if takeover else None}


def _one_failover(bench: Bench, watcher: broker.QueueWatcher, leader: Any) -> dict[str, Any]:
    old_epoch = database.leader(bench.db)[0]
    killed_at = leader.kill()
    try:
        wait_until(lambda: database.leader(bench.db)[0] > old_epoch, "a new leader", 30.0, 0.02)
        new_epoch = database.leader(bench.db)[0]
        wait_until(
            lambda: _first_arrival_of(bench, watcher, new_epoch, killed_at),
            "the new leader's first fire",
            30.0,
            0.05,
        )
    except TimeoutError as error:
        return {"first_fire_s": None, "error": str(error)}
    first = _first_arrival_of(bench, watcher, new_epoch, killed_at)
    assert first is not None
    return {
        "first_fire_s": round(first - killed_at, 3),
        "old_epoch": old_epoch,
        "new_epoch": new_epoch,
    }


def _first_arrival_of(
    bench: Bench, watcher: broker.QueueWatcher, epoch: int, after: float
) -> float | None:
    arrivals = [arrival for arrival in list(watcher.arrivals) if arrival.at >= after]
    if not arrivals:
        return None
    epochs = {row[0]: row[3] for row in database.fire_rows(bench.db) if row[3] == epoch}
    for arrival in arrivals:
        if arrival.task_id in epochs:
            return arrival.at
    return None


def _schedule_count(bench: Bench) -> int:
    return database.count(bench.db, "SELECT count(*) FROM schedules")
