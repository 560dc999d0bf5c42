"""Advancing workflow instances: one event at a time, persisted, projected and audited.

Every event (task completed, message delivered, timer due) goes through :func:`advance`: lock
the instance row, load the state with its pinned version, run the engine with the desk
operations bound to the ticket, offer buffered messages, then save the compacted state, the
next wake time and the human-task projection in the caller's transaction.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from engine.runtime import Functions, Instance, Step

from . import audit, sla
from .definitions import load_definition
from .errors import Conflict, NotFound
from .models import HumanTask, PendingMessage, ProcessVersion, Ticket, WorkflowInstance
from .operations import DeskOperations, group_slug
from .settings import Settings

T = TypeVar("T")
Action = Callable[[Instance, Functions], tuple[T, list[Step]]]


def start_instance(
    session: Session,
    settings: Settings,
    ticket: Ticket,
    version: ProcessVersion,
    *,
    now: datetime,
    actor: str,
) -> WorkflowInstance:
    """Start ``version`` for ``ticket`` and run it to its first wait."""
    definition = load_definition(session, version)
    ops = DeskOperations(session, settings, ticket, now=now, actor=actor, new=True)
    with session.no_autoflush:  # see advance()
        instance, _ = Instance.start(
            definition,
            data={"ticket_number": ticket.number},
            now=now,
            functions=ops.functions(),
            on_step=_auditor(session, ticket, ops, actor, now),
        )
        _retime(instance, ops, now, new=True)
    row = WorkflowInstance(ticket_id=ticket.id, process_version_id=version.id, created_at=now)
    _store(row, ticket, instance, now)
    session.add(row)
    session.flush()
    _sync_tasks(session, settings, row, instance, ops, now=now, actor=actor, new=True)
    return row


_SLA_TIMER = re.compile(r"""sla_due\(\s*["'](\w+)["']\s*(?:,\s*(?:percent\s*=\s*)?(\d+(?:\.\d+)?))?""")


def _auditor(
    session: Session, ticket: Ticket, ops: DeskOperations, actor: str, now: datetime
) -> Callable[[Step], None]:
    def on_step(step: Step) -> None:
        if step.timer is not None:
            _timer_fired(session, ticket, ops, step, now)
        audit.record(
            session,
            ticket_id=ticket.id,
            actor=actor,
            action="step",
            now=now,
            element_id=step.element_id,
            task_id=step.task_id,
            detail=f"{step.kind} “{step.name}”",
            data={"kind": step.kind, "lane": step.lane},
        )

    return on_step


def _timer_fired(session: Session, ticket: Ticket, ops: DeskOperations, step: Step, now: datetime) -> None:
    """Put a timer firing on the timeline: its due time and, for SLA timers, policy and calendar."""
    assert step.timer is not None
    data: dict[str, object] = dict(step.timer)
    detail = f"timer “{step.name}” due {step.timer.get('due') or '?'}"
    match = _SLA_TIMER.search(str(step.timer.get("expression") or ""))
    if match:
        percent = float(match.group(2) or 100)
        facts = ops.clock_facts(match.group(1), percent)
        data.update(facts)
        if percent >= 100:
            ops.record_breach(match.group(1))
        detail = (
            f"timer “{step.name}”: {facts.get('percent', 100):g}% of the {match.group(1)} target, "
            f"due {step.timer.get('due')} (policy {facts.get('policy')}, calendar {facts.get('calendar')})"
        )
    audit.record(
        session,
        ticket_id=ticket.id,
        actor=audit.TIMER,
        action="timer_fired",
        now=now,
        element_id=step.element_id,
        task_id=step.task_id,
        detail=detail,
        data=data,
    )


def _retime(instance: Instance, ops: DeskOperations, now: datetime, *, new: bool = False) -> None:
    """Timers armed with ``sla_due(...)`` follow clocks changed during this event.

    ``new``: the instance was just started, so its tasks are not written yet (they are made
    with the ticket's due time).
    """
    if ops.sla_changed:
        instance.retime_timers(now=now, functions=ops.functions(), mentioning="sla_due")
        ops.sla_changed = False
        due = ops.earliest_due()
        if due != ops.ticket.sla_due_at:  # the inbox sorts by it, on the ticket and its open tasks
            ops.ticket.sla_due_at = due
            if new:
                return
            ops.session.execute(
                update(HumanTask)
                .where(HumanTask.ticket_id == ops.ticket.id, HumanTask.state == "open")
                .values(sla_due_at=due)
                .execution_options(synchronize_session=False)
            )


def lock_instance(session: Session, instance_id: int) -> WorkflowInstance:
    """The instance row, locked for this transaction (FOR UPDATE; SQLite: BEGIN IMMEDIATE)."""
    row = session.scalar(
        select(WorkflowInstance)
        .where(WorkflowInstance.id == instance_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is None:
        raise NotFound(f"no workflow instance {instance_id}")
    return row


def advance(
    session: Session,
    settings: Settings,
    row: WorkflowInstance,
    action: Action[T],
    *,
    now: datetime,
    actor: str,
) -> T:
    """Run ``action`` on the locked instance ``row`` and persist the outcome."""
    ticket = session.get_one(Ticket, row.ticket_id)
    instance = Instance.load(load_definition(session, row.process_version), row.state)
    ops = DeskOperations(session, settings, ticket, now=now, actor=actor)
    instance.on_step = _auditor(session, ticket, ops, actor, now)
    # No autoflush while the engine runs: desk operations query (cached per event) between
    # writes, and each implicit flush would send the step's audit rows one INSERT at a time.
    with session.no_autoflush:
        result, _ = action(instance, ops.functions())
    _finish(session, settings, row, ticket, instance, ops, now=now, actor=actor)
    return result


def _finish(
    session: Session,
    settings: Settings,
    row: WorkflowInstance,
    ticket: Ticket,
    instance: Instance,
    ops: DeskOperations,
    *,
    now: datetime,
    actor: str,
) -> None:
    _offer_pending(session, row, instance, ops.functions(), now)
    with session.no_autoflush:
        _retime(instance, ops, now)
    _store(row, ticket, instance, now)
    _sync_tasks(session, settings, row, instance, ops, now=now, actor=actor)
    try:
        session.flush()
    except StaleDataError:
        raise Conflict("this ticket changed while you were working on it; reload and try again") from None


def _store(row: WorkflowInstance, ticket: Ticket, instance: Instance, now: datetime) -> None:
    row.state = instance.dump()
    wake = instance.next_wake(now)
    row.next_wake_at = None if wake is None or wake >= sla.NEVER else wake  # paused clocks never wake
    row.wake_claimed_until, row.wake_failures = None, 0
    row.status = "completed" if instance.completed else "running"
    row.error = None
    row.updated_at = ticket.updated_at = now


def _offer_pending(
    session: Session, row: WorkflowInstance, instance: Instance, functions: Functions, now: datetime
) -> None:
    """Deliver buffered messages the instance now waits for; settle them once it has ended."""
    pending = list(
        session.scalars(
            select(PendingMessage)
            .where(PendingMessage.instance_id == row.id, PendingMessage.state == "pending")
            .order_by(PendingMessage.id)
        )
    )
    progress = True
    while pending and progress:
        progress = False
        for message in list(pending):
            delivered, _ = instance.deliver_message(
                message.name, message.payload, now=now, functions=functions
            )
            if delivered:
                message.state, message.delivered_at = "delivered", now
                pending.remove(message)
                progress = True
    if instance.completed:
        for message in pending:
            message.state, message.reason = (
                "unclaimed",
                "the ticket's process had finished; nothing waits for it",
            )


def _sync_tasks(
    session: Session,
    settings: Settings,
    row: WorkflowInstance,
    instance: Instance,
    ops: DeskOperations,
    *,
    now: datetime,
    actor: str,
    new: bool = False,
) -> None:
    """Make the human_task projection match the instance's READY user tasks."""
    ready = {view.task_id: view for view in instance.user_tasks()}
    query = select(HumanTask).where(HumanTask.instance_id == row.id, HumanTask.state == "open")
    open_rows = [] if new else list(session.scalars(query))
    known = set()
    for task in open_rows:
        known.add(task.id)
        if task.id not in ready:
            task.state, task.completed_at = "cancelled", now
            audit.record(
                session,
                ticket_id=row.ticket_id,
                actor=actor,
                action="task_cancelled",
                now=now,
                element_id=task.element_id,
                task_id=task.id,
                detail=f"“{task.name}” withdrawn by the process",
            )
    for view in ready.values():
        if view.task_id in known or (not new and session.get(HumanTask, view.task_id) is not None):
            continue
        slug = group_slug(view.lane or "", settings.lane_groups)
        group = ops.find_group(slug)
        session.add(
            HumanTask(
                id=view.task_id,
                instance_id=row.id,
                ticket_id=row.ticket_id,
                element_id=view.element_id,
                name=view.name,
                lane=view.lane,
                group_id=group.id if group else None,
                form=view.form,
                state="open",
                created_at=now,
                sla_due_at=ops.ticket.sla_due_at,
            )
        )
        audit.record(
            session,
            ticket_id=row.ticket_id,
            actor=actor,
            action="task_created",
            now=now,
            element_id=view.element_id,
            task_id=view.task_id,
            detail=f"“{view.name}” for {slug or 'nobody'}",
        )


def buffer_message(
    session: Session, row: WorkflowInstance, name: str, payload: dict[str, Any], now: datetime
) -> PendingMessage:
    """Keep an inbound message for ``row`` until a catch event takes it (see :func:`advance`)."""
    message = PendingMessage(instance_id=row.id, name=name, payload=payload, state="pending", created_at=now)
    session.add(message)
    session.flush()
    return message


def mark_failed(session: Session, row: WorkflowInstance, reason: str, *, now: datetime, actor: str) -> None:
    """Record that the instance cannot advance (a script failed), with the reason, on its ticket."""
    row.status, row.error, row.updated_at = "failed", reason, now
    audit.record(
        session, ticket_id=row.ticket_id, actor=actor, action="instance_failed", now=now, detail=reason
    )
