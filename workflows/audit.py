"""The audit trail: one row per step, operation and decision, with who and why.

Rows are journaled on the session and written in one multi-row INSERT when the session next
flushes (or commits): a ticket event writes ten or more of them, and building an ORM object and
a flush entry for each was a third of the cost of opening a ticket.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.orm import Session

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
) -> dict[str, Any]:
    """Journal one audit row on ``session``; it is written with the session's next flush.

    Returns the row's values, which the caller may still complete (e.g. with a step's result)
    before that flush.
    """
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
    return row


def write_journal(session: Session) -> None:
    """Insert the journaled rows now (in the order they were recorded)."""
    rows = session.info.pop(_JOURNAL, None)
    if rows:
        session.execute(insert(AuditEvent), rows)


def discard_journal(session: Session) -> None:
    """Forget rows journaled since the last write (their step was rolled back)."""
    session.info.pop(_JOURNAL, None)


@event.listens_for(Session, "before_flush")
def _before_flush(session: Session, _context: Any, _instances: Any) -> None:
    write_journal(session)


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    write_journal(session)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_JOURNAL, None)
