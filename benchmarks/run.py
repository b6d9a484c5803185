"""Run every service benchmark against real PostgreSQL, Redis, brain and scheduler processes.

    python -m benchmarks.run [--quick] [--output FILE] [--profile DIR] [--only NAMES]

The run drops and re-creates its own database (``z4j_bench`` by default),
uses Redis database 6 and deletes only the keys it created there. It prints
the table of figures and writes every raw number as JSON. A full run takes
about 15 minutes on 2 cores, ``--quick`` (smaller counts) about 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import beat, broker, database, fires, footprint, report, rest
from benchmarks.context import FULL, PREFIX, QUICK, Bench
from benchmarks.services import make_stack

logger = logging.getLogger("benchmarks")

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/z4j_bench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/6"
SCENARIOS = (
    "rest_create",
    "history",
    "idle",
    "start",
    "failover",
    "rss",
    "lateness",
    "burst",
    "beat",
)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="smaller counts and windows, about 3 minutes"
    )
    parser.add_argument(
        "--output", type=Path, help="JSON results file (default benchmarks/results[-quick].json)"
    )
    parser.add_argument(
        "--profile", type=Path, help="directory for py-spy profiles of the burst and lateness runs"
    )
    parser.add_argument(
        "--only", help=f"comma-separated scenarios to run, from: {', '.join(SCENARIOS)}"
    )
    parser.add_argument(
        "--database-url", default=DEFAULT_DATABASE_URL, help="PostgreSQL database to re-create"
    )
    parser.add_argument(
        "--broker-url", default=DEFAULT_BROKER_URL, help="Redis database for the Celery broker"
    )
    return parser.parse_args(argv)


def selected(only: str | None) -> list[str]:
    if only is None:
        return list(SCENARIOS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        raise SystemExit(
            f"unknown scenario(s) {', '.join(unknown)}; use any of {', '.join(SCENARIOS)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    names = selected(args.only)
    sizes = QUICK if args.quick else FULL
    workdir = Path(tempfile.mkdtemp(prefix="z4j-bench-"))
    logger.info("work directory %s; process logs are kept there", workdir)
    db = database.recreate(args.database_url)
    broker.delete_keys(args.broker_url, PREFIX)
    stack = make_stack(workdir, args.database_url, args.broker_url)
    bench = Bench(sizes, stack, db, args.broker_url, args.profile)
    started = time.monotonic()
    try:
        stack.start_brain()
        _run_service_scenarios(bench, names)
    finally:
        stack.stop()
    if "beat" in names:
        _run(
            "beat",
            bench,
            lambda: beat.measure_beat(bench, lead_time=30.0 if not args.quick else 15.0),
        )
    return _finish(bench, args, time.monotonic() - started)


def _run_service_scenarios(bench: Bench, names: list[str]) -> None:
    steps: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("rest_create", lambda: rest.measure_create(bench)),
        ("history", lambda: rest.measure_history(bench)),
        ("idle", lambda: footprint.measure_idle(bench)),
        ("start", lambda: fires.measure_start(bench)),
        ("failover", lambda: fires.measure_failover(bench)),
        ("rss", lambda: footprint.measure_rss_large(bench, bench.results["idle"])),
        ("lateness", lambda: _with_leader(bench, fires.measure_lateness)),
        ("burst", lambda: _with_leader(bench, fires.measure_burst)),
    ]
    for name, step in steps:
        if name in names:
            _run(name, bench, step)


def _with_leader(bench: Bench, measure: Callable[[Bench], dict[str, Any]]) -> dict[str, Any]:
    if not any(service.running() for service in bench.stack.schedulers):
        bench.stack.stop_schedulers()
        bench.start_leader("fire")
    return measure(bench)


def _run(name: str, bench: Bench, step: Callable[[], dict[str, Any]]) -> None:
    logger.info("scenario %s: starting", name)
    started = time.monotonic()
    try:
        result = step()
    except Exception as error:  # a failed scenario is reported and the others still run
        logger.exception("scenario %s failed", name)
        result = {"error": f"{type(error).__name__}: {error}"}
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    bench.results[name] = result
    logger.info("scenario %s: %s", name, json.dumps(result)[:2000])


def _finish(bench: Bench, args: argparse.Namespace, elapsed: float) -> int:
    table = report.rows(bench.results)
    document = {
        "environment": report.environment(bench.db.engine, args.broker_url, args.quick),
        "elapsed_s": round(elapsed, 1),
        "sizes": vars(bench.sizes),
        "table": [vars(row) for row in table],
        "results": bench.results,
    }
    output = args.output or Path(__file__).with_name(
        "results-quick.json" if args.quick else "results.json"
    )
    output.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print(report.format_table(table))
    print(f"\nresults written to {output}; run took {elapsed:.0f} s")
    bench.db.engine.dispose()
    return 0 if all(row.met is not False for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
