"""Small builders shared by the workflow tests."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from workflows.models import AuditEvent, HumanTask, Ticket, User
from workflows.settings import Settings
from workflows.tickets import open_ticket
from workflows.users import add_user
from workflows.worklist import complete_task

TRIAGE = {"category": "incident", "priority": "P2", "summary": "Login page rejects every password"}


def agent(session: Session, email: str, *groups: str, role: str = "agent", now: datetime) -> User:
    return add_user(session, email=email, role=role, groups=list(groups), now=now)


def new_ticket(session: Session, settings: Settings, now: datetime, subject: str = "Cannot log in") -> Ticket:
    return open_ticket(
        session,
        settings,
        requester="jana@customer.example",
        subject=subject,
        body="The login page says my password is wrong.",
        now=now,
    )


def open_task(session: Session, ticket: Ticket) -> HumanTask:
    tasks = list(
        session.scalars(select(HumanTask).where(HumanTask.ticket_id == ticket.id, HumanTask.state == "open"))
    )
    assert len(tasks) == 1, [t.element_id for t in tasks]
    return tasks[0]


def work(
    session: Session, settings: Settings, ticket: Ticket, user: User, data: dict[str, Any], now: datetime
) -> str:
    """Complete the ticket's only open task; returns that task's element id."""
    task = open_task(session, ticket)
    complete_task(session, settings, task_id=task.id, user=user, data=data, now=now)
    return task.element_id


def actions(session: Session, ticket: Ticket) -> list[str]:
    return list(
        session.scalars(
            select(AuditEvent.action).where(AuditEvent.ticket_id == ticket.id).order_by(AuditEvent.id)
        )
    )
