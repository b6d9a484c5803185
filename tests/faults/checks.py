"""Per-slot counts of a burst: fire history rows and broker messages."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import OperationalError

from tests.faults.stack import Burst, Delivery, FaultStack
from z4j_scheduler.wire.messages import slot_fire_id

# Seconds after a burst's last slot within which every fire must be recorded
# and dispatched; generous because a 2-core machine running other tests is slow.
SETTLE_SECONDS = 90.0


def poll_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Return True once ``predicate`` is true, False when ``timeout`` seconds pass first.

    A database error counts as false, so the poll spans a PostgreSQL restart.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return True
        except OperationalError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def settle(
    stack: FaultStack, burst: Burst, on_poll: Callable[[], object] = lambda: None
) -> Delivery:
    """Wait until every slot of ``burst`` is dispatched or the deadline passes; return the outcome.

    ``on_poll`` runs before every check, for example to restart a process.
    """
    remaining = (burst.last_slot - datetime.now(UTC)).total_seconds()

    def dispatched() -> bool:
        on_poll()
        return stack.dispatched_count() >= len(burst)

    poll_until(dispatched, max(remaining, 0.0) + SETTLE_SECONDS)
    return stack.delivery()


def assert_each_slot_once(
    stack: FaultStack, burst: Burst, on_poll: Callable[[], object] = lambda: None
) -> Delivery:
    """Assert every slot fired exactly once in history, was dispatched and reached the broker."""
    delivery = settle(stack, burst, on_poll)
    expected = burst.fire_ids
    missing = sorted(
        schedule_id for schedule_id in burst.slots if schedule_id not in delivery.history
    )
    doubled = {sid: ids for sid, ids in delivery.history.items() if len(ids) > 1}
    wrong_id = sorted(
        sid
        for sid, ids in delivery.history.items()
        if sid in burst.slots and ids[0] != slot_fire_id(sid, burst.slots[sid])
    )
    wrong_slot = sorted(
        fire_id
        for fire_id, (scheduled_for, _, _) in delivery.rows.items()
        if fire_id in expected and scheduled_for != burst.slots[expected[fire_id]]
    )
    undispatched = sorted(
        fire_id for fire_id, (_, _, status) in delivery.rows.items() if status != "dispatched"
    )
    not_on_broker = sorted(fire_id for fire_id in expected if delivery.messages[fire_id] == 0)
    unknown_messages = sorted(task_id for task_id in delivery.messages if task_id not in expected)
    context = f"\n{stack.logs()}"
    assert missing == [], f"{len(missing)} slots never fired, first {missing[:10]}{context}"
    assert doubled == {}, f"{len(doubled)} slots fired more than once: {list(doubled.items())[:5]}"
    assert wrong_id == [], f"fires with an id other than the slot's: {wrong_id[:10]}"
    assert wrong_slot == [], f"fires recorded for another instant: {wrong_slot[:10]}"
    assert undispatched == [], (
        f"{len(undispatched)} fires not dispatched: {undispatched[:10]}{context}"
    )
    assert not_on_broker == [], (
        f"{len(not_on_broker)} fires missing on the broker: {not_on_broker[:10]}"
    )
    assert unknown_messages == [], f"broker messages of no fire: {unknown_messages[:10]}"
    return delivery


def takeover_seconds(signalled_at: datetime, acquired_at: datetime | None) -> float:
    """Return the seconds from a signal to the new leader's epoch claim.

    Both instants come from this host's clock.
    """
    assert acquired_at is not None, "the leader row has no acquired_at"
    return (acquired_at - signalled_at) / timedelta(seconds=1)


def report(name: str, **figures: object) -> None:
    """Print measured figures; run pytest with -s (or -rA) to see them."""
    print(f"\n[{name}] " + " ".join(f"{key}={value}" for key, value in figures.items()))
