"""The audit trail: one row per step, operation and decision, with who and why.

Rows are journaled on the session and written in one multi-row INSERT when the session next
flushes (or commits): a ticket event writes ten or more of them, and building an ORM object and
a flush entry for each was a third of the cost of opening a ticket.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.orm import ORMExecuteState, Session

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
        session.execute(insert(AuditEvent), rows)


def discard_journal(session: Session) -> None:
    """Forget rows journaled since the last write (their step was rolled back)."""
    session.info.pop(_JOURNAL, None)


@event.listens_for(Session, "do_orm_execute")
def _before_query(state: ORMExecuteState) -> None:
    # Like autoflush: a query sees the rows journaled before it (not inside no_autoflush blocks,
    # where the engine runs and batching the rows is the point).
    if state.is_select and state.session.autoflush and state.session.info.get(_JOURNAL):
        write_journal(state.session)


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    write_journal(session)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    write_journal(session)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_JOURNAL, None)
