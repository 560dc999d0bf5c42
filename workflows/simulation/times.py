"""Reading and showing the times of a scenario: durations, zoned times, short local stamps."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_ZONE_NAME = re.compile(r"[A-Za-z][\w+-]*(?:/[\w+-]+)*")
_TIME_OF_DAY = re.compile(r"\d[T ]\d\d?:\d\d")
_DURATION = re.compile(r"(?:(\d+)\s*w)?\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?", re.I)


def parse_duration(value: object) -> timedelta:
    """``"3h"``, ``"1d 4h"``, ``"90m"``, ``"2w"`` → timedelta (calendar time); ValueError otherwise."""
    match = _DURATION.fullmatch(str(value).strip()) if isinstance(value, str) else None
    if match is None or not any(match.groups()):
        raise ValueError(f"expected a duration such as 3h, 90m, 1d 4h or 2w, got {value!r}")
    weeks, days, hours, minutes = (int(g or 0) for g in match.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes)


def parse_time(value: object) -> datetime:
    """``2026-03-06T16:30 Europe/Prague``, ISO with an offset (aware), or plain ISO (naive)."""
    text = value.strip() if isinstance(value, str) else ""
    stamp, zone_name = text, ""
    head, space, tail = text.rpartition(" ")
    if space and _ZONE_NAME.fullmatch(tail):
        stamp, zone_name = head.strip(), tail
    try:
        if not _TIME_OF_DAY.search(stamp):
            raise ValueError
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        raise ValueError(
            f"expected a time such as 2026-03-06T16:30 Europe/Prague or 2026-03-06T16:30+01:00, got {value!r}"
        ) from None
    if not zone_name:
        return moment
    if moment.tzinfo is not None:
        raise ValueError(f"{value!r} has both a UTC offset and a time zone; give one of them")
    try:
        return moment.replace(tzinfo=ZoneInfo(zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone_name!r} in {value!r}") from None


def aware(moment: datetime, zone: tzinfo) -> datetime:
    """``moment`` in UTC; a naive one is read as a wall-clock time in ``zone``."""
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)).astimezone(UTC)


def short(moment: datetime, zone: tzinfo | None = None) -> str:
    """``Fri 06 Mar 16:30``: ``moment`` on the wall clock of ``zone`` (default: its own)."""
    return (moment if zone is None else moment.astimezone(zone)).strftime("%a %d %b %H:%M")
