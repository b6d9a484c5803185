"""Turn the raw results into the table of figures, targets and verdicts."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, text

# Largest growth of the scheduler's resident memory, from the small to the
# large schedule count, that still counts as flat.
FLAT_RSS_GROWTH = 0.10


@dataclass(frozen=True)
class Row:
    figure: str
    measured: str
    target: str
    met: bool | None


def environment(engine: Engine, broker_url: str, quick: bool) -> dict[str, Any]:
    """Describe the machine and the servers the run used."""
    with engine.connect() as connection:
        postgres = connection.execute(text("SHOW server_version")).scalar()
    client = redis.Redis.from_url(broker_url)
    try:
        info: Any = client.info("server")
        redis_version = info["redis_version"]
    finally:
        client.close()
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": round(_memory_kib() / 1024 / 1024, 1),
        "postgresql": postgres,
        "redis": redis_version,
        "python": platform.python_version(),
        "commit": _commit(),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _memory_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


def _commit() -> str:
    result = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or "unknown"


def rows(results: dict[str, Any]) -> list[Row]:
    """Build one row per figure; a figure whose scenario failed shows its error."""
    builders = (
        ("lateness", _lateness),
        ("burst", _burst),
        ("idle", _idle),
        ("rss", _rss),
        ("start", _start),
        ("failover", _failover),
        ("burst", _storm_cpu),
        ("rest_create", _rest_create),
        ("history", _history),
        ("beat", _beat),
    )
    table = []
    for key, build in builders:
        value = results.get(key)
        if value is None:
            continue
        if "error" in value:
            table.append(Row(key, f"failed: {value['error'][:80]}", "", False))
            continue
        table.append(build(value, results))
    return table


def _lateness(value: dict[str, Any], _results: dict[str, Any]) -> Row:
    broker = value["broker"] or {}
    dispatched = value["dispatched_at"] or {}
    measured = (
        f"on broker min {broker.get('min_ms')} / p50 {broker.get('p50_ms')} /"
        f" p99 {broker.get('p99_ms')} ms (dispatched_at p99 {dispatched.get('p99_ms')} ms),"
        f" {value['messages']}/{value['schedules']} fires"
    )
    # A message on the broker before its slot is a defect, not a good figure.
    early = broker.get("min_ms", 0.0) < 0
    met = bool(broker) and value["complete"] and not early and broker["p99_ms"] <= 10.0
    return Row(
        f"lateness, {value['schedules']:,} schedules over {value['period_s']} s",
        measured,
        "p99 <= 10 ms",
        met,
    )


def _burst(value: dict[str, Any], _results: dict[str, Any]) -> Row:
    worst = value["max_all_on_broker_s"]
    runs = ", ".join(str(run["all_on_broker_s"]) for run in value["runs"])
    measured = f"median {value['median_all_on_broker_s']} s, max {worst} s (runs: {runs})"
    met = (
        worst is not None
        and worst <= 2.0
        and all(run["messages"] == value["schedules"] for run in value["runs"])
    )
    return Row(
        f"{value['schedules']:,} slots due at one instant, all on broker", measured, "<= 2 s", met
    )


def _idle(value: dict[str, Any], _results: dict[str, Any]) -> Row:
    measured = (
        f"{value['total_percent']} % (brain {value['brain_percent']} %, "
        f"scheduler {value['scheduler_percent']} %)"
    )
    reconcile = value.get("reconcile_pass", {})
    if reconcile.get("finished"):
        measured += (
            f"; measured after the start-up reconcile pass, which took {reconcile['seconds']} s "
            f"and {reconcile['scheduler_cpu_s']} s of scheduler CPU"
        )
    return Row(
        f"idle CPU, {value['schedules']:,} schedules, {value['window_s']} s",
        measured,
        "<= 0.5 % of one core",
        value["total_percent"] <= 0.5,
    )


def _rss(value: dict[str, Any], _results: dict[str, Any]) -> Row:
    small, large = value["small_rss_kib"], value["large_rss_kib"]
    growth = (large - small) / small
    measured = (
        f"{small / 1024:.1f} MiB at {value['small_schedules']:,}, {large / 1024:.1f} MiB at "
        f"{value['large_schedules']:,} ({growth:+.1%})"
    )
    return Row(
        "scheduler RSS",
        measured,
        f"flat (growth <= {FLAT_RSS_GROWTH:.0%})",
        growth <= FLAT_RSS_GROWTH,
    )


def _start(value: dict[str, Any], _results: dict[str, Any]) -> Row:
    worst = value["max_first_fire_s"]
    leader = ", ".join(str(run["leader_s"]) for run in value["runs"])
    measured = f"median {value['median_first_fire_s']} s, max {worst} s (leader after {leader} s)"
    return Row(
        f"start of serve to first fire, {value['schedules']:,} schedules",
        measured,
        "<= 1 s",
        worst is not None and worst <= 1.0,
    )


def _failover(value: dict[str, Any], _results: dict[str, Any]) -> Row:
    worst = value["max_first_fire_s"]
    runs = ", ".join(str(run["first_fire_s"]) for run in value["runs"])
    return Row(
        "leader SIGKILL to new leader's first fire",
        f"max {worst} s (runs: {runs})",
        "<= 2 s",
        worst is not None and worst <= 2.0,
    )


def _storm_cpu(value: dict[str, Any], _results: dict[str, Any]) -> Row:
    cpu = value["median_cpu_per_fire_ms"]
    return Row("CPU per fire in the burst, scheduler + brain", f"{cpu} ms", "<= 0.5 ms", cpu <= 0.5)


def _rest_create(value: dict[str, Any], _results: dict[str, Any]) -> Row:
    bulk, single = value["bulk"], value["single"]
    if "error" in bulk:
        return Row(
            "REST create", f"bulk failed: {bulk['error'][:80]}", ">= 5,000 schedules/s", False
        )
    measured = (
        f"{bulk['per_second']:,}/s bulk ({bulk['schedules']:,} in {bulk['seconds']} s, "
        f"{bulk['chunk']:,} per request); {single.get('per_second', '-')}/s one per request"
    )
    return Row(
        f"REST create {bulk['schedules']:,} schedules",
        measured,
        ">= 5,000 schedules/s",
        bulk["per_second"] >= 5000,
    )


def _history(value: dict[str, Any], _results: dict[str, Any]) -> Row:
    kinds = ("newest_page", "page_before_middle", "failed_only", "walk_pages")
    parts = []
    worst = 0.0
    for kind in kinds:
        item = value.get(kind, {})
        if "p99_ms" in item:
            parts.append(f"{kind} p50 {item['p50_ms']} / p99 {item['p99_ms']} ms")
            worst = max(worst, item["p99_ms"])
        else:
            parts.append(f"{kind} {item.get('error', 'missing')}")
            worst = float("inf")
    return Row(
        f"REST fire history page, {value['fires']:,} fires",
        "; ".join(parts),
        "p99 <= 50 ms",
        worst <= 50.0,
    )


def _beat(value: dict[str, Any], results: dict[str, Any]) -> Row:
    beat_seconds = value.get("all_on_broker_s", value.get("estimated_all_on_broker_s"))
    burst = results.get("burst", {})
    ours = burst.get("median_all_on_broker_s")
    measured = f"{beat_seconds} s{' (estimate)' if not value['complete'] else ''} for {value['entries']:,} entries"
    if ours and burst.get("schedules") == value["entries"]:
        measured += f"; z4j {ours} s, {beat_seconds / ours:.0f}x faster"
    measured += f"; beat idle {value['idle']['percent']} %"
    return Row("yardstick: celery beat burst", measured, "-", None)


def format_table(table: list[Row]) -> str:
    lines = ["| figure | measured | target | met |", "|---|---|---|---|"]
    for row in table:
        verdict = "-" if row.met is None else ("yes" if row.met else "NO")
        lines.append(f"| {row.figure} | {row.measured} | {row.target} | {verdict} |")
    return "\n".join(lines)
