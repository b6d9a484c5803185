"""Plain values carried by the fire protocol, independent of protobuf.

Both sides speak in these types; the gRPC layer converts them to and from the
generated protobuf messages at the boundary. All instants are aware UTC
datetimes with microsecond precision.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime


class Trigger(enum.StrEnum):
    SCHEDULE = "schedule"
    CATCH_UP = "catch_up"
    MANUAL = "manual"
    REPLAY = "replay"


class FireOutcome(enum.StrEnum):
    """The brain's outcome for one requested fire."""

    ACCEPTED = "accepted"  # recorded now
    DUPLICATE = "duplicate"  # the slot was already recorded; the first result is returned
    STALE_REVISION = "stale_revision"  # the schedule changed since it was planned
    NOT_FOUND = "not_found"  # the schedule was deleted
    DISABLED = "disabled"  # the schedule is disabled


@dataclass(frozen=True, slots=True)
class FireRequest:
    """One slot the leader wants fired, planned against ``revision``."""

    fire_id: str
    schedule_id: int
    scheduled_for: datetime
    trigger: Trigger
    revision: int
    # Cursor after this fire; None when the schedule has no further slot.
    next_cursor: datetime | None


@dataclass(frozen=True, slots=True)
class CursorAdvance:
    """Move a schedule's cursor without firing, for slots skipped by catch-up."""

    schedule_id: int
    revision: int
    next_cursor: datetime | None
    skipped: int


@dataclass(frozen=True, slots=True)
class FireResult:
    fire_id: str
    outcome: FireOutcome
    # Status of the stored fire row (pending, dispatched, failed), empty when none exists.
    status: str
    # The live schedule row, returned on STALE_REVISION so the leader can re-plan.
    live_revision: int | None = None
    live_next_run_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class AdvanceResult:
    schedule_id: int
    applied: bool
    live_revision: int | None = None
    live_next_run_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class FireBatchResult:
    """The brain's reply to one frame."""

    fires: tuple[FireResult, ...]
    advances: tuple[AdvanceResult, ...]
    # True when the frame's epoch is older than the stored one: nothing was written.
    stale_epoch: bool
    current_epoch: int


_FIRE_ID_NAMESPACE = uuid.UUID("5b0d1f0e-3c55-4c1e-9a43-0e6f4a7f2f10")


def slot_fire_id(schedule_id: int, scheduled_for: datetime) -> str:
    """Return the deterministic fire id of a schedule's slot.

    Schedule and catch-up fires of one slot share an id, so two requests for
    the same slot carry the same id and the brain's unique key rejects the
    second as a duplicate.
    """
    stamp = scheduled_for.isoformat(timespec="microseconds")
    return str(uuid.uuid5(_FIRE_ID_NAMESPACE, f"{schedule_id}/{stamp}"))


def manual_fire_id(schedule_id: int, requested_at: datetime, nonce: str) -> str:
    """Return the fire id of a manual or replay fire, which is never a slot."""
    digest = hashlib.sha256(f"{schedule_id}/{requested_at.isoformat()}/{nonce}".encode())
    return str(uuid.UUID(bytes=digest.digest()[:16], version=4))
