"""Waking instances whose timers are due: `lanedesk tick` and (later) Celery beat."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from engine.errors import EngineError
from engine.runtime import Functions, Instance, Step

from . import audit
from .db import unit_of_work
from .errors import Conflict
from .instances import advance, lock_instance, mark_failed
from .models import WorkflowInstance
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class WakeReport:
    woken: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)


def due_instance_ids(session: Session, now: datetime, limit: int = 500) -> list[int]:
    """Ids of running instances whose next wake time has passed, most overdue first."""
    query = (
        select(WorkflowInstance.id)
        .where(WorkflowInstance.status == "running", WorkflowInstance.next_wake_at <= now)
        .order_by(WorkflowInstance.next_wake_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def wake_instance(session: Session, settings: Settings, instance_id: int, *, now: datetime) -> bool:
    """Fire the due timers of one instance; False when it was not due (any more) or is busy.

    Claims the row with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so many workers never fire
    one instance twice; the due check is repeated under the lock for the same reason.
    """
    query = (
        select(WorkflowInstance)
        .where(WorkflowInstance.id == instance_id)
        .execution_options(populate_existing=True)
    )
    row = session.scalar(query.with_for_update(skip_locked=True))
    if row is None or row.status != "running" or row.next_wake_at is None or row.next_wake_at > now:
        return False

    def action(instance: Instance, functions: Functions) -> tuple[None, list[Step]]:
        return None, instance.fire_due_timers(now=now, functions=functions)

    advance(session, settings, row, action, now=now, actor=audit.TIMER)
    return True


def wake_due_instances(
    factory: sessionmaker[Session], settings: Settings, *, now: Callable[[], datetime], limit: int = 500
) -> WakeReport:
    """Wake every due instance once, each in its own transaction.

    A timer whose script fails marks its instance *failed* with the reason (and an audit row)
    instead of failing again every few seconds; the other instances go on.
    """
    report = WakeReport()
    with unit_of_work(factory) as session:
        ids = due_instance_ids(session, now(), limit)
    for instance_id in ids:
        try:
            with unit_of_work(factory) as session:
                if wake_instance(session, settings, instance_id, now=now()):
                    report.woken.append(instance_id)
        except EngineError as exc:
            log.warning("instance %s failed while waking: %s", instance_id, exc)
            report.failed[instance_id] = str(exc)
            with unit_of_work(factory) as session:
                mark_failed(
                    session,
                    session.get_one(WorkflowInstance, instance_id),
                    str(exc),
                    now=now(),
                    actor=audit.TIMER,
                )
        except Exception as exc:  # a conflict or a database hiccup: the next tick retries it
            log.exception("instance %s could not be woken; will retry", instance_id)
            report.failed[instance_id] = f"{type(exc).__name__}: {exc}"
    return report


def retry_instance(
    session: Session, settings: Settings, instance_id: int, *, now: datetime, actor: str
) -> None:
    """Run a *failed* instance again: fire what is due and offer its buffered messages.

    For an instance whose script failed once it was fixed (a new version deployed and
    migrated, or a transient error gone). Raises the engine's error again if it still fails;
    the caller's rollback then leaves it failed.
    """
    row = lock_instance(session, instance_id)
    if row.status != "failed":
        raise Conflict(f"instance {instance_id} is {row.status}, not failed; nothing to retry")

    def action(instance: Instance, functions: Functions) -> tuple[None, list[Step]]:
        return None, instance.fire_due_timers(now=now, functions=functions)

    audit.record(
        session,
        ticket_id=row.ticket_id,
        actor=actor,
        action="instance_retried",
        now=now,
        detail=row.error or "",
    )
    advance(session, settings, row, action, now=now, actor=actor)
