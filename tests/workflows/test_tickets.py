"""A ticket's life through the services, on a real database (SQLite or PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import FormInvalid
from workflows.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from workflows.models import (
    ConversationEntry,
    OutboxMessage,
    PendingMessage,
    SlaClock,
    WorkflowInstance,
)
from workflows.settings import Settings
from workflows.tickets import add_customer_reply, open_ticket, ticket_view
from workflows.wakeups import wake_instance
from workflows.worklist import claim_task, complete_task, list_tasks

from .helpers import TRIAGE, actions, agent, new_ticket, open_task, work


def test_opening_a_ticket_persists_an_instance_waiting_at_tier_1_triage(
    session: Session, settings: Settings, now: datetime
) -> None:
    ticket = new_ticket(session, settings, now)
    task = open_task(session, ticket)
    assert (task.element_id, task.name, task.group.slug if task.group else None) == (
        "triage",
        "Triage",
        "tier-1",
    )
    assert [f["id"] for f in task.form] == ["category", "priority", "summary"]
    instance = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket.id))
    assert instance is not None and instance.status == "running" and instance.revision == 1
    assert instance.next_wake_at == now + timedelta(hours=8)  # P3 first-response target
    assert ticket.status == "new"
    mail = session.scalars(select(OutboxMessage).where(OutboxMessage.ticket_id == ticket.id)).all()
    assert [(m.template, m.recipient, m.state) for m in mail] == [
        ("acknowledgement", "jana@customer.example", "queued")
    ]
    assert actions(session, ticket)[:3] == ["ticket_opened", "step", "step"]


def test_a_ticket_walks_from_triage_to_closed(session: Session, settings: Settings, now: datetime) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    ticket = new_ticket(session, settings, now)
    assert work(session, settings, ticket, tereza, TRIAGE, now) == "triage"
    assert (ticket.status, ticket.priority, ticket.category) == ("open", "P2", "incident")
    assert (
        work(session, settings, ticket, tereza, {"outcome": "resolve", "note": "reset"}, now) == "work_tier_1"
    )
    assert ticket.status == "resolved"
    instance = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket.id))
    assert instance is not None
    week_later = now + timedelta(days=7, minutes=1)
    assert wake_instance(session, settings, instance.id, now=week_later)
    assert ticket.status == "closed" and instance.status == "completed" and instance.next_wake_at is None
    view = ticket_view(session, settings, f"LD-{ticket.number}")
    assert view.open_tasks == []
    assert [c.state for c in view.sla] == ["met", "met"]
    templates = [
        m.template for m in session.scalars(select(OutboxMessage).where(OutboxMessage.ticket_id == ticket.id))
    ]
    assert templates == ["acknowledgement", "resolved"]


def test_waiting_on_the_customer_pauses_the_clock_and_a_reply_resumes_it(
    session: Session, settings: Settings, now: datetime
) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    ticket = new_ticket(session, settings, now)
    work(session, settings, ticket, tereza, TRIAGE, now)
    work(session, settings, ticket, tereza, {"outcome": "wait_customer"}, now)
    assert ticket.status == "waiting_on_customer"
    later = now + timedelta(hours=5)
    add_customer_reply(
        session,
        settings,
        ticket_ref=ticket.number,
        sender="jana@customer.example",
        body="Here is the screenshot.",
        now=later,
    )
    assert ticket.status == "open"
    assert open_task(session, ticket).element_id == "work_tier_1"
    clock = session.scalar(
        select(SlaClock).where(SlaClock.ticket_id == ticket.id, SlaClock.name == "resolution")
    )
    assert clock is not None and clock.due_at == now + timedelta(hours=24 + 5)  # P2 target + 5 h given back
    message = session.scalar(select(PendingMessage))
    assert message is not None and message.state == "delivered"


def test_no_answer_sends_a_reminder_and_then_closes_the_ticket(
    session: Session, settings: Settings, now: datetime
) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    ticket = new_ticket(session, settings, now)
    work(session, settings, ticket, tereza, TRIAGE, now)
    work(session, settings, ticket, tereza, {"outcome": "wait_customer"}, now)
    instance = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket.id))
    assert instance is not None
    assert not wake_instance(session, settings, instance.id, now=now + timedelta(days=2))  # not due yet
    assert wake_instance(session, settings, instance.id, now=now + timedelta(days=3, minutes=1))
    assert wake_instance(session, settings, instance.id, now=now + timedelta(days=7, minutes=2))
    templates = [
        m.template for m in session.scalars(select(OutboxMessage).where(OutboxMessage.ticket_id == ticket.id))
    ]
    assert templates == ["acknowledgement", "reminder", "auto_closed"]
    assert ticket.status == "closed"


def test_escalation_moves_the_ticket_through_the_tiers(
    session: Session, settings: Settings, now: datetime
) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    lukas = agent(session, "lukas@desk.example", "tier-2", now=now)
    eva = agent(session, "eva@desk.example", "tier-3", now=now)
    ticket = new_ticket(session, settings, now)
    work(session, settings, ticket, tereza, TRIAGE, now)
    work(session, settings, ticket, tereza, {"outcome": "escalate"}, now)
    task = open_task(session, ticket)
    assert (task.element_id, task.group.slug if task.group else None) == ("work_tier_2", "tier-2")
    assert ticket.status == "escalated"
    with pytest.raises(PermissionDenied, match="not in tier-2"):
        complete_task(session, settings, task_id=task.id, user=tereza, data={"outcome": "resolve"}, now=now)
    work(session, settings, ticket, lukas, {"outcome": "escalate"}, now)
    assert open_task(session, ticket).element_id == "work_tier_3"
    work(session, settings, ticket, eva, {"outcome": "resolve"}, now)
    assert ticket.status == "resolved"


def test_completing_a_task_whose_deadline_passed_is_refused_plainly(
    session: Session, settings: Settings, now: datetime
) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    ticket = new_ticket(session, settings, now)
    work(session, settings, ticket, tereza, TRIAGE, now)
    task = open_task(session, ticket)
    late = now + timedelta(hours=25)  # the P2 resolution timer fell due; no tick has run yet
    with pytest.raises(Conflict, match="withdrawn by the process"), session.begin_nested():
        complete_task(session, settings, task_id=task.id, user=tereza, data={"outcome": "resolve"}, now=late)
    session.refresh(task)
    assert task.state == "open"


def test_a_reply_to_a_resolved_ticket_reopens_it(session: Session, settings: Settings, now: datetime) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    ticket = new_ticket(session, settings, now)
    work(session, settings, ticket, tereza, TRIAGE, now)
    work(session, settings, ticket, tereza, {"outcome": "resolve"}, now)
    add_customer_reply(
        session,
        settings,
        ticket_ref=f"LD-{ticket.number}",
        sender="jana@customer.example",
        body="It broke again.",
        now=now + timedelta(days=2),
    )
    assert ticket.status == "open"
    assert open_task(session, ticket).element_id == "work_tier_1"


def test_a_reply_to_a_closed_ticket_is_kept_with_the_reason(
    session: Session, settings: Settings, now: datetime
) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    ticket = new_ticket(session, settings, now)
    work(session, settings, ticket, tereza, TRIAGE, now)
    work(session, settings, ticket, tereza, {"outcome": "resolve"}, now)
    instance = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket.id))
    assert instance is not None
    wake_instance(session, settings, instance.id, now=now + timedelta(days=8))
    add_customer_reply(
        session,
        settings,
        ticket_ref=ticket.number,
        sender="jana@customer.example",
        body="Thanks!",
        now=now + timedelta(days=9),
    )
    message = session.scalar(select(PendingMessage))
    assert message is not None and message.state == "unclaimed" and "finished" in (message.reason or "")
    bodies = [
        e.body
        for e in session.scalars(select(ConversationEntry).where(ConversationEntry.ticket_id == ticket.id))
    ]
    assert bodies[-1] == "Thanks!"


def test_a_wish_goes_to_engineering(session: Session, settings: Settings, now: datetime) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    ticket = new_ticket(session, settings, now, subject="Please add dark mode")
    work(session, settings, ticket, tereza, {**TRIAGE, "category": "wish", "priority": "P4"}, now)
    task = open_task(session, ticket)
    assert (task.element_id, task.group.slug if task.group else None) == ("review_wish", "engineering")
    assert [t.id for t in list_tasks(session, group="engineering")] == [task.id]


def test_bad_form_data_is_refused_and_changes_nothing(
    session: Session, settings: Settings, now: datetime
) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    ticket = new_ticket(session, settings, now)
    task = open_task(session, ticket)
    instance = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket.id))
    assert instance is not None
    before = (instance.state, instance.revision)
    with pytest.raises(FormInvalid) as caught, session.begin_nested():
        complete_task(
            session, settings, task_id=task.id, user=tereza, data={"category": "spam", "priority": 2}, now=now
        )
    assert caught.value.errors == {
        "category": "must be one of: question, incident, request, wish",
        "priority": "must be one of: P1, P2, P3, P4",
        "summary": "is required",
    }
    session.refresh(instance)
    session.refresh(task)
    assert (instance.state, instance.revision) == before and task.state == "open"


def test_completing_a_task_twice_is_a_conflict(session: Session, settings: Settings, now: datetime) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    lukas = agent(session, "lukas@desk.example", "tier-1", now=now)
    ticket = new_ticket(session, settings, now)
    task = open_task(session, ticket)
    complete_task(session, settings, task_id=task.id, user=tereza, data=TRIAGE, now=now)
    with pytest.raises(Conflict, match=r"already completed by tereza@desk\.example"):
        complete_task(session, settings, task_id=task.id, user=lukas, data=TRIAGE, now=now)


def test_a_claimed_task_belongs_to_its_claimer(session: Session, settings: Settings, now: datetime) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    lukas = agent(session, "lukas@desk.example", "tier-1", now=now)
    ticket = new_ticket(session, settings, now)
    task = open_task(session, ticket)
    claim_task(session, task_id=task.id, user=tereza, now=now)
    with pytest.raises(Conflict, match=r"claimed by tereza@desk\.example"):
        claim_task(session, task_id=task.id, user=lukas, now=now)
    with pytest.raises(Conflict, match=r"claimed by tereza@desk\.example"):
        complete_task(session, settings, task_id=task.id, user=lukas, data=TRIAGE, now=now)


@pytest.mark.parametrize("ref", ["LD-999999", "LD-0", "nonsense", "42"])
def test_a_reply_for_a_ticket_that_does_not_exist_is_refused(
    session: Session, settings: Settings, now: datetime, ref: str
) -> None:
    with pytest.raises(NotFound, match="no ticket"):
        add_customer_reply(session, settings, ticket_ref=ref, sender="x@customer.example", body="?", now=now)
    assert session.scalar(select(PendingMessage)) is None


def test_an_unknown_process_or_a_bad_address_opens_nothing(
    session: Session, settings: Settings, now: datetime
) -> None:
    with pytest.raises(NotFound, match="no deployed process 'nope'"):
        open_ticket(
            session, settings, requester="a@b.example", subject="s", body="b", now=now, process_id="nope"
        )
    with pytest.raises(InvalidInput, match="not an e-mail address"):
        open_ticket(session, settings, requester="not-an-address", subject="s", body="b", now=now)
    with pytest.raises(InvalidInput, match="needs a subject"):
        open_ticket(session, settings, requester="a@b.example", subject="   ", body="b", now=now)
    with pytest.raises(NotFound, match="no task"):
        complete_task(
            session,
            settings,
            task_id="00000000-0000-0000-0000-000000000000",
            user=agent(session, "t@desk.example", "tier-1", now=now),
            data={},
            now=now,
        )


def test_the_audit_keeps_the_submitted_form_and_a_note_becomes_an_internal_note(
    session: Session, settings: Settings, now: datetime
) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    ticket = new_ticket(session, settings, now)
    work(session, settings, ticket, tereza, TRIAGE, now)
    work(session, settings, ticket, tereza, {"outcome": "wait_customer", "note": "Customer is on VPN X"}, now)
    view = ticket_view(session, settings, ticket.number)
    completed = [e.data for e in view.timeline if e.action == "task_completed"]
    assert completed[0] == TRIAGE
    assert completed[1]["outcome"] == "wait_customer" and completed[1]["note"] == "Customer is on VPN X"
    notes = [(e.kind, e.body, e.author_id) for e in view.conversation if e.kind == "note"]
    assert notes == [("note", "Customer is on VPN X", tereza.id)]


def test_a_stranger_cannot_speak_on_someone_elses_ticket(
    session: Session, settings: Settings, now: datetime
) -> None:
    ticket = new_ticket(session, settings, now)
    with pytest.raises(PermissionDenied, match="not the requester"):
        add_customer_reply(session, settings, ticket_ref=ticket.number, sender="mallory@evil.example",
                           body="reopen!", now=now)  # fmt: skip
    assert session.scalar(select(PendingMessage)) is None
    inbound = session.scalars(select(ConversationEntry).where(ConversationEntry.ticket_id == ticket.id)).all()
    assert len(inbound) == 1


def test_only_owners_and_admins_deploy(session: Session, settings: Settings, now: datetime) -> None:
    from workflows.definitions import deploy_definition

    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    xml = (settings.bpmn_dir / "ticket_lifecycle.bpmn").read_bytes()
    with pytest.raises(PermissionDenied, match="only process owners and admins deploy"):
        deploy_definition(session, settings, xml=xml, filename="t.bpmn", now=now, actor=tereza)
    owner = agent(session, "owner@desk.example", role="owner", now=now)
    version, created = deploy_definition(session, settings, xml=xml, filename="t.bpmn", now=now, actor=owner)
    assert (version.version, created) == (1, False)
