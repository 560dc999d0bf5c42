"""The audit journal: rows written once at COMMIT, visible to audit queries, cut with savepoints."""

from __future__ import annotations

from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from workflows import audit
from workflows.app import Desk
from workflows.models import AuditEvent

from ..conftest import MONDAY_9


def note(session: Session, what: str) -> None:
    audit.record(
        session, ticket_id=None, actor=audit.SYSTEM, action="journal_test", now=MONDAY_9, detail=what
    )


def written(desk: Desk) -> list[str]:
    with desk.unit_of_work(readonly=True) as session:
        query = select(AuditEvent.detail).where(AuditEvent.action == "journal_test").order_by(AuditEvent.id)
        return list(session.scalars(query))


def inserts_into_audit(engine: Engine) -> list[str]:
    seen: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_EVENT"):
            seen.append(statement)

    return seen


def test_rows_of_a_transaction_go_in_one_insert_at_commit_whatever_flushes_between(desk: Desk) -> None:
    seen = inserts_into_audit(desk.engine)
    with desk.unit_of_work() as session:
        note(session, "first")
        session.flush()
        note(session, "second")
        session.flush()
        note(session, "third")
        assert seen == []  # flushes do not write them
    assert len(seen) == 1
    assert written(desk) == ["first", "second", "third"]


def test_a_query_of_audit_rows_sees_what_was_journaled_before_it(desk: Desk) -> None:
    with desk.unit_of_work() as session:
        note(session, "visible")
        found = session.scalars(select(AuditEvent.detail).where(AuditEvent.action == "journal_test")).all()
        assert found == ["visible"]
    assert written(desk) == ["visible"]


def test_a_rolled_back_savepoint_drops_its_rows_and_keeps_the_ones_before_it(desk: Desk) -> None:
    with desk.unit_of_work() as session:
        note(session, "before")
        try:
            with session.begin_nested():
                note(session, "inside, rolled back")
                raise RuntimeError("the step failed")
        except RuntimeError:
            pass
        with session.begin_nested():
            note(session, "inside, released")
        note(session, "after")
    assert written(desk) == ["before", "inside, released", "after"]


def test_nested_savepoints_cut_back_to_where_each_began(desk: Desk) -> None:
    with desk.unit_of_work() as session, session.begin_nested():
        note(session, "outer savepoint")
        inner = session.begin_nested()
        note(session, "inner savepoint")
        inner.rollback()
        note(session, "outer again")
    assert written(desk) == ["outer savepoint", "outer again"]


def test_a_rolled_back_transaction_writes_nothing(desk: Desk) -> None:
    try:
        with desk.unit_of_work() as session:
            note(session, "lost with the transaction")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    with desk.unit_of_work() as session:
        note(session, "next transaction")
    assert written(desk) == ["next transaction"]
