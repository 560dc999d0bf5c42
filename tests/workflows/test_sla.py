"""SLA policies on business calendars: the configuration, due times, pause and priority changes.

The calendar is the one of docs/sla.example.yaml (Prague, Mon-Fri 09:00-17:00, Czech public
holidays); the clock is passed explicitly to every call, so a fortnight takes no time. The
fortnight from Thu 2026-03-26 crosses a weekend, the switch to summer time (Sun 03-29), Good
Friday (04-03) and Easter Monday (04-06).
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from workflows.models import AuditEvent, SlaClock, Ticket, WorkflowInstance
from workflows.settings import Settings
from workflows.sla import DEFAULT_CONFIG, SlaConfigError, load_sla_config, parse_sla_config
from workflows.tickets import add_customer_reply, change_priority, instance_of, open_ticket

from .helpers import agent, open_task, work

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "sla.example.yaml"
PRAGUE_DESCRIPTION = "prague (Europe/Prague, Mon\u2013Fri 09:00\u201317:00, holidays CZ)"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.fixture
def prague(settings: Settings) -> Settings:
    return dataclasses.replace(settings, sla_config=EXAMPLE)


def _open(
    session: Session,
    settings: Settings,
    at: datetime,
    priority: str,
    requester: str = "jana@customer.example",
) -> Ticket:
    return open_ticket(
        session,
        settings,
        requester=requester,
        subject="VPN drops",
        body="Every hour.",
        now=at,
        priority=priority,
    )


def _clock(session: Session, ticket: Ticket, name: str) -> SlaClock:
    row = session.scalar(select(SlaClock).where(SlaClock.ticket_id == ticket.id, SlaClock.name == name))
    assert row is not None
    return row


def _wake_at(session: Session, ticket: Ticket) -> datetime | None:
    row = instance_of(session, ticket)
    session.refresh(row)
    return row.next_wake_at


# -- configuration ----------------------------------------------------------------------------
def test_without_a_file_the_desk_uses_round_the_clock_targets(settings: Settings) -> None:
    config = load_sla_config(settings)
    assert config.source == "built-in defaults"
    assert [p.name for p in config.policies] == ["standard"]
    assert config.policies[0].calendar == "24x7"
    assert config.policies[0].target("resolution", "P2") == 24 * 3600


def test_the_documented_example_parses_and_matches_by_organisation(prague: Settings) -> None:
    config = load_sla_config(prague)
    assert config.source == str(EXAMPLE)
    assert [p.name for p in config.policies] == ["enterprise", "standard"]
    assert config.calendars["prague"].describe() == PRAGUE_DESCRIPTION
    assert config.group_calendars == {"tier-3": "follow-the-sun"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"surprise": 1}, "the file: unknown key 'surprise'"),
        ({"policies": []}, "policies: expected a non-empty list"),
        (
            {"policies": [{"name": "x", "targets": {}}]},
            "policies.x.targets.first_response: expected a mapping",
        ),
        (
            {"calendars": {"office": {"timezone": "Mars/Olympus", "hours": {"mon": "09:00-17:00"}}}},
            "calendars.office",
        ),
        ({"group_calendars": {"tier-2": "nowhere"}}, "group_calendars.tier-2: no calendar 'nowhere'"),
    ],
)
def test_configuration_mistakes_name_the_file_and_the_key(change: dict[str, object], message: str) -> None:
    with pytest.raises(SlaConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_sla_config({**DEFAULT_CONFIG, **change}, source="sla.yaml", desk_timezone="UTC")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("1d", "days are not accepted: write 8h"),
        ("soon", "expected a duration such as 4h"),
        ("0h", "longer than zero"),
        ("", "expected a duration"),
    ],
)
def test_targets_must_be_hours_and_minutes_of_business_time(target: str, message: str) -> None:
    policy = {**DEFAULT_CONFIG["policies"][0]}
    policy["targets"] = {
        **policy["targets"],
        "resolution": {"P1": target, "P2": "1h", "P3": "1h", "P4": "1h"},
    }
    with pytest.raises(
        SlaConfigError, match=f"sla.yaml: policies.standard.targets.resolution.P1: .*{message}"
    ):
        parse_sla_config({"policies": [policy]}, source="sla.yaml", desk_timezone="UTC")


def test_targets_accept_iso_durations_and_minutes() -> None:
    policy = {**DEFAULT_CONFIG["policies"][0]}
    policy["targets"] = {
        **policy["targets"],
        "first_response": {"P1": "PT30M", "P2": "1h30m", "P3": "90m", "P4": "PT2H"},
    }
    config = parse_sla_config({"policies": [policy]}, source="sla.yaml", desk_timezone="UTC")
    assert dict(config.policies[0].targets["first_response"]) == {
        "P1": 1800,
        "P2": 5400,
        "P3": 5400,
        "P4": 7200,
    }


def test_the_last_policy_must_match_every_ticket() -> None:
    policy = {**DEFAULT_CONFIG["policies"][0], "match": {"organisation": "acme.example"}}
    with pytest.raises(SlaConfigError, match=r"the last policy \(standard\) must match every ticket"):
        parse_sla_config({"policies": [policy]}, source="sla.yaml", desk_timezone="UTC")


def test_an_unreadable_file_is_named(settings: Settings, tmp_path: Path) -> None:
    broken = tmp_path / "sla.yaml"
    broken.write_text("policies: [unclosed\n")
    with pytest.raises(SlaConfigError, match=f"{broken}: not a readable YAML file"):
        load_sla_config(dataclasses.replace(settings, sla_config=broken))
    with pytest.raises(SlaConfigError, match="LANEDESK_SLA_CONFIG: cannot read"):
        load_sla_config(dataclasses.replace(settings, sla_config=tmp_path / "missing.yaml"))


# -- due times ---------------------------------------------------------------------------------
def test_a_p2_ticket_on_friday_evening_is_due_on_monday_not_saturday(
    session: Session, prague: Settings
) -> None:
    friday_1730 = utc(2026, 3, 6, 16, 30)  # 17:30 in Prague
    ticket = _open(session, prague, friday_1730, "P2")
    first = _clock(session, ticket, "first_response")
    assert first.due_at == utc(2026, 3, 9, 12, 0)  # Monday 13:00 Prague: 09:00 + 4 h
    assert _clock(session, ticket, "resolution").due_at == utc(2026, 3, 10, 16, 0)  # Tuesday 17:00: 16 h
    assert _wake_at(session, ticket) == first.due_at  # triage's reminder timer follows the clock
    started = session.scalars(
        select(AuditEvent.detail).where(AuditEvent.ticket_id == ticket.id, AuditEvent.action == "sla_started")
    ).all()
    assert started[0] == (
        "first_response started: due Mon 2026-03-09 13:00 CET "
        f"(policy standard, calendar {PRAGUE_DESCRIPTION})"
    )


FORTNIGHT_START = utc(2026, 3, 26, 15, 0)  # Thursday 16:00 CET
DUE = {  # priority: (first response, resolution), computed by hand on the Prague calendar
    "P1": (utc(2026, 3, 26, 16, 0), utc(2026, 3, 27, 15, 0)),  # Thu 17:00 CET; Fri 16:00 CET
    "P2": (utc(2026, 3, 27, 11, 0), utc(2026, 3, 30, 14, 0)),  # Fri 12:00 CET; Mon 16:00 CEST (DST)
    "P3": (utc(2026, 3, 27, 15, 0), utc(2026, 4, 2, 14, 0)),  # Fri 16:00 CET; Thu 16:00 CEST
    "P4": (utc(2026, 3, 30, 14, 0), utc(2026, 4, 13, 14, 0)),  # Mon 16:00 CEST; Easter skipped
}


@pytest.mark.parametrize("priority", sorted(DUE))
def test_due_times_across_a_weekend_the_summer_time_switch_and_easter(
    session: Session, prague: Settings, priority: str
) -> None:
    ticket = _open(session, prague, FORTNIGHT_START, priority)
    first, resolution = DUE[priority]
    assert (
        _clock(session, ticket, "first_response").due_at,
        _clock(session, ticket, "resolution").due_at,
    ) == (
        first,
        resolution,
    )


def test_round_the_clock_policy_for_an_enterprise_customer(session: Session, prague: Settings) -> None:
    ticket = _open(session, prague, FORTNIGHT_START, "P2", requester="cio@bigcustomer.example")
    clock = _clock(session, ticket, "resolution")
    assert (clock.policy, clock.calendar) == ("enterprise", "follow-the-sun")
    assert clock.due_at == FORTNIGHT_START + timedelta(hours=8)  # Thu 16:00 → Fri 00:00 CET on weekdays


def test_waiting_on_the_customer_gives_the_time_back_and_a_priority_change_keeps_it(
    session: Session, prague: Settings
) -> None:
    agent_user = agent(session, "tereza@desk.example", "tier-1", now=FORTNIGHT_START)
    ticket = _open(session, prague, FORTNIGHT_START, "P2")
    triage = {"category": "incident", "priority": "P2", "summary": "VPN drops hourly"}
    work(session, prague, ticket, agent_user, triage, FORTNIGHT_START)
    resolution = _clock(session, ticket, "resolution")
    assert resolution.due_at == DUE["P2"][1]

    friday_noon = utc(2026, 3, 27, 11, 0)  # 4 business hours used (Thu 1 h + Fri 3 h)
    work(session, prague, ticket, agent_user, {"outcome": "wait_customer"}, friday_noon)
    session.refresh(resolution)
    assert (resolution.state, resolution.elapsed_seconds, resolution.due_at) == ("paused", 4 * 3600, None)

    tuesday_10 = utc(2026, 3, 31, 8, 0)  # 10:00 CEST, after the weekend and the clock change
    add_customer_reply(
        session,
        prague,
        ticket_ref=ticket.number,
        sender="jana@customer.example",
        body="Still broken.",
        now=tuesday_10,
    )
    session.refresh(resolution)
    assert resolution.state == "running"
    assert resolution.due_at == utc(2026, 4, 1, 12, 0)  # 12 h left: Tue 10-17 + Wed 09-14 CEST
    assert open_task(session, ticket).element_id == "work_tier_1"
    assert _wake_at(session, ticket) == utc(2026, 4, 1, 8, 0)  # the 75 % warning: 8 h left of 12 h

    tuesday_11 = utc(2026, 3, 31, 9, 0)
    change_priority(session, prague, ticket, "P1", user=agent_user, now=tuesday_11)
    session.refresh(resolution)
    assert resolution.target_seconds == 8 * 3600 and resolution.elapsed_seconds == 4 * 3600
    assert resolution.due_at == utc(2026, 3, 31, 12, 0)  # 4 h left from Tue 10:00 CEST → 14:00
    assert _wake_at(session, ticket) == utc(2026, 3, 31, 10, 0)  # 75 % of 8 h = 6 h: 2 h left → 12:00 CEST
    actions = session.scalars(
        select(AuditEvent.action).where(AuditEvent.ticket_id == ticket.id).order_by(AuditEvent.id)
    ).all()
    assert "sla_paused" in actions and "sla_resumed" in actions and actions[-1] != "sla_breached"
    assert "sla_retargeted" in actions


def test_a_priority_change_on_a_closed_ticket_is_refused(session: Session, prague: Settings) -> None:
    from workflows.errors import Conflict

    agent_user = agent(session, "tereza@desk.example", "tier-1", now=FORTNIGHT_START)
    ticket = _open(session, prague, FORTNIGHT_START, "P2")
    instance_of(session, ticket).status = "completed"
    with pytest.raises(Conflict, match="completed"):
        change_priority(session, prague, ticket, "P1", user=agent_user, now=FORTNIGHT_START)


def test_stored_instances_keep_their_wake_time_in_step_with_the_clock_rows(
    session: Session, prague: Settings
) -> None:
    ticket = _open(session, prague, FORTNIGHT_START, "P3")
    row = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket.id))
    assert row is not None and row.next_wake_at == DUE["P3"][0]
