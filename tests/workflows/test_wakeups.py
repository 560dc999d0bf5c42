"""The timer scan: claims with a lease, back-off for failures, outages caught up exactly once."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from workflows import wakeups
from workflows.app import Desk
from workflows.errors import Conflict
from workflows.models import AuditEvent, WorkflowInstance
from workflows.wakeups import LEASE, WakeFailed, claim_due, wake_due_instances, wake_or_record_failure

from .helpers import new_ticket
from .test_concurrency import race

FIRST_RESPONSE = timedelta(hours=8)  # P3, built-in round-the-clock policy


def _tickets(desk: Desk, opened: list[datetime]) -> list[int]:
    with desk.unit_of_work() as session:
        return [
            new_ticket(session, desk.settings, at, subject=f"Ticket {i}").id for i, at in enumerate(opened)
        ]


def _instance(desk: Desk, ticket_id: int) -> WorkflowInstance:
    with desk.unit_of_work(readonly=True) as session:
        row = session.scalar(select(WorkflowInstance).where(WorkflowInstance.ticket_id == ticket_id))
        assert row is not None
        return row


def _fired(desk: Desk) -> dict[int, int]:
    with desk.unit_of_work(readonly=True) as session:
        rows = session.execute(
            select(AuditEvent.ticket_id, func.count())
            .where(AuditEvent.action == "timer_fired")
            .group_by(AuditEvent.ticket_id)
        )
        return {ticket_id: count for ticket_id, count in rows}


def test_a_claimed_instance_is_not_handed_out_again_until_its_lease_ends(desk: Desk, now: datetime) -> None:
    [ticket_id] = _tickets(desk, [now])
    due = now + FIRST_RESPONSE + timedelta(minutes=1)
    instance_id = _instance(desk, ticket_id).id
    with desk.unit_of_work() as session:
        assert claim_due(session, now) == []  # nothing due yet
        assert claim_due(session, due) == [instance_id]
    with desk.unit_of_work() as session:
        assert claim_due(session, due + LEASE - timedelta(seconds=1)) == []  # still claimed
    with desk.unit_of_work() as session:  # the worker died: after the lease, the next scan retries
        assert claim_due(session, due + LEASE) == [instance_id]


def test_a_wake_clears_the_claim_and_moves_the_next_wake_time(desk: Desk, now: datetime) -> None:
    [ticket_id] = _tickets(desk, [now])
    due = now + FIRST_RESPONSE + timedelta(minutes=1)
    report = wake_due_instances(desk.sessions, desk.settings, now=lambda: due)
    assert len(report.woken) == 1 and not report.failed
    row = _instance(desk, ticket_id)
    assert row.wake_claimed_until is None and row.next_wake_at is None  # triage waits on people only
    assert _fired(desk) == {ticket_id: 1}


def test_an_outage_of_two_hours_with_50_timers_due_fires_each_exactly_once(desk: Desk, now: datetime) -> None:
    # 50 tickets whose first-response timers fall due one every two minutes while beat is down.
    tickets = _tickets(desk, [now + timedelta(minutes=2 * i) for i in range(50)])
    down_from = now + FIRST_RESPONSE - timedelta(minutes=1)
    assert wake_due_instances(desk.sessions, desk.settings, now=lambda: down_from).woken == []
    back_up = down_from + timedelta(hours=2)
    first = wake_due_instances(desk.sessions, desk.settings, now=lambda: back_up)
    second = wake_due_instances(desk.sessions, desk.settings, now=lambda: back_up + timedelta(seconds=2))
    assert (len(first.woken), len(second.woken), first.failed) == (50, 0, {})
    assert _fired(desk) == dict.fromkeys(tickets, 1)


def test_duplicate_deliveries_of_one_wake_fire_the_timer_once(desk: Desk, now: datetime) -> None:
    [ticket_id] = _tickets(desk, [now])
    instance_id = _instance(desk, ticket_id).id
    due = now + FIRST_RESPONSE + timedelta(minutes=1)

    def deliver() -> bool:
        return wake_or_record_failure(desk.sessions, desk.settings, instance_id, now=lambda: due)

    results = race(deliver, deliver, deliver)
    assert sorted(results) == [False, False, True], results
    assert _fired(desk) == {ticket_id: 1}


def test_an_instance_failing_outside_the_diagram_is_retried_with_growing_back_off(
    desk: Desk, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    [ticket_id] = _tickets(desk, [now])
    instance_id = _instance(desk, ticket_id).id
    due = now + FIRST_RESPONSE + timedelta(minutes=1)

    def conflict(*args: object, **kwargs: object) -> None:
        raise Conflict("the database said no")

    monkeypatch.setattr(wakeups, "advance", conflict)
    with pytest.raises(WakeFailed, match="the database said no"):
        wake_or_record_failure(desk.sessions, desk.settings, instance_id, now=lambda: due)
    row = _instance(desk, ticket_id)
    assert (row.status, row.wake_failures, row.wake_claimed_until) == ("running", 1, due + LEASE)
    with desk.unit_of_work() as session:
        assert claim_due(session, due + LEASE - timedelta(seconds=1)) == []
    later = due + LEASE
    with pytest.raises(WakeFailed):
        wake_or_record_failure(desk.sessions, desk.settings, instance_id, now=lambda: later)
    assert _instance(desk, ticket_id).wake_claimed_until == later + 2 * LEASE

    monkeypatch.undo()  # the cause is gone: the next wake fires and forgets the failures
    assert wake_or_record_failure(desk.sessions, desk.settings, instance_id, now=lambda: later + 3 * LEASE)
    row = _instance(desk, ticket_id)
    assert (row.wake_failures, row.wake_claimed_until) == (0, None)
    assert _fired(desk) == {ticket_id: 1}


def test_back_off_stops_growing_at_an_hour(
    desk: Desk, now: datetime, monkeypatch: pytest.MonkeyPatch
) -> None:
    [ticket_id] = _tickets(desk, [now])
    instance_id = _instance(desk, ticket_id).id
    with desk.unit_of_work() as session:
        session.get_one(WorkflowInstance, instance_id).wake_failures = 20
    monkeypatch.setattr(wakeups, "advance", lambda *a, **k: (_ for _ in ()).throw(Conflict("still broken")))
    due = now + FIRST_RESPONSE + timedelta(minutes=1)
    with pytest.raises(WakeFailed):
        wake_or_record_failure(desk.sessions, desk.settings, instance_id, now=lambda: due)
    assert _instance(desk, ticket_id).wake_claimed_until == due + wakeups.MAX_BACKOFF
