"""Human tasks: list the inbox, claim, and complete a task with its form data."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from engine.errors import TaskNotReady
from engine.forms import validate_submission
from engine.runtime import Functions, Instance

from . import audit
from .errors import Conflict, NotFound, PermissionDenied
from .instances import advance, lock_instance
from .models import ConversationEntry, Group, HumanTask, User
from .outbox import queue_mail
from .settings import Settings

#: A form field with this id is the agent's internal note: it goes into the conversation.
NOTE_FIELD = "note"


def list_tasks(
    session: Session, *, ticket_id: int | None = None, group: str | None = None, include_closed: bool = False
) -> list[HumanTask]:
    """Open human tasks (oldest first), optionally for one ticket or group. Never loads a workflow."""
    query = select(HumanTask).order_by(HumanTask.created_at, HumanTask.id)
    if not include_closed:
        query = query.where(HumanTask.state == "open")
    if ticket_id is not None:
        query = query.where(HumanTask.ticket_id == ticket_id)
    if group is not None:
        query = query.join(Group, HumanTask.group_id == Group.id).where(Group.slug == group)
    return list(session.scalars(query))


def may_work_on_task(user: User, task: HumanTask) -> bool:
    """Admins work on every task, others on their groups' tasks and the ones they hold."""
    return (
        user.role == "admin" or task.assignee_id == user.id or any(g.id == task.group_id for g in user.groups)
    )


def _open_task(session: Session, task_id: str, user: User) -> HumanTask:
    task = session.get(HumanTask, task_id, populate_existing=True)
    if task is None:
        raise NotFound(f"no task {task_id}")
    if not may_work_on_task(user, task):
        group = task.group.slug if task.group else "no group"
        raise PermissionDenied(f"{user.email} is not in {group}, which this task belongs to")
    if task.state != "open":
        who = session.get(User, task.completed_by_id) if task.completed_by_id else None
        by = f" by {who.email}" if who else ""
        raise Conflict(f"task “{task.name}” was already {task.state}{by}; nothing was changed")
    return task


def claim_task(session: Session, *, task_id: str, user: User, now: datetime) -> HumanTask:
    """Make ``user`` the task's assignee (only when nobody else holds it).

    A conditional UPDATE decides between two agents claiming at once: exactly one row changes.
    """
    task = _open_task(session, task_id, user)
    claimed = session.execute(
        update(HumanTask)
        .where(HumanTask.id == task.id, HumanTask.state == "open")
        .where(or_(HumanTask.assignee_id.is_(None), HumanTask.assignee_id == user.id))
        .values(assignee_id=user.id, claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(task)
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        holder = task.assignee.email if task.assignee else "someone else"
        raise Conflict(f"task “{task.name}” is already claimed by {holder}")
    audit.record(
        session,
        ticket_id=task.ticket_id,
        actor=audit.actor_of(user),
        action="task_claimed",
        now=now,
        element_id=task.element_id,
        task_id=task.id,
        detail=task.name,
    )
    return task


def release_task(
    session: Session, settings: Settings, *, task_id: str, user: User, to: User | None, now: datetime
) -> HumanTask:
    """Give a task back to its group (``to`` None) or to a colleague of that group.

    The holder may do either; with nobody holding it, anyone of the group may assign it; a
    group's lead and admins may move any task of the group. The new holder is notified.
    """
    task = _open_task(session, task_id, user)
    lead = user.role == "admin" or (task.group is not None and task.group.lead_id == user.id)
    if task.assignee_id not in (None, user.id) and not lead:
        holder = task.assignee.email if task.assignee else "someone else"
        raise Conflict(
            f"task “{task.name}” is held by {holder}; only they or the group's lead can pass it on"
        )
    if to is not None and to.role != "admin" and not any(g.id == task.group_id for g in to.groups):
        raise PermissionDenied(f"{to.email} is not in the group of task “{task.name}”")
    previous = task.assignee_id
    changed = session.execute(
        update(HumanTask)
        .where(HumanTask.id == task.id, HumanTask.state == "open")
        .where(HumanTask.assignee_id.is_(None) if previous is None else HumanTask.assignee_id == previous)
        .values(assignee_id=to.id if to else None, claimed_at=now if to else None)
        .execution_options(synchronize_session=False)
    )
    session.refresh(task)
    if changed.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(f"task “{task.name}” changed hands meanwhile; reload and try again")
    action, detail = ("task_assigned", f"{task.name} → {to.email}") if to else ("task_released", task.name)
    audit.record(
        session,
        ticket_id=task.ticket_id,
        actor=audit.actor_of(user),
        action=action,
        now=now,
        element_id=task.element_id,
        task_id=task.id,
        detail=detail,
    )
    if to is not None and to.id != user.id:
        queue_mail(
            session,
            settings,
            ticket=task.ticket,
            template="assigned",
            recipient=to.email,
            kind="agent_notification",
            now=now,
            actor=audit.actor_of(user),
        )
    return task


def complete_task(
    session: Session, settings: Settings, *, task_id: str, user: User, data: dict[str, Any], now: datetime
) -> HumanTask:
    """Complete a task with form ``data`` and run the process on, as one event.

    Raises Conflict when someone else completed (or holds) it first, PermissionDenied when
    ``user`` is not in its group, engine FormInvalid when the data fails the form — in every
    case nothing is changed.
    """
    task = _open_task(session, task_id, user)
    row = lock_instance(session, task.instance_id)
    task = _open_task(session, task_id, user)  # re-read under the lock: another agent may have won
    if task.assignee_id not in (None, user.id):
        raise Conflict(f"task “{task.name}” is claimed by {task.assignee.email if task.assignee else '?'}")
    actor = audit.actor_of(user)
    cleaned = validate_submission(task.form, data)  # the engine checks again against the diagram

    def action(instance: Instance, functions: Functions) -> tuple[dict[str, Any], list[Any]]:
        return instance.complete_task(task.id, cleaned, now=now, functions=functions)

    task.state, task.completed_at, task.completed_by_id = "completed", now, user.id
    task.assignee_id = task.assignee_id or user.id
    audit.record(
        session,
        ticket_id=task.ticket_id,
        actor=actor,
        action="task_completed",
        now=now,
        element_id=task.element_id,
        task_id=task.id,
        detail=task.name,
        data=cleaned,
    )
    note = cleaned.get(NOTE_FIELD)
    if isinstance(note, str) and note.strip():
        session.add(
            ConversationEntry(
                ticket_id=task.ticket_id, kind="note", author_id=user.id, body=note, created_at=now
            )
        )
    try:
        advance(session, settings, row, action, now=now, actor=actor)
    except TaskNotReady:
        # A deadline fell due before this completion (the next tick applies it): the agent
        # learns that plainly; the caller's rollback keeps the instance as it was.
        raise Conflict(
            f"task “{task.name}” was withdrawn by the process (a deadline passed); nothing was changed"
        ) from None
    return task
