"""The audit trail: one row per step, operation and decision, with who and why.

Rows are journaled on the session and written in one multi-row INSERT at COMMIT (or before a
query that reads audit rows): a ticket event writes ten or more of them, and building an ORM
object and a flush entry for each was a third of the cost of opening a ticket; writing them at
every flush still cost four INSERTs per mail processed. A savepoint that rolls back drops the
rows journaled inside it and keeps the rows journaled before it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.orm import ORMExecuteState, Session, SessionTransaction

from .models import AuditEvent, Customer, User

SYSTEM = "system"
TIMER = "timer"
_JOURNAL = "lanedesk.audit_journal"


def actor_of(who: User | Customer | str | None) -> str:
    """The audit ``actor`` string: ``user:<email>``, ``customer:<email>``, ``timer``, ``system``."""
    if isinstance(who, User):
        return f"user:{who.email}"
    if isinstance(who, Customer):
        return f"customer:{who.email}"
    return who or SYSTEM


def record(
    session: Session,
    *,
    ticket_id: int | None,
    actor: str,
    action: str,
    now: datetime,
    detail: str = "",
    element_id: str | None = None,
    task_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """Journal one audit row on ``session``; it is written before the session's next query,
    flush or commit (never half-written: rows of a rolled-back savepoint are dropped)."""
    row = {
        "ticket_id": ticket_id,
        "actor": actor,
        "action": action,
        "element_id": element_id,
        "task_id": task_id,
        "detail": detail,
        "data": data or {},
        "created_at": now,
    }
    session.info.setdefault(_JOURNAL, []).append(row)


def write_journal(session: Session) -> None:
    """Insert the journaled rows now (in the order they were recorded)."""
    rows = session.info.pop(_JOURNAL, None)
    if rows:
        # render_nulls: one statement; else the ORM groups rows by which keys are None.
        session.execute(insert(AuditEvent).execution_options(render_nulls=True), rows)


_MARKS = "lanedesk.audit_journal_marks"


def _reads_audit(state: ORMExecuteState) -> bool:
    return any(mapper.class_ is AuditEvent for mapper in state.all_mappers)


@event.listens_for(Session, "do_orm_execute")
def _before_query(state: ORMExecuteState) -> None:
    # Like autoflush: a query of audit rows sees the rows journaled before it (not inside
    # no_autoflush blocks, where the engine runs and batching the rows is the point).
    if (
        state.is_select
        and state.session.autoflush
        and state.session.info.get(_JOURNAL)
        and _reads_audit(state)
    ):
        write_journal(state.session)


@event.listens_for(Session, "after_transaction_create")
def _savepoint_started(session: Session, transaction: SessionTransaction) -> None:
    if transaction.nested:  # where the journal stood: a rollback of this savepoint cuts back to it
        session.info.setdefault(_MARKS, {})[transaction] = len(session.info.get(_JOURNAL, ()))


@event.listens_for(Session, "after_soft_rollback")
def _savepoint_rolled_back(session: Session, transaction: SessionTransaction) -> None:
    mark = session.info.get(_MARKS, {}).pop(transaction, None)
    if mark is not None and (rows := session.info.get(_JOURNAL)):
        del rows[mark:]


@event.listens_for(Session, "after_transaction_end")
def _transaction_ended(session: Session, transaction: SessionTransaction) -> None:
    # Marks of released savepoints stay until the outer transaction ends (this event comes
    # before after_soft_rollback, so a savepoint's own end cannot drop its mark).
    if transaction.parent is None:
        session.info.pop(_MARKS, None)


@event.listens_for(Session, "before_commit", insert=True)  # first: before any revision is bumped
def _before_commit(session: Session) -> None:
    write_journal(session)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint: _savepoint_rolled_back cut its rows
        return
    session.info.pop(_JOURNAL, None)
