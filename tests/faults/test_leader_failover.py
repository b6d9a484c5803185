"""Leader failover under a burst: SIGKILL of the leader, and a rolling restart with SIGTERM."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial

import pytest

from tests.faults.checks import assert_each_slot_once, report, takeover_seconds
from tests.faults.stack import FaultStack

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

INSTANCES = ["s1", "s2", "s3"]
BURST_SLOTS = 3000
# Seconds the first slot lies ahead when the burst is created, and the span of all slots.
BURST_LEAD = 3.0
BURST_SPREAD = 15.0
TAKEOVER_TIMEOUT = 30.0


def fired_at_least(stack: FaultStack, count: float) -> bool:
    return stack.fire_count() >= count


def start_cluster(stack: FaultStack) -> str:
    """Start the brain and three schedulers, s1 first so it leads; return the leader's name."""
    stack.start_brain()
    stack.start_scheduler("s1")
    leader = stack.wait_for_leader()
    stack.start_schedulers(INSTANCES[1:])
    for name in INSTANCES[1:]:
        stack.wait_for(partial(stack.is_ready, name), f"follower {name} to be ready")
    assert leader.leader_id == "s1"
    return "s1"


def test_leader_sigkill_three_times(stack: FaultStack) -> None:
    start_cluster(stack)
    burst = stack.create_burst(BURST_SLOTS, lead=BURST_LEAD, spread=BURST_SPREAD)
    takeovers = []
    for fraction in (0.2, 0.45, 0.7):
        stack.wait_for(
            partial(fired_at_least, stack, fraction * len(burst)),
            f"{fraction:.0%} of the burst fired",
        )
        before = stack.leader()
        victim = stack.schedulers[str(before.leader_id)]
        killed_at = datetime.now(UTC)
        victim.kill()
        after = stack.wait_for_leader(before.epoch, TAKEOVER_TIMEOUT)
        takeovers.append(takeover_seconds(killed_at, after.acquired_at))
        assert after.leader_id != before.leader_id
        stack.start_scheduler_nowait(victim.name)
    delivery = assert_each_slot_once(stack, burst)
    assert stack.leader().epoch >= 4
    report(
        "sigkill",
        slots=len(burst),
        resent=delivery.resent,
        takeover_seconds=[round(seconds, 3) for seconds in takeovers],
    )


def test_rolling_restart_sigterm(stack: FaultStack) -> None:
    start_cluster(stack)
    burst = stack.create_burst(BURST_SLOTS, lead=BURST_LEAD, spread=BURST_SPREAD + 5)
    remaining = list(INSTANCES)
    takeovers, exits = [], []
    stack.wait_for(lambda: stack.fire_count() >= 0.1 * len(burst), "the burst to start firing")
    while remaining:
        before = stack.leader()
        name = str(before.leader_id) if before.leader_id in remaining else remaining[0]
        remaining.remove(name)
        process = stack.schedulers[name]
        signalled_at = datetime.now(UTC)
        status = process.terminate()
        exits.append(round((datetime.now(UTC) - signalled_at).total_seconds(), 3))
        assert status == 0, f"{name} exited with {status}\n{process.log_tail()}"
        if name == before.leader_id:
            after = stack.wait_for_leader(before.epoch, TAKEOVER_TIMEOUT)
            takeovers.append(takeover_seconds(signalled_at, after.acquired_at))
            assert (
                f"leader lost: instance {name} epoch {before.epoch} (stopping)"
                in process.log_tail()
            )
        stack.start_scheduler(name)
        stack.wait_for(partial(stack.is_ready, name), f"restarted {name} to be ready")
    delivery = assert_each_slot_once(stack, burst)
    assert takeovers, "no instance was leading when it was stopped"
    report(
        "rolling restart",
        slots=len(burst),
        resent=delivery.resent,
        exit_seconds=exits,
        takeover_seconds=[round(seconds, 3) for seconds in takeovers],
    )
