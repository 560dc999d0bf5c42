"""Simulating a draft on a virtual clock: scenarios, asserted timelines, refusals, isolation.

Calendar: docs/sla.example.yaml (policy ``standard`` on ``prague``: Mon-Fri 09:00-17:00 Prague
time, Czech public holidays). A P2 ticket has 4 business hours to the first response and 16 to
resolution, so one opened on Friday 2026-03-06 at 16:30 uses 30 minutes on Friday and is due on
Monday at 12:30 (first response) and Tuesday at 16:30 (resolution).
"""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from engine.errors import DefinitionError
from tasks.cli import main
from workflows import simulation, sla
from workflows.app import Desk
from workflows.models import AuditEvent, OutboxMessage, Ticket, WorkflowInstance
from workflows.settings import Settings
from workflows.simulation import (
    ScenarioError,
    SimulationError,
    Timeline,
    parse_duration,
    parse_scenario,
    simulate,
)

from ..conftest import REPO

EXAMPLE = REPO / "docs" / "sla.example.yaml"
LIFECYCLE = REPO / "bpmn" / "ticket_lifecycle.bpmn"
SCENARIOS = REPO / "docs" / "scenarios"
FRIDAY = "arrival: 2026-03-06T16:30 Europe/Prague\npriority: P2\nrequester: jana@customer.example\n"
TRIAGE_MONDAY = """
  - at: 2026-03-09T10:00
    complete: triage
    as: tereza@desk.example
    data: {category: incident, priority: P2, summary: VPN drops hourly}
"""


@pytest.fixture
def prague(settings: Settings) -> Settings:
    return dataclasses.replace(settings, sla_config=EXAMPLE)


def run(settings: Settings, scenario: str, xml: bytes | None = None) -> Timeline:
    return simulate(
        settings, xml or LIFECYCLE.read_bytes(), "ticket_lifecycle.bpmn", parse_scenario(scenario)
    )


def seen(timeline: Timeline, *kinds: str) -> list[tuple[str, str]]:
    """(local time, text) of the entries of ``kinds``."""
    return [(f"{e.local:%a %d %b %H:%M}", e.text) for e in timeline.of_kind(*kinds)]


# -- timelines ------------------------------------------------------------------------------------
def test_a_friday_afternoon_p2_that_nobody_touches_is_due_on_monday(prague: Settings) -> None:
    timeline = run(prague, FRIDAY + "until: 14d\n")

    assert timeline.timezone == "Europe/Prague" and timeline.calendar.startswith("prague")
    assert seen(timeline, "task_opened") == [
        ("Fri 06 Mar 16:30", "triage “Triage” for tier-1 · SLA first response due Mon 09 Mar 12:30")
    ]
    assert [(e.element_id, f"{e.local:%a %H:%M}") for e in timeline.of_kind("timer_fired")] == [
        ("triage_first_response_due", "Mon 12:30")
    ]
    assert seen(timeline, "mail_queued") == [
        (
            "Fri 06 Mar 16:30",
            "acknowledgement → jana@customer.example: [LD-1001] We received your request: "
            "Simulated ticket (queued, not sent)",
        ),
        (
            "Mon 09 Mar 12:30",
            "first_response_due → tier-1-lead@simulation.invalid: [LD-1001] First response due: "
            "Simulated ticket (queued, not sent)",
        ),
    ]
    assert (timeline.outcome, timeline.status, timeline.open_tasks) == ("running", "new", ("triage",))
    assert seen(timeline, "end") == [
        ("Fri 20 Mar 16:30", "end of the simulation: ticket new, waiting on triage")
    ]
    rendered = timeline.render().splitlines()
    assert "Fri 06 Mar 16:30  task opened      triage “Triage” for tier-1" in "\n".join(rendered)
    assert rendered[-1].startswith("Fri 20 Mar 16:30  end")


def test_easter_holidays_push_the_first_response_past_good_friday_and_easter_monday(
    prague: Settings,
) -> None:
    # Thu 2026-04-02 16:30: Good Friday (04-03), the weekend and Easter Monday (04-06) are shut.
    timeline = run(prague, "arrival: 2026-04-02T16:30\npriority: P2\nuntil: 7d\n")
    assert seen(timeline, "timer_fired") == [
        ("Tue 07 Apr 12:30", "“First response due”: 100% of the first_response target, due Tue 07 Apr 12:30")
    ]
    # Summer time started on the way (Sun 03-29): local times stay wall-clock Prague times.
    assert timeline.of_kind("timer_fired")[0].at.isoformat() == "2026-04-07T10:30:01+00:00"


def test_a_scenario_calendar_with_extra_closed_dates_overrides_the_policy_calendar(
    prague: Settings, tmp_path: Path
) -> None:
    config = tmp_path / "sla.yaml"
    config.write_text(
        EXAMPLE.read_text(encoding="utf-8").replace(
            "calendars:\n",
            "calendars:\n  inventory:\n    timezone: Europe/Prague\n"
            '    hours: {mon: "09:00-17:00", tue: "09:00-17:00", wed: "09:00-17:00",'
            ' thu: "09:00-17:00", fri: "09:00-17:00"}\n'
            '    holidays: {dates: ["2026-03-09"]}\n',
            1,
        ),
        encoding="utf-8",
    )
    timeline = run(
        dataclasses.replace(prague, sla_config=config), FRIDAY + "calendar: inventory\nuntil: 5d\n"
    )
    # Monday is closed for the inventory: 30 minutes on Friday, 3.5 hours on Tuesday.
    assert seen(timeline, "timer_fired")[0][0] == "Tue 10 Mar 12:30"
    assert "policy standard, calendar inventory" in seen(timeline, "sla")[0][1]


def test_runs_on_the_same_calendar_reuse_one_sla_file_and_keep_the_live_one_cached(
    prague: Settings,
) -> None:
    sla._cached.cache_clear()
    live = sla.load_sla_config(prague)
    for _ in range(9):  # more runs than the SLA configuration cache has entries (8)
        timeline = run(prague, FRIDAY + "calendar: prague\nuntil: 5d\n")
        assert seen(timeline, "timer_fired")[0][0] == "Mon 09 Mar 12:30"
    # The live file and the one derived from it for `prague`; one new entry per run before.
    assert sla._cached.cache_info().currsize == 2
    assert sla.load_sla_config(prague) is live


def test_a_change_to_the_live_sla_file_reaches_the_next_run_on_a_scenario_calendar(
    prague: Settings, tmp_path: Path
) -> None:
    config = tmp_path / "sla.yaml"
    config.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    live = dataclasses.replace(prague, sla_config=config)
    scenario = FRIDAY + "calendar: prague\nuntil: 5d\n"
    assert seen(run(live, scenario), "timer_fired")[0][0] == "Mon 09 Mar 12:30"

    text = config.read_text(encoding="utf-8").replace('# dates: ["2026-12-31"]', 'dates: ["2026-03-09"]')
    config.write_text(text, encoding="utf-8")
    later = config.stat().st_mtime + 10  # a new modification time even on a coarse clock
    os.utime(config, (later, later))
    assert seen(run(live, scenario), "timer_fired")[0][0] == "Tue 10 Mar 12:30"


def test_a_customer_reply_three_hours_later_is_kept_while_triage_waits(prague: Settings) -> None:
    timeline = run(
        prague, FRIDAY + "until: 2d\nevents:\n  - after: 3h\n    customer_replies: Here are the logs\n"
    )
    assert seen(timeline, "customer_replied") == [("Fri 06 Mar 19:30", "“Here are the logs”")]
    assert [element for _, element in timeline.path if element == "triage_reply_kept"] == [
        "triage_reply_kept"
    ]
    assert timeline.open_tasks == ("triage",)


def test_once_triaged_nobody_acting_escalates_at_business_hour_times(prague: Settings) -> None:
    timeline = run(prague, FRIDAY + "until: 10d\nevents:" + TRIAGE_MONDAY)

    assert seen(timeline, "task_completed")[0] == (
        "Mon 09 Mar 10:00",
        "triage by tereza@desk.example: category=incident, priority=P2, summary=VPN drops hourly",
    )
    assert [(e.element_id, f"{e.local:%a %d %b %H:%M}") for e in timeline.of_kind("timer_fired")] == [
        ("work_tier_1_resolution_warning", "Tue 10 Mar 12:30"),  # 75 % of 16 business hours
        ("work_tier_1_resolution_due", "Tue 10 Mar 16:30"),  # 100 %
        ("work_tier_2_resolution_overdue", "Wed 11 Mar 16:30"),  # 150 %
    ]
    assert seen(timeline, "escalated") == [
        ("Tue 10 Mar 16:30", "to tier-2: resolution target reached"),
        ("Wed 11 Mar 16:30", "to tier-3: resolution target exceeded by 50 %"),
    ]
    mail = [(e.data["template"], e.data["recipient"]) for e in timeline.of_kind("mail_queued")]
    assert mail == [
        ("acknowledgement", "jana@customer.example"),
        ("sla_warning", "tier-1-lead@simulation.invalid"),  # the task's group: nobody claimed it
        ("sla_warning", "tereza@desk.example"),
        ("escalated", "tier-2-lead@simulation.invalid"),
        ("escalated", "tier-3-lead@simulation.invalid"),
    ]
    assert "Escalated to Tier 2" in timeline.of_kind("mail_queued")[-2].text  # rendered when queued
    assert [e.element_id for e in timeline.of_kind("task_opened")] == [
        "triage",
        "work_tier_1",
        "work_tier_2",
        "work_tier_3",
    ]
    assert timeline.status == "escalated" and timeline.next_timer is None


def test_an_agent_reply_is_mailed_and_a_priority_change_moves_the_deadlines(prague: Settings) -> None:
    scenario = (
        FRIDAY
        + "until: 3d\nevents:"
        + TRIAGE_MONDAY
        + "  - at: 2026-03-09T10:15\n    agent_replies: Which client version?\n    as: tereza@desk.example\n"
        + "  - at: 2026-03-09T11:00\n    set_priority: P1\n"
    )
    timeline = run(prague, scenario)
    assert seen(timeline, "agent_replied") == [("Mon 09 Mar 10:15", "“Which client version?”")]
    mail = [(e.data["template"], e.data["recipient"]) for e in timeline.of_kind("mail_queued")]
    assert ("agent_reply", "jana@customer.example") in mail
    assert seen(timeline, "priority") == [("Mon 09 Mar 11:00", "P2 → P1")]
    # 2.5 of P1's 8 business hours are used: the rest runs out at 16:30 that day, 75 % at 14:30.
    assert (
        "Mon 09 Mar 11:00",
        "resolution target for P1, due Mon 09 Mar 16:30 (policy standard, calendar prague)",
    ) in seen(timeline, "sla")
    assert seen(timeline, "timer_fired")[0][0] == "Mon 09 Mar 14:30"


def test_waiting_on_the_customer_pauses_the_resolution_clock(prague: Settings) -> None:
    path = SCENARIOS / "customer-answers.yaml"
    scenario = parse_scenario(path.read_text(encoding="utf-8"), path.name)
    timeline = simulate(prague, LIFECYCLE.read_bytes(), "ticket_lifecycle.bpmn", scenario)
    clocks = [text for _, text in seen(timeline, "sla")]
    assert "resolution paused (status waiting_on_customer)" in clocks
    # 2.5 business hours used before the pause; 13.5 left from Tue 09:15 → Wed 14:45.
    assert any(t.startswith("resolution resumed (status open), due Wed 11 Mar 14:45") for t in clocks)
    assert seen(timeline, "timer_fired")[1][0] == "Wed 11 Mar 14:45"


def test_the_documented_nobody_acts_scenario_runs(prague: Settings) -> None:
    path = SCENARIOS / "friday-p2-nobody-acts.yaml"
    scenario = parse_scenario(path.read_text(encoding="utf-8"), path.name)
    timeline = simulate(prague, LIFECYCLE.read_bytes(), "ticket_lifecycle.bpmn", scenario)
    assert seen(timeline, "timer_fired")[0][0] == "Mon 09 Mar 12:30"


def test_events_after_the_process_ended_are_listed_as_not_played(prague: Settings) -> None:
    scenario = (
        FRIDAY
        + "until: 14d\nevents:"
        + TRIAGE_MONDAY
        + (
            "  - at: 2026-03-09T11:00\n    complete: work_tier_1\n    data: {outcome: resolve}\n"
            "  - at: 2026-03-19T09:00\n    customer_replies: Thanks!\n"
        )
    )
    timeline = run(prague, scenario)
    assert timeline.outcome == "completed" and timeline.status == "closed"
    # Resolved Monday 11:00, closed by the 7-day timer a second after it fell due.
    assert seen(timeline, "process_completed") == [("Mon 16 Mar 11:00", "ticket_lifecycle completed")]
    assert seen(timeline, "event_skipped") == [
        ("Thu 19 Mar 09:00", "customer_replies Thanks!: not played, the process had completed")
    ]


def test_the_timeline_is_json_ready(prague: Settings) -> None:
    data = run(prague, FRIDAY + "until: 1d\n").to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["entries"][0] == {
        "at": "2026-03-06T15:30:00+00:00",
        "local": "2026-03-06T16:30:00+01:00",
        "kind": "ticket_opened",
        "element_id": None,
        "actor": "customer:jana@customer.example",
        "text": "“Simulated ticket” from jana@customer.example",
        "data": {"process_id": "ticket_lifecycle", "version": 1},
    }
    assert data["path"][0]["element_id"] == "ticket_received"


# -- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("arrival: 2026-03-06T16:30\n  priority: P2", "scenario.yaml:2: not valid YAML: mapping values"),
        ("- arrival: 2026-03-06T16:30", "scenario.yaml:1: expected a mapping with arrival"),
        ("", "scenario.yaml:1: the scenario is empty"),
        ("priority: P2", "scenario.yaml:1: arrival: missing"),
        (
            "arrival: 2026-03-06T16:30\nowner: me",
            "scenario.yaml:2: owner: unknown key (expected one of arrival",
        ),
        (
            "arrival: 2026-03-06T16:30\narrival: 2026-03-07T16:30",
            "scenario.yaml:2: arrival: the key appears twice",
        ),
        ("arrival: Friday afternoon", "scenario.yaml:1: arrival: expected a time such as 2026-03-06T16:30"),
        (
            "arrival: 2026-03-06T16:30 Mars/Olympus",
            "scenario.yaml:1: arrival: unknown time zone 'Mars/Olympus'",
        ),
        ("arrival: 2026-03-06T16:30+01:00 Europe/Prague", "has both a UTC offset and a time zone"),
        (
            "arrival: 2026-03-06T16:30\npriority: urgent",
            "scenario.yaml:2: priority: expected one of P1, P2, P3, P4",
        ),
        ("arrival: 2026-03-06T16:30\nrequester: jana", "scenario.yaml:2: requester: not an e-mail address"),
        ("arrival: 2026-03-06T16:30\nuntil: forever", "scenario.yaml:2: until: expected a duration after"),
        (
            "arrival: 2026-03-06T16:30\nevents:\n  - after: 3 hours\n    customer_replies: hi",
            "scenario.yaml:3: events[0].after: expected a duration such as 3h",
        ),
        (
            "arrival: 2026-03-06T16:30\nevents:\n  - after: 1h\n    customer_calls: hi",
            "scenario.yaml:4: events[0].customer_calls: unknown key for an event",
        ),
        (
            "arrival: 2026-03-06T16:30\nevents:\n  - after: 1h",
            "scenario.yaml:3: events[0]: expected exactly one of customer_replies, agent_replies, complete,"
            " set_priority; got none",
        ),
        (
            "arrival: 2026-03-06T16:30\nevents:\n  - customer_replies: hi",
            "scenario.yaml:3: events[0]: give either `after:` or `at:`",
        ),
        (
            "arrival: 2026-03-06T16:30\nevents:\n  - at: 2026-03-06T09:00\n    customer_replies: hi",
            "scenario.yaml:3: events[0].at: is before the ticket arrives",
        ),
        (
            "arrival: 2026-03-06T16:30\nevents:\n  - after: 1h\n    customer_replies: hi\n    as: a@b.cz",
            "scenario.yaml:5: events[0].as: does not apply to customer_replies",
        ),
        (
            "arrival: 2026-03-06T16:30\nevents:\n  - after: 1h\n    complete: triage\n    data: [1]",
            "scenario.yaml:5: events[0].data: expected a mapping of form fields",
        ),
        ("arrival: 2026-03-06T16:30\nevents: soon", "scenario.yaml:2: events: expected a list of events"),
    ],
)
def test_a_bad_scenario_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(ScenarioError) as refused:
        parse_scenario(text)
    assert message in str(refused.value)


def test_durations_read_like_people_write_them() -> None:
    assert parse_duration("1d 4h") == parse_duration("28h") == parse_duration("1680m")
    assert parse_duration("2w").days == 14
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration("PT3H")


@pytest.mark.parametrize(
    ("scenario", "error", "message"),
    [
        (
            FRIDAY + "events:\n  - after: 1h\n    complete: work_tier_1\n",
            ScenarioError,
            "scenario.yaml:5: events[0] (Fri 06 Mar 17:30, complete work_tier_1): "
            "no open task 'work_tier_1' (open: triage)",
        ),
        (
            FRIDAY + "events:\n  - after: 1h\n    complete: triage\n    data: {priority: P9}\n",
            ScenarioError,
            "scenario.yaml:5: events[0] (Fri 06 Mar 17:30, complete triage): the form refuses the data "
            "(category: is required; priority: must be one of: P1, P2, P3, P4; summary: is required)",
        ),
        (FRIDAY + "calendar: moon\n", ScenarioError, "scenario.yaml:4: calendar: no calendar 'moon'"),
        (
            FRIDAY + "until: 1d\nevents:\n  - after: 2d\n    customer_replies: late\n",
            ScenarioError,
            "scenario.yaml:6: events[0].after: is after the end of the simulation (Sat 07 Mar 16:30)",
        ),
    ],
)
def test_a_scenario_that_does_not_fit_the_diagram_or_desk_is_refused(
    prague: Settings, scenario: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as refused:
        run(prague, scenario)
    assert message in str(refused.value)


def test_a_broken_draft_is_refused_with_its_problems(prague: Settings) -> None:
    broken = LIFECYCLE.read_bytes().replace(b'"P3D"', b"P3D").replace(b'"P7D"', b"P7D")
    with pytest.raises(DefinitionError) as refused:
        run(prague, FRIDAY, broken)
    problems = [(p.element_id, "quote it" in p.message) for p in refused.value.problems]
    assert problems == [("waiting_reminder_due", True), ("resolved_close_due", True)]


def test_the_live_desks_own_groups_can_be_named_by_lanes(prague: Settings) -> None:
    draft = LIFECYCLE.read_bytes().replace(b'name="Tier 3"', b'name="Field Service"')
    scenario = parse_scenario(FRIDAY + "until: 10d\nevents:" + TRIAGE_MONDAY)
    with pytest.raises(DefinitionError, match="work_tier_3: lane 'Field Service' maps to no agent group"):
        simulate(prague, draft, "draft.bpmn", scenario)  # only the default groups exist
    timeline = simulate(prague, draft, "draft.bpmn", scenario, groups={"field-service": "Field Service"})
    assert timeline.of_kind("task_opened")[-1].text.startswith(
        "work_tier_3 “Work ticket (Tier 3)” for field-service"
    )


def test_a_timer_loop_is_stopped_with_a_clear_message(
    prague: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(simulation.run, "MAX_WAKES", 2)  # the lifecycle wakes three times after triage
    with pytest.raises(SimulationError, match="woken 2 times by Wed 11 Mar 16:30"):
        run(prague, FRIDAY + "until: 10d\nevents:" + TRIAGE_MONDAY)


# -- isolation and the command line ---------------------------------------------------------------
def _counts(desk: Desk) -> dict[str, Any]:
    with desk.unit_of_work(readonly=True) as session:
        return {
            model.__name__: session.scalar(select(func.count()).select_from(model))
            for model in (Ticket, WorkflowInstance, OutboxMessage, AuditEvent)
        }


def test_the_live_desk_is_untouched(desk: Desk) -> None:
    outbox = desk.settings.data_dir / "outbox"  # where the desk's file transport would "send" mail

    def files() -> list[Path]:
        return sorted(outbox.rglob("*")) if outbox.exists() else []

    before, mail_files = _counts(desk), files()
    timeline = run(desk.settings, FRIDAY + "until: 10d\nevents:" + TRIAGE_MONDAY)
    assert timeline.of_kind("mail_queued") and timeline.of_kind("escalated")
    assert _counts(desk) == before and before["Ticket"] == 0
    assert files() == mail_files


def test_lanedesk_simulate_prints_the_timeline_or_the_problems(desk: Desk, tmp_path: Path) -> None:
    live = dataclasses.replace(desk, settings=dataclasses.replace(desk.settings, sla_config=EXAMPLE))
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(main, list(args), obj=live, catch_exceptions=False)

    scenario = SCENARIOS / "friday-p2-nobody-acts.yaml"
    before = _counts(desk)
    text = cli("simulate", str(LIFECYCLE), "--scenario", str(scenario))
    assert text.exit_code == 0, text.output
    assert "Mon 09 Mar 12:30  timer fired      “First response due”" in text.output
    as_json = cli("simulate", str(LIFECYCLE), "--scenario", str(scenario), "--json")
    assert json.loads(as_json.output)["open_tasks"] == ["triage"]
    assert cli("simulate", str(LIFECYCLE), "--scenario", str(scenario), "--offline").output == text.output
    assert _counts(desk) == before

    broken = tmp_path / "broken.bpmn"
    broken.write_bytes(LIFECYCLE.read_bytes().replace(b'"P3D"', b"P3D"))
    refused = cli("simulate", str(broken), "--scenario", str(scenario))
    assert refused.exit_code == 1
    assert "broken.bpmn:" in refused.stderr and "waiting_reminder_due: timer P3D" in refused.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("arrival: 2026-03-06T16:30\nevents:\n  - after: soon\n    customer_replies: hi\n")
    refused = cli("simulate", str(LIFECYCLE), "--scenario", str(bad))
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: bad.yaml:3: events[0].after: expected a duration")


def test_naive_times_are_in_the_calendars_zone(prague: Settings) -> None:
    aware = run(prague, "arrival: 2026-03-06T15:30:00+00:00\nuntil: 1d\n")
    naive = run(prague, "arrival: 2026-03-06T16:30\nuntil: 1d\n")
    assert aware.arrival == naive.arrival == datetime.fromisoformat("2026-03-06T15:30:00+00:00")
