"""Business calendars: SLA arithmetic over working hours, DST, holidays, and spec validation."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from workflows.calendars import ALWAYS_OPEN, BusinessCalendar, Closures, calendar_from_spec

DATA = Path(__file__).resolve().parents[1] / "data" / "calendars"
PRAGUE = ZoneInfo("Europe/Prague")
HOUR = 3600
WEEKDAYS_9_TO_5 = {day: "09:00-17:00" for day in ("mon", "tue", "wed", "thu", "fri")}


def prague(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=PRAGUE)


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


def office(**hours: str) -> BusinessCalendar:
    """Prague office with Czech holidays; weekday hours default to Mon-Fri 09:00-17:00."""
    spec = {"timezone": "Europe/Prague", "hours": hours or WEEKDAYS_9_TO_5, "holidays": {"country": "CZ"}}
    return calendar_from_spec("Prague office", spec)


def around_the_clock(timezone: str = "Europe/Prague") -> BusinessCalendar:
    week = {day: "00:00-24:00" for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    return calendar_from_spec("24x7 local", {"timezone": timezone, "hours": week})


def plain(text: str) -> str:
    """describe() with its en dashes as hyphens, so the expectations stay plain ASCII."""
    return text.replace("\N{EN DASH}", "-")


class EveryDay:
    """A holiday source under which the desk never opens."""

    def __contains__(self, day: date, /) -> bool:
        return True


class CountingHolidays:
    """Czech holidays, counting how many days were looked up."""

    def __init__(self) -> None:
        self.inner = Closures("holidays CZ", country="CZ")
        self.lookups = 0

    def __contains__(self, day: date, /) -> bool:
        self.lookups += 1
        return day in self.inner


# --- The headline examples ------------------------------------------------------------------------


def test_it_counts_a_friday_evening_ticket_from_monday_opening() -> None:
    due = office().add(prague(2026, 3, 6, 17, 30), 4 * HOUR)
    assert due == prague(2026, 3, 9, 13, 0) == utc(2026, 3, 9, 12, 0)
    assert due.tzinfo is UTC


def test_it_carries_a_target_longer_than_a_day_into_the_next_morning() -> None:
    assert office().add(prague(2026, 3, 6, 17, 30), 8.5 * HOUR) == prague(2026, 3, 10, 9, 30)


def test_it_skips_good_friday_the_weekend_and_easter_monday() -> None:
    due = office().add(prague(2026, 4, 2, 16, 0), 4 * HOUR)
    assert due == prague(2026, 4, 7, 12, 0) == utc(2026, 4, 7, 10, 0)


def test_it_counts_working_hours_in_local_time_across_the_spring_switch() -> None:
    start = prague(2026, 3, 27, 16, 0)
    assert start == utc(2026, 3, 27, 15, 0)
    assert office().add(start, 2 * HOUR) == prague(2026, 3, 30, 10, 0) == utc(2026, 3, 30, 8, 0)


def test_a_half_hour_target_after_closing_is_due_half_an_hour_after_opening() -> None:
    assert office().add(prague(2026, 3, 6, 17, 30), 30 * 60) == prague(2026, 3, 9, 9, 30)


def test_czech_holidays_include_easter_and_may() -> None:
    holidays = office().holidays
    for day in (date(2026, 4, 3), date(2026, 4, 6), date(2026, 5, 1), date(2026, 5, 8), date(2030, 4, 19)):
        assert day in holidays
    assert date(2026, 4, 7) not in holidays


# --- Edges of the working day ---------------------------------------------------------------------


def test_zero_seconds_is_the_start_itself_when_open_else_the_next_opening() -> None:
    calendar = office()
    assert calendar.add(prague(2026, 3, 9, 11, 15), 0) == prague(2026, 3, 9, 11, 15)
    assert calendar.add(prague(2026, 3, 9, 9, 0), 0) == prague(2026, 3, 9, 9, 0)
    assert calendar.add(prague(2026, 3, 9, 17, 0), 0) == prague(2026, 3, 10, 9, 0)
    assert calendar.add(prague(2026, 4, 3, 10, 0), 0) == prague(2026, 4, 7, 9, 0)


def test_a_target_that_fills_the_day_is_due_at_closing_not_next_morning() -> None:
    assert office().add(prague(2026, 3, 9, 9, 0), 8 * HOUR) == prague(2026, 3, 9, 17, 0)


def test_a_ticket_arriving_at_closing_starts_counting_next_morning() -> None:
    assert office().add(prague(2026, 3, 9, 17, 0), HOUR) == prague(2026, 3, 10, 10, 0)


def test_a_ticket_arriving_on_a_holiday_or_weekend_waits_for_the_next_working_day() -> None:
    calendar = office()
    assert calendar.add(prague(2026, 4, 3, 10, 0), HOUR) == prague(2026, 4, 7, 10, 0)
    assert calendar.add(prague(2026, 3, 7, 12, 0), HOUR) == prague(2026, 3, 9, 10, 0)
    assert calendar.add(prague(2026, 3, 9, 6, 0), HOUR) == prague(2026, 3, 9, 10, 0)


def test_the_lunch_break_does_not_count() -> None:
    calendar = office(mon="08:00-12:00, 13:00-17:00", tue="13:00-17:00, 08:00-12:00")
    assert calendar.add(prague(2026, 3, 9, 11, 0), 2 * HOUR) == prague(2026, 3, 9, 14, 0)
    assert calendar.add(prague(2026, 3, 9, 12, 30), 0) == prague(2026, 3, 9, 13, 0)
    assert calendar.add(prague(2026, 3, 9, 16, 0), 6 * HOUR) == prague(2026, 3, 10, 14, 0)
    assert calendar.seconds_between(prague(2026, 3, 9, 0, 0), prague(2026, 3, 10, 0, 0)) == 8 * HOUR


def test_an_interval_ending_at_midnight_runs_on_into_the_next_days_opening() -> None:
    calendar = office(fri="20:00-24:00", sat="00:00-02:00")
    assert calendar.add(prague(2026, 3, 6, 23, 0), 2 * HOUR) == prague(2026, 3, 7, 1, 0)
    assert calendar.is_working_time(prague(2026, 3, 6, 23, 59, 59))
    assert calendar.is_working_time(prague(2026, 3, 7, 0, 0))
    assert not calendar.is_working_time(prague(2026, 3, 7, 2, 0))


def test_is_working_time_includes_the_opening_and_excludes_the_closing_instant() -> None:
    calendar = office(mon="08:00-12:00, 13:00-17:00", fri="09:00-17:00")
    assert calendar.is_working_time(prague(2026, 3, 9, 8, 0))
    assert calendar.is_working_time(utc(2026, 3, 9, 10, 59))
    assert not calendar.is_working_time(prague(2026, 3, 9, 12, 0))
    assert not calendar.is_working_time(prague(2026, 3, 9, 17, 0))
    assert not calendar.is_working_time(prague(2026, 3, 9, 7, 59, 59))
    assert not calendar.is_working_time(prague(2026, 3, 10, 10, 0))  # Tuesday: closed
    assert not calendar.is_working_time(prague(2026, 4, 3, 10, 0))  # Good Friday


def test_it_accepts_any_time_zone_and_answers_in_utc() -> None:
    new_york = datetime(2026, 3, 6, 11, 30, tzinfo=ZoneInfo("America/New_York"))  # 17:30 in Prague
    due = office().add(new_york, 4 * HOUR)
    assert due == utc(2026, 3, 9, 12, 0)
    assert due.tzinfo is UTC


# --- Daylight saving time -------------------------------------------------------------------------


def test_a_round_the_clock_day_lasts_23_hours_in_spring_and_25_in_autumn() -> None:
    calendar = around_the_clock()
    assert calendar.seconds_between(prague(2026, 3, 29), prague(2026, 3, 30)) == 23 * HOUR
    assert calendar.seconds_between(prague(2026, 10, 25), prague(2026, 10, 26)) == 25 * HOUR
    assert calendar.seconds_between(prague(2026, 10, 26), prague(2026, 10, 27)) == 24 * HOUR
    assert calendar.add(prague(2026, 3, 29), 23 * HOUR) == prague(2026, 3, 30) == utc(2026, 3, 29, 22)
    assert calendar.add(prague(2026, 10, 25), 25 * HOUR) == prague(2026, 10, 26) == utc(2026, 10, 25, 23)


def test_a_boundary_in_the_skipped_hour_moves_forward_by_the_gap() -> None:
    calendar = office(sun="01:00-02:30")  # 2026-03-29: 02:00 CET jumps to 03:00 CEST
    assert calendar.add(prague(2026, 3, 29, 1, 0), 0) == utc(2026, 3, 29, 0, 0)
    assert calendar.is_working_time(utc(2026, 3, 29, 1, 29))  # 03:29 CEST
    assert calendar.seconds_between(prague(2026, 3, 29), prague(2026, 3, 30)) == int(1.5 * HOUR)
    later = office(sun="02:00-04:00")
    assert later.add(prague(2026, 3, 29), 0) == utc(2026, 3, 29, 1, 0)  # 03:00 CEST
    assert later.seconds_between(prague(2026, 3, 29), prague(2026, 3, 30)) == HOUR


def test_an_interval_inside_the_skipped_hour_moves_with_it_or_vanishes() -> None:
    inside = office(sun="02:15-02:45")
    assert inside.add(prague(2026, 3, 29), 0) == utc(2026, 3, 29, 1, 15)  # 03:15 CEST
    assert inside.seconds_between(prague(2026, 3, 29), prague(2026, 3, 30)) == 30 * 60
    across_the_end = office(sun="02:30-03:00")  # would open at 03:30 CEST, after it closes
    assert across_the_end.seconds_between(prague(2026, 3, 29), prague(2026, 3, 30)) == 0
    assert across_the_end.add(prague(2026, 3, 29), 0) == prague(2026, 4, 5, 2, 30)
    assert across_the_end.seconds_between(prague(2026, 3, 22), prague(2026, 3, 23)) == 30 * 60


def test_a_repeated_autumn_hour_is_counted_twice_when_inside_an_interval() -> None:
    calendar = office(sun="01:00-04:00")  # 2026-10-25: 03:00 CEST falls back to 02:00 CET
    assert calendar.seconds_between(prague(2026, 10, 25), prague(2026, 10, 26)) == 4 * HOUR
    first_only = office(sun="02:00-02:30")  # a repeated wall time means its first occurrence
    assert first_only.add(prague(2026, 10, 25), 0) == utc(2026, 10, 25, 0, 0)
    assert first_only.seconds_between(prague(2026, 10, 25), prague(2026, 10, 26)) == 30 * 60


# --- seconds_between and its agreement with add ---------------------------------------------------


def test_seconds_between_counts_only_open_time() -> None:
    calendar = office()
    assert calendar.seconds_between(prague(2026, 3, 6, 16, 0), prague(2026, 3, 9, 10, 0)) == 2 * HOUR
    assert calendar.seconds_between(prague(2026, 4, 2, 0, 0), prague(2026, 4, 8, 0, 0)) == 16 * HOUR
    assert calendar.seconds_between(prague(2026, 3, 7, 10, 0), prague(2026, 3, 8, 10, 0)) == 0
    assert calendar.seconds_between(prague(2026, 3, 9, 12, 0), prague(2026, 3, 9, 12, 0)) == 0
    assert calendar.seconds_between(prague(2026, 3, 9, 12, 0), prague(2026, 3, 9, 10, 0)) == 0


def test_seconds_between_inverts_add_for_many_starts_and_targets() -> None:
    calendar = office(mon="08:00-12:00, 13:00-17:00", tue="09:00-17:00", thu="07:30-24:00", sat="10:00-14:00")
    durations = [0, 1, 59, 45 * 60, HOUR, 4 * HOUR + 17, 8 * HOUR, 8.5 * HOUR, 3 * 24 * HOUR + 1]
    start = prague(2026, 3, 23, 0, 7)  # a fortnight over the spring switch, Good Friday and Easter Monday
    checked = 0
    while start < prague(2026, 4, 6, 0, 0):
        for seconds in durations:
            due = calendar.add(start, seconds)
            assert calendar.seconds_between(start, due) == seconds, (start, seconds)
            assert due >= start
            checked += 1
        start += timedelta(minutes=37)
    assert checked > 4000


def test_a_long_target_walks_whole_days_not_minutes() -> None:
    holidays = CountingHolidays()
    calendar = BusinessCalendar("counted", PRAGUE, office().hours, holidays)
    start = prague(2026, 1, 5, 9, 0)
    due = calendar.add(start, 2000 * HOUR)
    assert due == prague(2027, 1, 4, 17, 0)
    assert holidays.lookups < 400  # about one per calendar day walked
    assert calendar.seconds_between(start, due) == 2000 * HOUR


def test_a_long_target_agrees_with_counting_hour_by_hour() -> None:
    calendar = office()
    moment, open_hours = prague(2026, 1, 5, 9, 0), 0
    while open_hours < 2000:
        open_hours += calendar.is_working_time(moment)
        moment = (moment.astimezone(UTC) + timedelta(hours=1)).astimezone(PRAGUE)
    assert calendar.add(prague(2026, 1, 5, 9, 0), 2000 * HOUR) == moment == prague(2027, 1, 4, 17, 0)


# --- Refusals -------------------------------------------------------------------------------------


def test_it_gives_up_when_the_desk_never_opens_within_three_years() -> None:
    shut = BusinessCalendar("shut", PRAGUE, office().hours, EveryDay())
    with pytest.raises(ValueError, match="'shut' has no working time within 3 years"):
        shut.add(prague(2026, 3, 9, 10, 0), 1)
    assert shut.seconds_between(prague(2026, 1, 1), prague(2036, 1, 1)) == 0
    assert not shut.is_working_time(prague(2026, 3, 9, 10, 0))
    assert shut.describe().endswith("custom holidays)")


def test_calendars_from_the_same_spec_are_equal_values() -> None:
    first, second = office(), office()
    assert date(2026, 4, 3) in first.holidays  # fills only the first one's year cache
    assert first == second
    assert hash(first) == hash(second)
    assert first != office(mon="09:00-12:00")


@pytest.mark.parametrize("seconds", [-1, math.nan, math.inf])
def test_add_refuses_negative_or_non_finite_seconds(seconds: float) -> None:
    with pytest.raises(ValueError, match="cannot add"):
        office().add(prague(2026, 3, 9, 10, 0), seconds)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="start must be timezone-aware"):
        office().add(datetime(2026, 3, 9, 10, 0), 60)
    with pytest.raises(ValueError, match="end must be timezone-aware"):
        office().seconds_between(prague(2026, 3, 9), datetime(2026, 3, 10))
    with pytest.raises(ValueError, match="at must be timezone-aware"):
        office().is_working_time(datetime(2026, 3, 9, 10, 0))


@pytest.mark.parametrize(
    ("hours", "message"),
    [
        ((), "expected 7 weekdays"),
        (((),) * 7, "never open"),
        (((time(17), time(9)),), "hours.mon: 17:00-09:00 is empty, reversed"),
        (((time(9), time(12)), (time(11), time(13))), "hours.mon: 11:00-13:00 overlaps"),
        (((time(9), time(0)), (time(10), time(11))), "hours.mon: 10:00-11:00 overlaps"),
        (((time(9, tzinfo=UTC), time(10)),), "is empty, reversed or zoned"),
    ],
)
def test_a_calendar_built_directly_checks_its_hours(hours: tuple[object, ...], message: str) -> None:
    week = hours if len(hours) in (0, 7) else (hours, *((),) * 6)
    with pytest.raises(ValueError, match=message):
        BusinessCalendar("direct", PRAGUE, week, frozenset())  # type: ignore[arg-type]


# --- describe and the 24x7 calendar ---------------------------------------------------------------


def test_describe_is_one_line_for_the_timeline() -> None:
    assert office().describe() == "Prague office (Europe/Prague, Mon\u2013Fri 09:00\u201317:00, holidays CZ)"
    lunch = calendar_from_spec(
        "Helpdesk",
        {
            "timezone": "Europe/Prague",
            "hours": {
                "mon": "08:00-12:00, 13:00-17:00",
                "tue": "08:00-12:00, 13:00-17:00",
                "sat": "10:00-14:00",
            },
            "holidays": {"ical": "office-closures.ics", "dates": ["2026-12-31"]},
        },
        base_dir=DATA,
    )
    assert plain(lunch.describe()) == (
        "Helpdesk (Europe/Prague, Mon-Tue 08:00-12:00 & 13:00-17:00, Sat 10:00-14:00,"
        " 1 extra date + office-closures.ics)"
    )
    assert plain(ALWAYS_OPEN.describe()) == "24x7 (UTC, Mon-Sun 00:00-24:00, no holidays)"


def test_always_open_counts_every_second() -> None:
    start = datetime(2026, 3, 28, 22, 30, tzinfo=PRAGUE)
    assert ALWAYS_OPEN.add(start, 0) == start
    assert ALWAYS_OPEN.add(start, 90_000) == start.astimezone(UTC) + timedelta(seconds=90_000)
    assert ALWAYS_OPEN.seconds_between(start, start + timedelta(days=365)) == 365 * 24 * HOUR - HOUR
    assert ALWAYS_OPEN.is_working_time(utc(2026, 12, 25, 0, 0))
    assert ALWAYS_OPEN.name == "24x7"


# --- Specs ----------------------------------------------------------------------------------------


def test_a_yaml_spec_becomes_a_calendar() -> None:
    spec = yaml.safe_load(
        """
        timezone: Europe/Prague
        hours:
          mon: "08:00-12:00, 13:00-17:00"
          tue: 09:00-17:00
          wed: closed
          thu:
          fri: "09:00 \u2013 15:30"
          sun: "00:00-24:00"
        holidays:
          country: CZ
          subdiv: null
          ical: office-closures.ics
          dates: [2026-12-31, "2027-01-04"]
        """
    )
    calendar = calendar_from_spec("Prague office", spec, base_dir=DATA)
    assert calendar.timezone == PRAGUE
    assert calendar.hours == (
        ((time(8), time(12)), (time(13), time(17))),
        ((time(9), time(17)),),
        (),
        (),
        ((time(9), time(15, 30)),),
        (),
        ((time(0), time(0)),),
    )
    for closed in (date(2026, 12, 31), date(2027, 1, 4), date(2026, 4, 3), date(2026, 6, 12)):
        assert closed in calendar.holidays
    assert date(2026, 12, 30) in calendar.holidays  # from the iCal file
    assert calendar.describe().endswith("holidays CZ + 2 extra dates + office-closures.ics)")


def test_an_ical_file_closes_all_day_ranges_and_yearly_events() -> None:
    spec = {
        "timezone": "Europe/Prague",
        "hours": WEEKDAYS_9_TO_5,
        "holidays": {"ical": "office-closures.ics"},
    }
    closures = calendar_from_spec("Prague office", spec, base_dir=DATA).holidays
    closed = {
        date(2026, 6, 12),  # a single all-day event
        date(2026, 11, 27),  # its RDATE
        date(2026, 7, 20),  # DTEND;VALUE=DATE:20260723 is exclusive: three days
        date(2026, 7, 21),
        date(2026, 7, 22),
        date(2026, 8, 14),  # FREQ=YEARLY ...
        date(2027, 8, 14),
        date(2031, 8, 14),
        date(2026, 12, 29),  # DURATION:P2D, yearly until 2027
        date(2026, 12, 30),
        date(2027, 12, 30),
    }
    open_days = {
        date(2026, 7, 23),
        date(2026, 6, 13),
        date(2028, 8, 14),
        date(2028, 12, 29),
        date(2026, 4, 3),
    }
    assert {day for day in closed | open_days if day in closures} == closed
    calendar = calendar_from_spec("Prague office", spec, base_dir=DATA)
    assert calendar.add(prague(2026, 7, 17, 16, 0), 2 * HOUR) == prague(2026, 7, 23, 10, 0)


def test_an_exdate_can_cancel_the_first_occurrence(tmp_path: Path) -> None:
    (tmp_path / "closures.ics").write_text(
        "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:Founders' day\nDTSTART;VALUE=DATE:20260814\n"
        "RRULE:FREQ=YEARLY\nEXDATE;VALUE=DATE:20260814\nEND:VEVENT\nEND:VCALENDAR\n"
    )
    spec = {"timezone": "UTC", "hours": WEEKDAYS_9_TO_5, "holidays": {"ical": "closures.ics"}}
    closures = calendar_from_spec("desk", spec, base_dir=tmp_path).holidays
    assert date(2026, 8, 14) not in closures
    assert date(2027, 8, 14) in closures


def test_an_ical_file_with_a_timed_event_is_refused_naming_the_file_and_event() -> None:
    spec = {"timezone": "Europe/Prague", "hours": WEEKDAYS_9_TO_5, "holidays": {"ical": "timed-event.ics"}}
    with pytest.raises(ValueError, match=r"timed-event\.ics: event 'Team offsite': is timed") as caught:
        calendar_from_spec("Prague office", spec, base_dir=DATA)
    assert "calendar 'Prague office'" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("this is not iCalendar\n", "is not an iCalendar file"),
        ("", "is not an iCalendar file"),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:Oops\nDTSTART;VALUE=DATE:2026XX15\nEND:VEVENT\nEND:VCALENDAR\n",
            "event 'Oops': bad DTSTART",
        ),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:Nowhen\nEND:VEVENT\nEND:VCALENDAR\n",
            "event 'Nowhen': No DTSTART",
        ),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:Back\nDTSTART;VALUE=DATE:20260615\nDTEND;VALUE=DATE:20260610\n"
            "END:VEVENT\nEND:VCALENDAR\n",
            "event 'Back': ends",
        ),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:Often\nDTSTART;VALUE=DATE:20260615\nRRULE:FREQ=SOMETIMES\n"
            "END:VEVENT\nEND:VCALENDAR\n",
            "event 'Often': bad RRULE",
        ),
    ],
)
def test_a_malformed_ical_file_is_refused(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "closures.ics").write_text(text)
    spec = {"timezone": "UTC", "hours": WEEKDAYS_9_TO_5, "holidays": {"ical": "closures.ics"}}
    with pytest.raises(ValueError, match=message):
        calendar_from_spec("desk", spec, base_dir=tmp_path)


GOOD = {"timezone": "Europe/Prague", "hours": WEEKDAYS_9_TO_5}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"timezone": None}, "timezone: unknown time zone None"),
        ({"timezone": "Mars/Olympus"}, "timezone: unknown time zone 'Mars/Olympus'"),
        ({"timezone": "Europe"}, "timezone: unknown time zone 'Europe'"),
        ({"timezone": "../etc/passwd"}, "timezone: unknown time zone"),
        ({"hours": "09:00-17:00"}, "hours: expected a mapping with keys mon, .*, sun, got '09:00-17:00'"),
        ({"hours": {"monday": "09:00-17:00"}}, "hours: unknown key 'monday'"),
        ({"hours": {"mon": "9-17"}}, "hours.mon: '9-17' is not an interval"),
        ({"hours": {"mon": "09:00-17:60"}}, "hours.mon: '09:00-17:60' is not an interval"),
        ({"hours": {"mon": "24:00-24:00"}}, "hours.mon: '24:00-24:00' is not an interval"),
        ({"hours": {"mon": "09:00-24:30"}}, "hours.mon: '09:00-24:30' is not an interval"),
        ({"hours": {"mon": "17:00-09:00"}}, "hours.mon: 17:00-09:00 is empty, reversed"),
        ({"hours": {"mon": "09:00-09:00"}}, "hours.mon: 09:00-09:00 is empty"),
        ({"hours": {"mon": "09:00-13:00, 12:00-17:00"}}, "hours.mon: 12:00-17:00 overlaps"),
        ({"hours": {"mon": False}}, "hours.mon: expected a string .* got False"),
        ({"hours": {"sat": "closed"}}, "hours: the desk is never open"),
        ({"holidays": ["CZ"]}, "holidays: expected a mapping"),
        ({"holidays": {"countries": "CZ"}}, "holidays: unknown key 'countries'"),
        ({"holidays": {"country": "XX"}}, "holidays.country: Country XX not available"),
        ({"holidays": {"country": 42}}, "holidays.country: expected a country code"),
        ({"holidays": {"country": "CZ", "subdiv": "ZZ"}}, "holidays.subdiv: .*ZZ"),
        ({"holidays": {"subdiv": "CA"}}, "holidays.subdiv: expected a subdivision code"),
        ({"holidays": {"dates": "2026-12-31"}}, "holidays.dates: expected a list"),
        ({"holidays": {"dates": ["2026-13-01"]}}, "holidays.dates: '2026-13-01' is not a date"),
        ({"holidays": {"dates": [datetime(2026, 12, 31, 9)]}}, "holidays.dates: datetime.* is not a date"),
        ({"holidays": {"ical": "missing.ics"}}, "holidays.ical: cannot read .*missing.ics: No such file"),
        ({"holidays": {"ical": 7}}, "holidays.ical: expected a file path"),
        ({"weekends": "closed"}, "unknown key 'weekends'"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_calendar_and_key(changes: dict[str, object], message: str) -> None:
    spec = GOOD | changes
    with pytest.raises(ValueError, match=message) as caught:
        calendar_from_spec("Prague office", spec, base_dir=DATA)
    assert str(caught.value).startswith("calendar 'Prague office': ")


@pytest.mark.parametrize("missing", ["timezone", "hours"])
def test_timezone_and_hours_are_required(missing: str) -> None:
    spec = {key: value for key, value in GOOD.items() if key != missing}
    with pytest.raises(ValueError, match=f"calendar 'Prague office': '{missing}' is required"):
        calendar_from_spec("Prague office", spec)


def test_a_subdivision_adds_its_own_holidays() -> None:
    spec = {
        "timezone": "Europe/Berlin",
        "hours": WEEKDAYS_9_TO_5,
        "holidays": {"country": "DE", "subdiv": "BY"},
    }
    bavaria = calendar_from_spec("Munich", spec)
    assert date(2026, 1, 6) in bavaria.holidays  # Epiphany: Bavaria, not all of Germany
    assert (
        date(2026, 1, 6) not in calendar_from_spec("Berlin", GOOD | {"holidays": {"country": "DE"}}).holidays
    )
    assert bavaria.describe().endswith("holidays DE-BY)")


def test_observed_holidays_that_cross_new_year_are_kept() -> None:
    assert date(2021, 12, 31) in Closures("holidays US", country="US")  # New Year 2022 fell on a Saturday


def test_round_the_clock_is_wall_time_and_a_holiday_still_counts() -> None:
    from datetime import UTC, date, datetime, timedelta

    from workflows.calendars import ALWAYS_OPEN, BusinessCalendar

    start = datetime(2026, 3, 28, 22, 30, tzinfo=UTC)  # across Europe's DST change: UTC has none
    end = start + timedelta(days=3, hours=5, seconds=7)
    assert ALWAYS_OPEN.seconds_between(start, end) == int((end - start).total_seconds())
    assert ALWAYS_OPEN.seconds_between(end, start) == 0
    assert ALWAYS_OPEN.add(start, 3600.5) == start + timedelta(seconds=3600.5)
    closed_sunday = BusinessCalendar(
        "24x7-but-sunday", ALWAYS_OPEN.timezone, ALWAYS_OPEN.hours, frozenset({date(2026, 3, 29)})
    )
    assert closed_sunday.seconds_between(start, end) == int((end - start).total_seconds()) - 86400
