"""One event at a time per instance, with real threads and real transactions."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from workflows.app import Desk
from workflows.errors import Conflict
from workflows.inbound import Envelope, Stored, store_raw
from workflows.instances import lock_instance
from workflows.models import AuditEvent, HumanTask, MailMessage, WorkflowInstance
from workflows.tickets import instance_of
from workflows.users import get_user
from workflows.wakeups import wake_due_instances
from workflows.worklist import claim_task, complete_task

from .helpers import TRIAGE, agent, new_ticket, open_task


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls on threads released together; each result is a value or the exception."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int, call: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[i] = call()
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def _setup(desk: Desk, now: datetime) -> tuple[int, str]:
    with desk.unit_of_work() as session:
        agent(session, "tereza@desk.example", "tier-1", now=now)
        agent(session, "lukas@desk.example", "tier-1", now=now)
        ticket = new_ticket(session, desk.settings, now)
        return ticket.id, open_task(session, ticket).id


def test_two_agents_completing_the_same_task_one_wins_the_other_gets_a_conflict(
    desk: Desk, now: datetime
) -> None:
    ticket_id, task_id = _setup(desk, now)
    with desk.unit_of_work() as session:
        before = session.scalar(
            select(WorkflowInstance.revision).where(WorkflowInstance.ticket_id == ticket_id)
        )

    def complete_as(email: str) -> str:
        with desk.unit_of_work() as session:
            user = get_user(session, email)
            return complete_task(session, desk.settings, task_id=task_id, user=user, data=TRIAGE, now=now).id

    results = race(lambda: complete_as("tereza@desk.example"), lambda: complete_as("lukas@desk.example"))
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "str"]
    conflict = next(r for r in results if isinstance(r, Conflict))
    assert "already completed" in str(conflict)
    with desk.unit_of_work() as session:
        instance = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket_id))
        assert instance is not None and instance.revision == (before or 0) + 1
        tasks = session.scalars(
            select(HumanTask)
            .where(HumanTask.ticket_id == ticket_id)
            .order_by(HumanTask.created_at, HumanTask.element_id)
        ).all()
        assert [(t.element_id, t.state) for t in tasks] == [("triage", "completed"), ("work_tier_1", "open")]
        completions = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "task_completed")
        )
        assert completions == 1


def test_many_workers_waking_the_same_due_instances_fire_each_timer_once(desk: Desk, now: datetime) -> None:
    with desk.unit_of_work() as session:
        tereza = agent(session, "tereza@desk.example", "tier-1", now=now)
        tickets = []
        for i in range(4):
            ticket = new_ticket(session, desk.settings, now, subject=f"Ticket {i}")
            complete_task(
                session,
                desk.settings,
                task_id=open_task(session, ticket).id,
                user=tereza,
                data=TRIAGE,
                now=now,
            )
            tickets.append(ticket.id)
    breach = now + timedelta(hours=25)  # every Tier 1 resolution timer (P2: 24 h) is overdue

    def worker() -> int:
        return len(wake_due_instances(desk.sessions, desk.settings, now=lambda: breach).woken)

    woken = race(worker, worker, worker)
    assert all(isinstance(w, int) for w in woken), woken
    assert sum(woken) == 4
    with desk.unit_of_work() as session:
        escalations = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "escalated")
        )
        assert escalations == 4
        for ticket_id in tickets:
            row = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket_id))
            assert row is not None
            assert lock_instance(session, row.id).status == "running"


def test_a_timer_that_fell_due_while_everything_was_down_fires_once_on_restart(
    desk: Desk, now: datetime
) -> None:
    ticket_id, _ = _setup(desk, now)
    back_up = now + timedelta(days=30)
    first = wake_due_instances(desk.sessions, desk.settings, now=lambda: back_up)
    second = wake_due_instances(desk.sessions, desk.settings, now=lambda: back_up)
    assert (len(first.woken), len(second.woken)) == (1, 0)
    with desk.unit_of_work() as session:
        notified = session.scalars(
            select(AuditEvent.element_id).where(
                AuditEvent.ticket_id == ticket_id,
                AuditEvent.action == "step",
                AuditEvent.element_id == "triage_first_response_due",
            )
        ).all()
        assert notified == ["triage_first_response_due"]
        assert instance_of(session, session.get_one(_ticket_model(), ticket_id)).status == "running"


def _ticket_model() -> Any:
    from workflows.models import Ticket

    return Ticket


def test_two_agents_claiming_the_same_task_at_once_one_gets_it(desk: Desk, now: datetime) -> None:
    _, task_id = _setup(desk, now)

    def claim_as(email: str) -> str:
        with desk.unit_of_work() as session:
            return claim_task(session, task_id=task_id, user=get_user(session, email), now=now).id

    results = race(lambda: claim_as("tereza@desk.example"), lambda: claim_as("lukas@desk.example"))
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "str"]
    with desk.unit_of_work() as session:
        task = session.get_one(HumanTask, task_id)
        winner = "tereza@desk.example" if isinstance(results[0], str) else "lukas@desk.example"
        assert task.assignee is not None and task.assignee.email == winner
        claims = session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "task_claimed")
        )
        assert claims == 1


def test_the_same_bytes_stored_by_two_connections_at_once_make_one_row(desk: Desk, now: datetime) -> None:
    # An MTA retrying while the first delivery is still committing: the second INSERT waits for
    # the first transaction and then finds the row (no unique-key error, no second message).
    raw = b"From: jana@customer.example\r\nSubject: Twice\r\nMessage-ID: <twice@c>\r\n\r\nHello\r\n"
    first_stored, release = threading.Event(), threading.Event()

    def first() -> Stored:
        with desk.unit_of_work() as session:
            stored = store_raw(session, raw, Envelope("smtp"), now=now)
            first_stored.set()
            release.wait(10)
            return stored

    def second() -> Stored:
        first_stored.wait(10)
        threading.Timer(0.3, release.set).start()  # let the second INSERT reach the lock first
        with desk.unit_of_work() as session:
            return store_raw(session, raw, Envelope("lmtp"), now=now)

    a, b = race(first, second)

    assert isinstance(a, Stored) and isinstance(b, Stored), (a, b)
    assert (a.duplicate, b.duplicate) == (False, True)
    assert a.id == b.id
    with desk.unit_of_work(readonly=True) as session:
        assert session.scalar(select(func.count()).select_from(MailMessage)) == 1
