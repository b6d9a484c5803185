"""Outages: the brain killed and PostgreSQL restarted under a burst, and an hour of downtime."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.faults.checks import assert_each_slot_once, poll_until, report
from tests.faults.stack import FaultStack
from z4j_scheduler.store import LeaderRecord

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

BURST_SLOTS = 3000
BURST_LEAD = 3.0
BURST_SPREAD = 15.0
POSTGRES_CLUSTERS = Path("/etc/postgresql")
POSTGRES_PORT = 5432
POSTGRES_TIMEOUT = 120.0


def test_brain_sigkill_and_restart(stack: FaultStack) -> None:
    stack.start_brain()
    stack.start_schedulers(["s1", "s2"])
    stack.wait_for_leader()
    burst = stack.create_burst(BURST_SLOTS, lead=BURST_LEAD, spread=BURST_SPREAD)
    stack.wait_for(lambda: stack.fire_count() >= 0.4 * len(burst), "40% of the burst fired")
    assert stack.brain is not None
    stack.brain.kill()
    recorded_while_down = stack.fire_count()
    stack.start_brain()
    delivery = assert_each_slot_once(stack, burst)
    assert recorded_while_down < len(burst)
    report(
        "brain sigkill",
        slots=len(burst),
        recorded_before_restart=recorded_while_down,
        resent=delivery.resent,
    )


def postgres_accepts_connections() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", POSTGRES_PORT), timeout=2):
            return True
    except OSError:
        return False


def pg_ctlcluster(action: str) -> None:
    versions = sorted(os.listdir(POSTGRES_CLUSTERS))
    assert versions, f"no PostgreSQL cluster under {POSTGRES_CLUSTERS}"
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", action]
    result = subprocess.run(command, capture_output=True, text=True, timeout=POSTGRES_TIMEOUT)
    assert result.returncode == 0, f"{' '.join(command)} failed: {result.stderr}"


@pytest.fixture
def postgres_left_running() -> Iterator[None]:
    """Start PostgreSQL again after the test if it is not accepting connections, even on failure."""
    try:
        yield
    finally:
        if not poll_until(postgres_accepts_connections, 30.0):
            pg_ctlcluster("start")
        assert poll_until(postgres_accepts_connections, POSTGRES_TIMEOUT), (
            "PostgreSQL did not come back"
        )


def test_postgres_restart(stack: FaultStack, postgres_left_running: None) -> None:
    stack.start_brain()
    stack.start_schedulers(["s1", "s2"])
    before = stack.wait_for_leader()
    burst = stack.create_burst(BURST_SLOTS, lead=BURST_LEAD, spread=BURST_SPREAD)
    stack.wait_for(lambda: stack.fire_count() >= 0.3 * len(burst), "30% of the burst fired")
    pg_ctlcluster("restart")

    def new_leader() -> LeaderRecord | None:
        stack.restart_brain_if_down()
        return stack.leader_after(before.epoch)

    after = stack.wait_for(new_leader, "a leader with a new epoch after the restart")
    delivery = assert_each_slot_once(stack, burst, on_poll=stack.restart_brain_if_down)
    leader_log = stack.schedulers[str(before.leader_id)].log_tail()
    assert f"leader lost: instance {before.leader_id} epoch {before.epoch}" in leader_log
    report(
        "postgres restart",
        slots=len(burst),
        resent=delivery.resent,
        epochs=f"{before.epoch}->{after.epoch}",
        new_leader=after.leader_id,
        brain_restarts=stack.brain_restarts,
    )
    # The brain rides out the restart by itself; the harness restarts it only
    # to finish counting when it did not.
    assert stack.brain_restarts == [], f"the brain had to be restarted: {stack.brain_restarts}"


MINUTE = timedelta(minutes=1)
POLICIES = ("skip", "fire_one_missed", "fire_all_missed")


def minute_floor(instant: datetime) -> datetime:
    return instant.replace(second=0, microsecond=0)


def test_hour_outage_each_policy(stack: FaultStack) -> None:
    stack.start_brain()
    stack.start_scheduler("s1")
    stack.wait_for_leader()
    # Cursors a few minutes ahead, so nothing fires before the outage.
    ahead = minute_floor(datetime.now(UTC)) + 5 * MINUTE
    rows = [
        {
            "name": f"every-minute-{policy}",
            "kind": "cron",
            "expression": "* * * * *",
            "catch_up": policy,
            "next_run_at": ahead,
        }
        for policy in POLICIES
    ]
    ids = dict(zip(POLICIES, stack.create_schedules(rows), strict=True))

    # The whole stack goes down; an hour passes, which moving every cursor
    # to an hour before now simulates; then the stack comes back.
    assert stack.schedulers["s1"].terminate() == 0
    assert stack.brain is not None
    # uvicorn re-raises SIGTERM after its graceful shutdown.
    assert stack.brain.terminate() in (0, -15)
    assert stack.fire_count() == 0
    cursor = minute_floor(datetime.now(UTC)) - timedelta(hours=1)
    stack.set_cursors(list(ids.values()), cursor)
    restarted_at = datetime.now(UTC)
    stack.start_brain()
    stack.start_scheduler("s1")
    stack.wait_for(
        lambda: all(stack.schedule(sid).next_run_at > restarted_at for sid in ids.values()),
        "every cursor to move past the restart",
    )
    stack.wait_for(lambda: stack.dispatched_count() == stack.fire_count(), "every fire dispatched")
    seen_at = datetime.now(UTC)
    grace = timedelta(seconds=stack.grace_seconds)
    fires = {policy: stack.fires_of([sid]) for policy, sid in ids.items()}
    messages = stack.broker_task_ids()

    for policy, sid in ids.items():
        slots = [fire.scheduled_for for fire in fires[policy]]
        assert len(slots) == len(set(slots)), f"{policy}: a slot fired twice: {slots}"
        assert all(slot == minute_floor(slot) and cursor <= slot <= seen_at for slot in slots), (
            slots
        )
        assert all(messages[fire.id] >= 1 for fire in fires[policy]), (
            f"{policy}: a fire missed the broker"
        )
        new_cursor = stack.schedule(sid).next_run_at
        assert new_cursor == minute_floor(new_cursor)
        assert restarted_at < new_cursor <= seen_at + MINUTE

    skip = fires["skip"]
    assert [fire.trigger for fire in skip if fire.trigger != "schedule"] == []
    assert all(fire.scheduled_for >= restarted_at - grace for fire in skip)

    one_missed = fires["fire_one_missed"]
    caught_up = [fire for fire in one_missed if fire.trigger == "catch_up"]
    assert len(caught_up) == 1
    assert restarted_at - grace - MINUTE <= caught_up[0].scheduled_for < seen_at - grace
    assert all(
        fire.scheduled_for > caught_up[0].scheduled_for
        for fire in one_missed
        if fire.trigger == "schedule"
    )

    all_missed = fires["fire_all_missed"]
    slots = [fire.scheduled_for for fire in all_missed]
    assert slots == [cursor + index * MINUTE for index in range(len(slots))], (
        "missed slots are not contiguous"
    )
    triggers = [fire.trigger for fire in all_missed]
    catch_up_count = triggers.count("catch_up")
    assert triggers == ["catch_up"] * catch_up_count + ["schedule"] * (
        len(triggers) - catch_up_count
    )
    assert slots[-1] >= restarted_at - MINUTE
    assert catch_up_count >= (restarted_at - grace - cursor) // MINUTE - 1
    report(
        "hour outage",
        **{policy: len(fires[policy]) for policy in POLICIES},
        caught_up=catch_up_count,
    )
