"""The inbox revision: one more for every committed change to what an inbox shows, none otherwise."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, update

from workflows import audit
from workflows.app import Desk
from workflows.inbox import inbox_revision
from workflows.models import InboxRevision, Ticket

from ..conftest import MONDAY_9
from .helpers import new_ticket


def revision(desk: Desk) -> int | None:
    with desk.unit_of_work(readonly=True) as session:
        return inbox_revision(session)


def test_it_grows_once_per_transaction_that_changes_a_ticket(desk: Desk) -> None:
    before = revision(desk)
    assert before is not None
    with desk.unit_of_work() as session:
        ticket = new_ticket(session, desk.settings, MONDAY_9)
        session.flush()
        ticket.subject = "Changed in the same transaction"
    assert revision(desk) == before + 1

    with desk.unit_of_work() as session:
        session.execute(update(Ticket).values(priority="P1"))  # no flush: a statement
    assert revision(desk) == before + 2


def test_reads_and_changes_elsewhere_leave_it_alone(desk: Desk) -> None:
    with desk.unit_of_work() as session:
        ticket_id = new_ticket(session, desk.settings, MONDAY_9).id
    before = revision(desk)

    with desk.unit_of_work() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        audit.record(session, ticket_id=ticket_id, actor="system", action="noted", now=MONDAY_9)
    with desk.unit_of_work(readonly=True) as session:
        list(session.scalars(select(Ticket)))

    assert revision(desk) == before


def test_a_rolled_back_change_does_not_count(desk: Desk) -> None:
    with desk.unit_of_work() as session:
        ticket_id = new_ticket(session, desk.settings, MONDAY_9).id
    before = revision(desk)

    with pytest.raises(RuntimeError), desk.unit_of_work() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        ticket.subject = "Never"
        session.flush()
        raise RuntimeError("the step failed")
    with desk.unit_of_work() as session:  # the next transaction starts clean
        audit.record(session, ticket_id=ticket_id, actor="system", action="noted", now=MONDAY_9)

    assert revision(desk) == before


def test_a_missing_row_reads_as_none_and_the_next_change_restores_it(desk: Desk) -> None:
    with desk.unit_of_work() as session:
        session.execute(delete(InboxRevision))
    assert revision(desk) is None

    with desk.unit_of_work() as session:
        new_ticket(session, desk.settings, MONDAY_9)

    assert revision(desk) == 1
