"""Escalation tiers of the bundled lifecycle, through the desk: 75 % warn, 100 % Tier 2, 150 % Tier 3.

Built-in policy (round the clock): a P2 ticket's resolution target is 24 h, so the warning is
due 18 h after triage, Tier 2 takes over at 24 h and Tier 3 at 36 h.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from workflows.models import AuditEvent, HumanTask, OutboxMessage, Ticket, User, WorkflowInstance
from workflows.settings import Settings
from workflows.users import add_user
from workflows.wakeups import wake_instance
from workflows.worklist import claim_task

from .helpers import TRIAGE, agent, new_ticket, open_task, work

SECOND = timedelta(seconds=1)


def _triaged_with_leads(session: Session, settings: Settings, now: datetime) -> tuple[User, Ticket]:
    """Tereza (Tier 1) has triaged a P2 ticket; Lukas leads Tier 2, Eva Tier 3."""
    add_user(session, email="lukas@desk.example", role="agent", groups=[], lead_of=["tier-2"], now=now)
    add_user(session, email="eva@desk.example", role="agent", groups=[], lead_of=["tier-3"], now=now)
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    ticket = new_ticket(session, settings, now)
    work(session, settings, ticket, tereza, TRIAGE, now)
    return tereza, ticket


def _instance(session: Session, ticket: Ticket) -> WorkflowInstance:
    row = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket.id))
    assert row is not None
    return row


def _mail(session: Session, ticket: Ticket) -> list[tuple[str, str]]:
    rows = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.ticket_id == ticket.id, OutboxMessage.kind == "agent_notification")
        .order_by(OutboxMessage.id)
    )
    return [(m.template, m.recipient) for m in rows]


def _timeline(session: Session, ticket: Ticket, action: str) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.ticket_id == ticket.id, AuditEvent.action == action)
    return list(session.scalars(query.order_by(AuditEvent.id)))


def test_a_ticket_climbs_the_tiers_as_its_resolution_target_passes(
    session: Session, settings: Settings, now: datetime
) -> None:
    tereza, ticket = _triaged_with_leads(session, settings, now)
    tier_1 = open_task(session, ticket)
    claim_task(session, task_id=tier_1.id, user=tereza, now=now)
    row = _instance(session, ticket)
    assert row.next_wake_at == now + timedelta(hours=18)

    # 75 %: the assignee is warned; the work stays with her (non-interrupting).
    assert wake_instance(session, settings, row.id, now=now + timedelta(hours=18) + SECOND)
    assert open_task(session, ticket).id == tier_1.id
    assert _mail(session, ticket)[-1] == ("sla_warning", "tereza@desk.example")
    [warning] = _timeline(session, ticket, "timer_fired")
    assert warning.element_id == "work_tier_1_resolution_warning"
    assert warning.data["percent"] == 75 and warning.data["policy"] == "standard"
    assert warning.data["due"] == (now + timedelta(hours=18)).isoformat()
    assert "75% of the resolution target" in warning.detail and "calendar 24x7" in warning.detail
    assert row.next_wake_at == now + timedelta(hours=24)

    # 100 %: the Tier 1 task is withdrawn and Tier 2 has it; its lead is told.
    assert wake_instance(session, settings, row.id, now=now + timedelta(hours=24) + SECOND)
    assert session.get_one(HumanTask, tier_1.id).state == "cancelled"
    tier_2 = open_task(session, ticket)
    assert (tier_2.element_id, tier_2.group.slug if tier_2.group else None) == ("work_tier_2", "tier-2")
    assert (ticket.status, ticket.group.slug if ticket.group else None) == ("escalated", "tier-2")
    assert _mail(session, ticket)[-1] == ("escalated", "lukas@desk.example")
    assert _timeline(session, ticket, "escalated")[-1].data["reason"] == "resolution target reached"
    assert row.next_wake_at == now + timedelta(hours=36)

    # 150 %: on to Tier 3 and its lead (the manager).
    assert wake_instance(session, settings, row.id, now=now + timedelta(hours=36) + SECOND)
    assert open_task(session, ticket).element_id == "work_tier_3"
    assert _mail(session, ticket)[-1] == ("escalated", "eva@desk.example")
    fired = [e.element_id for e in _timeline(session, ticket, "timer_fired")]
    assert fired == [
        "work_tier_1_resolution_warning",
        "work_tier_1_resolution_due",
        "work_tier_2_resolution_overdue",
    ]
    assert row.next_wake_at is None  # Tier 3 has no timer; the clock runs on to the report


def test_an_agent_escalation_takes_the_same_path_and_tells_the_lead(
    session: Session, settings: Settings, now: datetime
) -> None:
    tereza, ticket = _triaged_with_leads(session, settings, now)
    work(session, settings, ticket, tereza, {"outcome": "escalate"}, now + timedelta(hours=1))
    assert open_task(session, ticket).element_id == "work_tier_2"
    assert _mail(session, ticket) == [("escalated", "lukas@desk.example")]
    assert _timeline(session, ticket, "escalated")[-1].data["reason"] == "escalated by agent"
    steps = [e.element_id for e in _timeline(session, ticket, "step")]
    assert (
        steps[-4:] == ["agent_escalates", "to_escalation", "escalate", "to_routing"][-4:]
        or "escalate" in steps
    )


def test_a_group_without_a_lead_has_every_member_told(
    session: Session, settings: Settings, now: datetime
) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    agent(session, "tomas@desk.example", "tier-2", now=now)
    agent(session, "tina@desk.example", "tier-2", now=now)
    ticket = new_ticket(session, settings, now)
    work(session, settings, ticket, tereza, TRIAGE, now)
    work(session, settings, ticket, tereza, {"outcome": "escalate"}, now)
    assert sorted(_mail(session, ticket)) == [
        ("escalated", "tina@desk.example"),
        ("escalated", "tomas@desk.example"),
    ]
    assert _timeline(session, ticket, "notification_fallback")
