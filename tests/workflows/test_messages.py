"""Buffered messages: kept until a catch takes them, or settled with the reason."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import ScriptError
from workflows.definitions import deploy_definition
from workflows.models import AuditEvent, ConversationEntry, PendingMessage, WorkflowInstance
from workflows.settings import Settings
from workflows.tickets import add_customer_reply, open_ticket
from workflows.wakeups import wake_instance

from .helpers import TRIAGE, agent, new_ticket, work

DATA = Path(__file__).resolve().parents[1] / "data" / "workflows"


def test_a_reply_while_an_agent_works_does_not_cut_a_later_wait_short(
    session: Session, settings: Settings, now: datetime
) -> None:
    tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
    ticket = new_ticket(session, settings, now)
    work(session, settings, ticket, tereza, TRIAGE, now)
    for n in (1, 2):  # the first is caught by the task's boundary event, the second by nobody
        add_customer_reply(
            session,
            settings,
            ticket_ref=ticket.number,
            sender="jana@customer.example",
            body=f"more details {n}",
            now=now + timedelta(minutes=n),
        )
    states = [
        (m.state, m.reason) for m in session.scalars(select(PendingMessage).order_by(PendingMessage.id))
    ]
    assert states[0] == ("delivered", None)
    assert states[1][0] == "noted" and "agents were working on the ticket" in (states[1][1] or "")
    work(session, settings, ticket, tereza, {"outcome": "wait_customer"}, now + timedelta(minutes=5))
    assert ticket.status == "waiting_on_customer"  # the old reply did not wake the wait


def test_a_failing_step_keeps_the_reply_and_marks_the_instance_failed(
    session: Session, settings: Settings, now: datetime
) -> None:
    deploy_definition(
        session, settings, xml=(DATA / "fragile.bpmn").read_bytes(), filename="fragile.bpmn", now=now
    )
    ticket = open_ticket(
        session,
        settings,
        requester="jana@customer.example",
        subject="Fragile",
        body="b",
        now=now,
        process_id="fragile",
    )
    add_customer_reply(
        session,
        settings,
        ticket_ref=ticket.number,
        sender="jana@customer.example",
        body="please keep me",
        now=now,
    )
    instance = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket.id))
    assert instance is not None and instance.status == "failed"
    assert "broken_script" in (instance.error or "") and "on-fire" in (instance.error or "")
    bodies = [
        e.body
        for e in session.scalars(select(ConversationEntry).where(ConversationEntry.ticket_id == ticket.id))
    ]
    assert bodies == ["b", "please keep me"]
    message = session.scalar(select(PendingMessage))
    assert message is not None and message.state == "pending"
    steps = session.scalars(select(AuditEvent.element_id).where(AuditEvent.action == "step")).all()
    assert "broken_script" not in steps and "wait_reply" not in steps  # the failed attempt left no trace
    assert "instance_failed" in session.scalars(select(AuditEvent.action)).all()


def test_a_message_nobody_waits_for_stays_buffered_until_a_catch_takes_it(
    session: Session, settings: Settings, now: datetime
) -> None:
    deploy_definition(
        session, settings, xml=(DATA / "buffered.bpmn").read_bytes(), filename="buffered.bpmn", now=now
    )
    ticket = open_ticket(
        session,
        settings,
        requester="jana@customer.example",
        subject="Buffered",
        body="b",
        now=now,
        process_id="buffered",
    )
    add_customer_reply(
        session,
        settings,
        ticket_ref=ticket.number,
        sender="jana@customer.example",
        body="early reply",
        now=now + timedelta(minutes=10),
    )
    message = session.scalar(select(PendingMessage))
    assert message is not None and message.state == "pending" and ticket.status == "new"
    instance = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket.id))
    assert instance is not None
    assert wake_instance(session, settings, instance.id, now=now + timedelta(hours=1, seconds=1))
    assert (message.state, ticket.status, instance.status) == ("delivered", "open", "completed")


def test_a_failed_process_can_be_retried_once_its_cause_is_fixed(session: Session, settings: Settings,
                                                                 now: datetime) -> None:  # fmt: skip
    from workflows.errors import Conflict
    from workflows.wakeups import retry_instance

    deploy_definition(
        session, settings, xml=(DATA / "fragile.bpmn").read_bytes(), filename="fragile.bpmn", now=now
    )
    ticket = open_ticket(session, settings, requester="jana@customer.example", subject="Fragile", body="b",
                         now=now, process_id="fragile")  # fmt: skip
    add_customer_reply(session, settings, ticket_ref=ticket.number, sender="jana@customer.example",
                       body="please keep me", now=now)  # fmt: skip
    instance = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket.id))
    assert instance is not None and instance.status == "failed"
    # Still broken: the retry fails the same way and changes nothing.
    with pytest.raises(ScriptError, match="on-fire"), session.begin_nested():
        retry_instance(session, settings, instance.id, now=now, actor="user:admin@desk.example")
    session.refresh(instance)
    assert instance.status == "failed"
    with pytest.raises(Conflict, match="not failed"):
        instance.status = "running"
        retry_instance(session, settings, instance.id, now=now, actor="user:admin@desk.example")


def test_a_retried_process_runs_on_once_the_cause_is_gone(
    session: Session, settings: Settings, now: datetime
) -> None:
    from workflows.models import Group
    from workflows.wakeups import retry_instance

    xml = (DATA / "needs_group.bpmn").read_bytes()
    deploy_definition(session, settings, xml=xml, filename="needs_group.bpmn", now=now)
    ticket = open_ticket(session, settings, requester="jana@customer.example", subject="Night", body="b",
                         now=now, process_id="needs_group")  # fmt: skip
    add_customer_reply(session, settings, ticket_ref=ticket.number, sender="jana@customer.example",
                       body="help at night", now=now)  # fmt: skip
    instance = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket.id))
    assert instance is not None and instance.status == "failed" and "night-shift" in (instance.error or "")
    session.add(Group(slug="night-shift", name="Night shift"))
    session.flush()
    retry_instance(session, settings, instance.id, now=now, actor="user:admin@desk.example")
    assert (instance.status, instance.error) == ("completed", None)
    assert ticket.group is not None and ticket.group.slug == "night-shift"
    message = session.scalar(select(PendingMessage))
    assert message is not None and message.state == "delivered"
