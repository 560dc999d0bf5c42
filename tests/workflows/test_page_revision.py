"""The ticket page revision: one more for every committed change to what only a ticket page
shows (row 2), none for reads, rolled-back changes or changes the inbox revision counts alone."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, event, select, update

from workflows import audit
from workflows.app import Desk
from workflows.models import CannedResponse, InboxRevision, OutboxMessage, Ticket
from workflows.page_revision import PAGE_ROW, page_revisions

from ..conftest import MONDAY_9
from .helpers import new_ticket


def revisions(desk: Desk) -> tuple[int, int] | None:
    with desk.unit_of_work(readonly=True) as session:
        return page_revisions(session)


def test_an_audit_row_alone_counts_once_in_row_2_only(desk: Desk) -> None:
    with desk.unit_of_work() as session:
        ticket_id = new_ticket(session, desk.settings, MONDAY_9).id
    before = revisions(desk)
    assert before is not None

    with desk.unit_of_work() as session:  # journaled, written by the commit itself
        audit.record(session, ticket_id=ticket_id, actor="system", action="noted", now=MONDAY_9)
        audit.record(session, ticket_id=ticket_id, actor="system", action="noted again", now=MONDAY_9)

    assert revisions(desk) == (before[0], before[1] + 1)


def test_statements_and_flushes_on_page_tables_count(desk: Desk) -> None:
    before = revisions(desk)
    assert before is not None
    with desk.unit_of_work() as session:
        session.add(CannedResponse(title="Thanks", body="Thank you.", created_at=MONDAY_9))
    with desk.unit_of_work() as session:
        session.execute(update(OutboxMessage).values(state="sent"))  # no row: still a write

    assert revisions(desk) == (before[0], before[1] + 2)


def test_reads_and_inbox_only_changes_leave_row_2_alone(desk: Desk) -> None:
    with desk.unit_of_work() as session:
        ticket_id = new_ticket(session, desk.settings, MONDAY_9).id
    before = revisions(desk)
    assert before is not None

    with desk.unit_of_work() as session:
        session.execute(update(Ticket).where(Ticket.id == ticket_id).values(priority="P1"))
    with desk.unit_of_work(readonly=True) as session:
        list(session.scalars(select(CannedResponse)))

    assert revisions(desk) == (before[0] + 1, before[1])


def test_a_rolled_back_change_does_not_count(desk: Desk) -> None:
    before = revisions(desk)
    with pytest.raises(RuntimeError), desk.unit_of_work() as session:
        session.add(CannedResponse(title="Never", body="Never.", created_at=MONDAY_9))
        session.flush()
        raise RuntimeError("the step failed")
    with desk.unit_of_work(readonly=True) as session:
        list(session.scalars(select(CannedResponse)))

    assert revisions(desk) == before


def test_a_missing_row_reads_as_none_and_the_next_change_restores_it(desk: Desk) -> None:
    with desk.unit_of_work() as session:
        session.execute(delete(InboxRevision).where(InboxRevision.id == PAGE_ROW))
    assert revisions(desk) is None

    with desk.unit_of_work() as session:
        session.add(CannedResponse(title="Thanks", body="Thank you.", created_at=MONDAY_9))

    found = revisions(desk)
    assert found is not None and found[1] == 1


def test_a_transaction_that_changes_both_bumps_both_rows_in_one_statement(desk: Desk) -> None:
    before = revisions(desk)
    assert before is not None
    statements: list[str] = []

    @event.listens_for(desk.engine, "before_cursor_execute")
    def seen(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if "inbox_revision" in statement and not statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    with desk.unit_of_work() as session:  # a new ticket: row 1 (ticket, tasks) and row 2 (audit)
        new_ticket(session, desk.settings, MONDAY_9)

    assert len(statements) == 1
    assert revisions(desk) == (before[0] + 1, before[1] + 1)
