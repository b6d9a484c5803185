"""Prometheus metrics of the scheduler process, served on its own ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

LEADER = Gauge(
    "z4j_scheduler_leader", "1 while this instance leads, 0 while it follows.", registry=REGISTRY
)
EPOCH = Gauge(
    "z4j_scheduler_epoch",
    "Fencing epoch this instance holds as leader; 0 while it follows.",
    registry=REGISTRY,
)
LEADERSHIP_CHANGES = Counter(
    "z4j_scheduler_leadership_changes_total",
    "Leadership gained and lost by this instance, by event (gained, lost).",
    ["event"],
    registry=REGISTRY,
)
DUE_BACKLOG = Gauge(
    "z4j_scheduler_due_backlog",
    "Enabled schedules whose cursor is due, read when /readyz or /metrics is requested.",
    registry=REGISTRY,
)
FIRES = Counter(
    "z4j_scheduler_fires_total",
    "Fires sent to the brain, by the brain's outcome (accepted, duplicate, stale_revision, "
    "not_found, disabled).",
    ["outcome"],
    registry=REGISTRY,
)
STALE_FRAMES = Counter(
    "z4j_scheduler_stale_epoch_frames_total",
    "Frames the brain rejected because a newer leader's epoch exists.",
    registry=REGISTRY,
)
DEGRADED = Counter(
    "z4j_scheduler_degraded_total",
    "Ticks that failed and were retried, by reason (brain_unavailable, database_unavailable).",
    ["reason"],
    registry=REGISTRY,
)
TICK_SECONDS = Histogram(
    "z4j_scheduler_tick_seconds",
    "Time of one leader tick: read due rows, plan, send the frames.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RECONCILE_CHECKED = Counter(
    "z4j_scheduler_reconcile_checked_total",
    "Schedules whose cursor reconcile checked.",
    registry=REGISTRY,
)
RECONCILE_CORRECTIONS = Counter(
    "z4j_scheduler_reconcile_corrections_total",
    "Cursors found wrong by reconcile, by result (applied, rejected, backward_not_applied).",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_PASSES = Counter(
    "z4j_scheduler_reconcile_passes_total",
    "Completed reconcile passes over all enabled schedules.",
    registry=REGISTRY,
)
