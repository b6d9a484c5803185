"""Prometheus metrics of the brain process."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

FIRES_RECORDED = Counter(
    "z4j_fires_recorded_total", "Fires recorded, by trigger.", ["trigger"], registry=REGISTRY
)
FIRES_DISPATCHED = Counter(
    "z4j_fires_dispatch_total",
    "Dispatch attempts, by engine and result (dispatched, retry, failed).",
    ["engine", "result"],
    registry=REGISTRY,
)
DISPATCH_SECONDS = Histogram(
    "z4j_dispatch_seconds",
    "Time to hand a batch of fires to one engine's broker.",
    ["engine"],
    registry=REGISTRY,
)
FIRE_LATENESS_SECONDS = Histogram(
    "z4j_fire_lateness_seconds",
    "Time from a slot's instant until its message reached the broker.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
OUTBOX_PENDING = Gauge(
    "z4j_outbox_pending", "Fires waiting for dispatch or a retry.", registry=REGISTRY
)
SCHEDULER_CHILD_UP = Gauge(
    "z4j_scheduler_child_up",
    "1 while the embedded scheduler child runs, 0 otherwise.",
    registry=REGISTRY,
)
LEADER_EPOCH = Gauge(
    "z4j_leader_epoch", "The fencing epoch of the current scheduler leader.", registry=REGISTRY
)
