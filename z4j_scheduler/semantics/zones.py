"""Validation of IANA time zone names.

A schedule's zone must be a key of the zone database that ``zoneinfo`` loads,
written as ``Area/Location`` (``Europe/Berlin``, ``Etc/GMT+5``) or exactly
``UTC``. The database also ships legacy keys without a slash (``EST``,
``MST7MDT``, ``GB``, ``localtime``). They are rejected because they read as
abbreviations or name no place, and the Area/Location name means the same
rules. Offsets such as ``+02:00`` are not keys and are rejected too.
"""

from __future__ import annotations

import functools
import zoneinfo
from datetime import datetime
from zoneinfo import ZoneInfo

from z4j_scheduler.errors import ScheduleError

_FIXED_OFFSET_PREFIX = "Etc/"


@functools.cache
def _known_keys() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def parse_zone(name: str) -> ZoneInfo:
    """Return the ZoneInfo for an IANA name, raising ScheduleError(field="timezone")."""
    if name != "UTC" and "/" not in name:
        raise ScheduleError(
            "timezone", name, "use an IANA Area/Location name such as Europe/Berlin, or UTC"
        )
    if name not in _known_keys():
        raise ScheduleError(
            "timezone", name, "unknown time zone; use an IANA name such as America/New_York"
        )
    try:
        return ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise ScheduleError(
            "timezone", name, f"the zone database cannot load it: {error}"
        ) from error


def is_fixed_offset(zone: ZoneInfo) -> bool:
    """Return whether ``zone`` never changes its UTC offset (``UTC`` and ``Etc/*``)."""
    return zone.key == "UTC" or zone.key.startswith(_FIXED_OFFSET_PREFIX)


def is_repeated_wall_time(local: datetime) -> bool:
    """Return whether the wall time of aware ``local`` occurs twice in its zone."""
    other = local.replace(fold=1 - local.fold)
    return other.utcoffset() != local.utcoffset()
