"""Business calendars: when the desk is open, so that SLA clocks count only working time.

Working hours are local wall-clock times in the calendar's zone, but business time is measured in
absolute (UTC) time: a 00:00-24:00 day lasts 23 h on a spring-forward Sunday and 25 h in autumn.
A boundary in a spring-forward gap is read with the offset in force before the gap (``fold=0``),
which moves it forward by the gap's length (02:30 becomes 03:30 CEST), so an interval such as
02:30-03:00 is empty that day. A wall time repeated in autumn means its first occurrence.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays as holidays_lib
import icalendar
from dateutil.rrule import rrulestr

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MIDNIGHT = time(0)  # as an interval's end: 24:00, the midnight that ends the day
ONE_DAY = timedelta(days=1)
#: add() gives up when the desk stays shut this long rather than walk days forever.
IDLE_LIMIT = timedelta(days=3 * 366)
DASH = "\N{EN DASH}"

Hours = tuple[tuple[tuple[time, time], ...], ...]
Span = tuple[datetime, datetime]


class HolidaySource(Protocol):
    """Whole local days on which the desk stays shut whatever its hours say."""

    def __contains__(self, day: date, /) -> bool: ...


@dataclass(frozen=True)
class BusinessCalendar:
    """Opening hours per weekday (Monday first) in one time zone, minus holidays.

    Each weekday holds sorted, non-overlapping ``(start, end)`` wall-clock intervals; an end of
    ``time(0)`` means 24:00. Construction raises ValueError for malformed hours or a desk never open.
    """

    name: str
    timezone: ZoneInfo
    hours: Hours
    holidays: HolidaySource

    def __post_init__(self) -> None:
        _check_hours(self.name, self.hours)
        # Open every hour of every day, with no holidays: business time is wall time. A fast
        # path for add/seconds_between (the inbox computes them for every row it shows).
        no_holidays = (
            isinstance(self.holidays, frozenset) and not self.holidays
        )  # (lazy sources are not empty)
        always = no_holidays and all(day == ((MIDNIGHT, MIDNIGHT),) for day in self.hours)
        object.__setattr__(self, "_always_open", always)

    def is_working_time(self, at: datetime) -> bool:
        """Whether the desk is open at the aware instant `at` (at opening yes, at closing no)."""
        at = _as_utc(at, "at")
        today = at.astimezone(self.timezone).date()
        return any(a <= at < b for day in (today - ONE_DAY, today) for a, b in self._day_spans(day))

    def add(self, start: datetime, seconds: float) -> datetime:
        """The UTC instant when `seconds` of business time have passed since the aware `start`.

        With 0 seconds: `start` itself if the desk is open then, else its next opening. A deadline
        that uses up an interval exactly falls on its closing time, not on the next opening. Raises
        ValueError for negative or non-finite seconds, or when the desk stays shut for three years.
        """
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"calendar {self.name!r}: cannot add {seconds!r} seconds")
        if self._always_open:  # type: ignore[attr-defined]
            return _as_utc(start, "start") + timedelta(seconds=seconds)
        remaining = timedelta(seconds=seconds)
        spans = self._open_spans(_as_utc(start, "start"))
        while True:
            a, b = next(spans)
            if remaining <= b - a:
                return a + remaining
            remaining -= b - a

    def seconds_between(self, start: datetime, end: datetime) -> int:
        """Whole business seconds in [start, end), 0 if end <= start; the inverse of add()."""
        start, end = _as_utc(start, "start"), _as_utc(end, "end")
        if self._always_open:  # type: ignore[attr-defined]
            return max(0, (end - start) // timedelta(seconds=1))
        total = timedelta()
        for a, b in self._open_spans(start, until=end):
            if a >= end:
                break
            total += min(b, end) - a
        return total // timedelta(seconds=1)

    def describe(self) -> str:
        """One line for the ticket timeline: name, zone, weekly hours and holidays."""
        hours, holidays = _describe_hours(self.hours), _describe_holidays(self.holidays)
        return f"{self.name} ({self.timezone.key}, {hours}, {holidays})"

    def _day_spans(self, day: date) -> list[Span]:
        """The UTC spans of one local day's intervals (none on holidays), in order."""
        if day in self.holidays:
            return []
        return [
            (self._instant(day, start), self._instant(day + ONE_DAY if end == MIDNIGHT else day, end))
            for start, end in self.hours[day.weekday()]
        ]

    def _instant(self, day: date, wall: time) -> datetime:
        # fold=0, the default: the module docstring's choice for skipped and repeated wall times.
        return datetime.combine(day, wall, tzinfo=self.timezone).astimezone(UTC)

    def _open_spans(self, start: datetime, until: datetime | None = None) -> Iterator[Span]:
        """Disjoint UTC spans in order, the first clipped to begin at `start`, a day at a time.

        Without `until` it goes on while the desk keeps opening and raises ValueError once it has
        stayed shut for IDLE_LIMIT, so no caller can loop forever.
        """
        # From the day before: where DST moves midnight, the previous date's last interval can still be open.
        day = start.astimezone(self.timezone).date() - ONE_DAY
        cursor = last_open = start
        while until is None or self._instant(day, MIDNIGHT) < until:
            for a, b in self._day_spans(day):
                a = max(a, cursor)  # also trims what a DST gap folded back onto an earlier span
                if a < b:
                    yield a, b
                    cursor = last_open = b
            day += ONE_DAY
            if until is None and self._instant(day, MIDNIGHT) - last_open > IDLE_LIMIT:
                raise ValueError(f"calendar {self.name!r} has no working time within 3 years after {start}")


@dataclass(frozen=True)
class Recurrence:
    """A recurring all-day closure of an iCal file: RRULE lines, first day, days per occurrence."""

    rules: str
    first: date
    length: int
    exdates: frozenset[date] = frozenset()

    def days_in(self, year: int) -> Iterator[date]:
        occurrences = rrulestr(self.rules, dtstart=datetime.combine(self.first, MIDNIGHT), forceset=True)
        since = datetime(year, 1, 1) - timedelta(days=self.length - 1)
        for when in occurrences.between(since, datetime(year, 12, 31, 23, 59), inc=True):
            if when.date() not in self.exdates:
                yield from (when.date() + timedelta(days=k) for k in range(self.length))


@dataclass(frozen=True)
class Closures:
    """A country's public holidays, an iCal file's all-day events and explicit dates.

    Country holidays and recurring events are expanded a year at a time on first use and cached;
    threads racing on a new year compute the same set twice, which is harmless.
    """

    label: str
    country: str | None = None
    subdiv: str | None = None
    dates: frozenset[date] = frozenset()
    recurrences: tuple[Recurrence, ...] = ()
    _years: dict[int, frozenset[date]] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __contains__(self, day: date, /) -> bool:
        if day in self.dates:
            return True
        if day.year not in self._years:
            self._years[day.year] = self._expand(day.year)
        return day in self._years[day.year]

    def _expand(self, year: int) -> frozenset[date]:
        days: set[date] = set()
        if self.country:  # the library itself lists observed days that cross New Year (US 2021-12-31)
            days.update(holidays_lib.country_holidays(self.country, subdiv=self.subdiv, years=year))
        for recurrence in self.recurrences:
            days.update(recurrence.days_in(year))
        return frozenset(days)


_INTERVAL = re.compile(r"(\d{1,2}):(\d\d)\s*[-\u2013]\s*(\d{1,2}):(\d\d)")


def calendar_from_spec(
    name: str, spec: Mapping[str, object], *, base_dir: Path | None = None
) -> BusinessCalendar:
    """Build a calendar from its YAML mapping: `timezone` and `hours` required, `holidays` optional.

    A relative `holidays.ical` path is read, now, from `base_dir` (the working directory if None).
    Raises ValueError naming the calendar and the offending key or value.
    """
    spec = _mapping(name, "", spec, ("timezone", "hours", "holidays"))
    for required in ("timezone", "hours"):
        if required not in spec:
            raise _bad(name, f"{required!r} is required")
    holidays = _closures(name, spec.get("holidays"), base_dir)
    return BusinessCalendar(name, _zone(name, spec["timezone"]), _hours(name, spec["hours"]), holidays)


def _bad(name: str, problem: str) -> ValueError:
    return ValueError(f"calendar {name!r}: {problem}")


def _mapping(name: str, where: str, value: object, known: tuple[str, ...]) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise _bad(name, f"{where}expected a mapping with keys {', '.join(known)}, got {value!r}")
    for key in value:
        if key not in known:
            raise _bad(name, f"{where}unknown key {key!r} (expected one of {', '.join(known)})")
    return value


def _as_utc(moment: datetime, what: str) -> datetime:
    if moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got {moment.isoformat()}")
    return moment.astimezone(UTC)


def _zone(name: str, value: object) -> ZoneInfo:
    if isinstance(value, str) and value:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe"
            return ZoneInfo(value)
    raise _bad(name, f"timezone: unknown time zone {value!r} (expected an IANA name like 'Europe/Prague')")


def _hours(name: str, value: object) -> Hours:
    days = _mapping(name, "hours: ", value, WEEKDAYS)
    return tuple(_day_hours(name, key, days.get(key)) for key in WEEKDAYS)


def _day_hours(name: str, key: str, value: object) -> tuple[tuple[time, time], ...]:
    if value is None or (isinstance(value, str) and value.strip().lower() == "closed"):
        return ()
    if not isinstance(value, str):
        raise _bad(name, f"hours.{key}: expected a string like '09:00-17:00' or 'closed', got {value!r}")
    intervals = []
    for part in (part.strip() for part in value.split(",")):
        match = _INTERVAL.fullmatch(part)
        h1, m1, h2, m2 = map(int, match.groups()) if match else (99, 0, 0, 0)
        if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
            raise _bad(name, f"hours.{key}: {part!r} is not an interval like '09:00-17:00'")
        intervals.append((time(h1, m1), time(h2 % 24, m2)))
    return tuple(sorted(intervals))


def _check_hours(name: str, hours: Hours) -> None:
    if len(hours) != 7:
        raise _bad(name, f"hours: expected 7 weekdays, Monday first, got {len(hours)}")
    for key, intervals in zip(WEEKDAYS, hours, strict=True):
        previous_end: time | None = None
        for start, end in intervals:
            text = _span_text(start, end)
            if start.tzinfo or end.tzinfo or (end != MIDNIGHT and end <= start):
                raise _bad(name, f"hours.{key}: {text} is empty, reversed or zoned (split nights at 24:00)")
            if previous_end is not None and (previous_end == MIDNIGHT or start < previous_end):
                raise _bad(name, f"hours.{key}: {text} overlaps the interval before it")
            previous_end = end
    if not any(hours):
        raise _bad(name, "hours: the desk is never open (give at least one interval)")


def _closures(name: str, value: object, base_dir: Path | None) -> Closures:
    if value is None:
        return Closures("no holidays")
    value = _mapping(name, "holidays: ", value, ("country", "subdiv", "ical", "dates"))
    country, subdiv = value.get("country"), value.get("subdiv")
    if country is not None and not isinstance(country, str):
        raise _bad(name, f"holidays.country: expected a country code like 'CZ', got {country!r}")
    if subdiv is not None and (not country or not isinstance(subdiv, str)):
        raise _bad(name, f"holidays.subdiv: expected a subdivision code of holidays.country, got {subdiv!r}")
    labels = []
    if country:
        for key, code in (("country", None), ("subdiv", subdiv)):
            try:
                holidays_lib.country_holidays(country, subdiv=code)
            except NotImplementedError as error:  # the library's way of saying "no such code"
                raise _bad(name, f"holidays.{key}: {error}") from error
        labels.append(f"holidays {country}" + (f"-{subdiv}" if subdiv else ""))
    dates = _dates(name, value.get("dates"))
    if dates:
        labels.append(f"{len(dates)} extra date" + ("s" if len(dates) > 1 else ""))
    recurrences: tuple[Recurrence, ...] = ()
    if value.get("ical") is not None:
        one_off, recurrences = _read_ical(name, value["ical"], base_dir)
        dates |= one_off
        labels.append(Path(str(value["ical"])).name)
    return Closures(" + ".join(labels) or "no holidays", country, subdiv, frozenset(dates), recurrences)


def _dates(name: str, value: object) -> set[date]:
    if value is None:
        return set()
    if not isinstance(value, list | tuple):
        raise _bad(name, f"holidays.dates: expected a list of dates like '2026-12-31', got {value!r}")
    days = set()
    for item in value:
        day = item
        if isinstance(item, str):
            with contextlib.suppress(ValueError):
                day = date.fromisoformat(item)
        if not isinstance(day, date) or isinstance(day, datetime):  # YAML reads 2026-12-31 as a date
            raise _bad(name, f"holidays.dates: {item!r} is not a date like '2026-12-31'")
        days.add(day)
    return days


def _read_ical(name: str, value: object, base_dir: Path | None) -> tuple[set[date], tuple[Recurrence, ...]]:
    """One-off closed days and recurrences of an iCal file's all-day events; timed events refused."""
    if not isinstance(value, str) or not value:
        raise _bad(name, f"holidays.ical: expected a file path, got {value!r}")
    path = (base_dir or Path()) / value
    try:
        events = icalendar.Calendar.from_ical(path.read_bytes()).events
    except OSError as error:
        raise _bad(name, f"holidays.ical: cannot read {path}: {error.strerror}") from error
    except ValueError as error:
        raise _bad(name, f"holidays.ical: {path} is not an iCalendar file: {error}") from error
    one_off: set[date] = set()
    recurrences = []
    for event in events:
        summary = str(event.get("SUMMARY", "(no summary)"))
        try:
            if event.errors:  # icalendar keeps unparsable values as vBroken and notes them here
                raise ValueError("bad {}: {}".format(*event.errors[0]))
            first, end = _whole_day(event.start), _whole_day(event.end)  # end: DTEND or from DURATION
            # dateutil refuses a UTC UNTIL beside an all-day DTSTART; the date alone means the same.
            rules = "\n".join(
                "RRULE:" + re.sub(r"UNTIL=(\d{8})T\d{6}Z?", r"UNTIL=\1", rule.to_ical().decode())
                for rule in event.rrules
            )
            exdates = frozenset(map(_whole_day, event.exdates))
            recurrence = Recurrence(rules, first, (end - first).days, exdates)
            if recurrence.length < 1:
                raise ValueError(f"ends ({end}) before it starts ({first})")
            if rules:
                list(recurrence.days_in(first.year))  # parse the rules now; expand them year by year later
                recurrences.append(recurrence)
            for day in [first, *(_whole_day(when) for when, _ in event.rdates)]:
                if day not in recurrence.exdates:
                    one_off.update(day + timedelta(days=k) for k in range(recurrence.length))
        except ValueError as error:
            raise _bad(name, f"holidays.ical: {path}: event {summary!r}: {error}") from error
    return one_off, tuple(recurrences)


def _whole_day(when: date) -> date:
    if isinstance(when, datetime):
        raise ValueError(f"is timed ({when.isoformat()}); only whole-day closures (VALUE=DATE) are supported")
    return when


def _span_text(start: time, end: time, dash: str = "-") -> str:
    return f"{start:%H:%M}{dash}{'24:00' if end == MIDNIGHT else f'{end:%H:%M}'}"


def _describe_hours(hours: Hours) -> str:
    parts = []
    for intervals, run in itertools.groupby(range(7), key=hours.__getitem__):  # consecutive days alike
        days = [WEEKDAYS[day].title() for day in run]
        if intervals:
            label = days[0] if len(days) == 1 else f"{days[0]}{DASH}{days[-1]}"
            parts.append(f"{label} " + " & ".join(_span_text(*span, DASH) for span in intervals))
    return ", ".join(parts)


def _describe_holidays(source: HolidaySource) -> str:
    if isinstance(source, Closures):
        return source.label
    return "no holidays" if isinstance(source, frozenset | set) and not source else "custom holidays"


# Last: building it runs the checks defined above.
ALWAYS_OPEN = BusinessCalendar("24x7", ZoneInfo("UTC"), (((MIDNIGHT, MIDNIGHT),),) * 7, frozenset())
