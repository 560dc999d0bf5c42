"""The audit trail: one row per step, operation and decision, with who and why."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from .models import AuditEvent, Customer, User

SYSTEM = "system"
TIMER = "timer"


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
) -> AuditEvent:
    """Add one audit row to the session (the caller's unit of work commits it)."""
    event = AuditEvent(
        ticket_id=ticket_id,
        actor=actor,
        action=action,
        element_id=element_id,
        task_id=task_id,
        detail=detail,
        data=data or {},
        created_at=now,
    )
    session.add(event)
    return event
