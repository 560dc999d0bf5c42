"""Waking instances whose timers are due: `lanedesk tick`, and Celery beat's scan (tasks/)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Table, or_, select, update
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


#: How long a claimed instance is not handed out again (a worker that died mid-wake is retried after it).
LEASE = timedelta(seconds=60)
#: The longest back-off between retries of an instance that keeps failing outside the diagram.
MAX_BACKOFF = timedelta(hours=1)


def claim_due(session: Session, now: datetime, *, limit: int = 1000, lease: timedelta = LEASE) -> list[int]:
    """Claim up to ``limit`` due instances, most overdue first, and return their ids.

    Selects rows that are running, due, and not claimed by an earlier scan whose lease is still
    good, locking them (PostgreSQL skips rows another transaction holds: ``FOR UPDATE SKIP
    LOCKED``), then stamps the lease on them by primary key. Scans running side by side never
    hand out one instance twice. The cost is one range scan of ``ix_workflow_instance_due`` over
    the due rows only, however many wait in the future.
    """
    table = WorkflowInstance.__table__
    assert isinstance(table, Table)
    due = (
        select(table.c.id)
        .where(
            table.c.status == "running",
            table.c.next_wake_at <= now,
            or_(table.c.wake_claimed_until.is_(None), table.c.wake_claimed_until <= now),
        )
        .order_by(table.c.next_wake_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = sorted(session.scalars(due))  # locked until commit: no other scan can take them
    if ids:
        # By primary key, in a second statement: folded into one UPDATE ... WHERE id IN (subquery)
        # PostgreSQL's planner hashes the whole table at 10k-100k rows (bench.timers).
        session.execute(update(table).where(table.c.id.in_(ids)).values(wake_claimed_until=now + lease))
    return ids


def wake_instance(session: Session, settings: Settings, instance_id: int, *, now: datetime) -> bool:
    """Fire the due timers of one instance; False when it was not due (any more) or is busy.

    Locks the row with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL and checks it is still due
    under the lock, so a duplicate delivery or a second worker never fires a timer twice.
    """
    query = (
        select(WorkflowInstance)
        .where(WorkflowInstance.id == instance_id)
        .execution_options(populate_existing=True)
    )
    row = session.scalar(query.with_for_update(skip_locked=True))
    if row is None or row.status != "running":
        return False
    if row.next_wake_at is None or row.next_wake_at > now:
        row.wake_claimed_until = None
        return False

    def action(instance: Instance, functions: Functions) -> tuple[None, list[Step]]:
        return None, instance.fire_due_timers(now=now, functions=functions)

    advance(session, settings, row, action, now=now, actor=audit.TIMER)
    return True


def wake_or_record_failure(
    factory: sessionmaker[Session], settings: Settings, instance_id: int, *, now: Callable[[], datetime]
) -> bool:
    """Wake one instance in its own transaction; failures are recorded, never raised.

    A timer whose script fails marks its instance *failed* with the reason (and an audit row)
    instead of failing again every few seconds. Any other failure (a conflict, the database)
    keeps the claim and lengthens it: the instance is retried after 1, 2, 4... minutes.
    """
    try:
        with unit_of_work(factory) as session:
            return wake_instance(session, settings, instance_id, now=now())
    except EngineError as exc:
        log.warning("instance %s failed while waking: %s", instance_id, exc)
        with unit_of_work(factory) as session:
            row = session.get_one(WorkflowInstance, instance_id)
            mark_failed(session, row, str(exc), now=now(), actor=audit.TIMER)
        raise WakeFailed(str(exc)) from exc
    except Exception as exc:
        log.exception("instance %s could not be woken; will retry with back-off", instance_id)
        with unit_of_work(factory) as session:
            row = session.get_one(WorkflowInstance, instance_id)
            row.wake_failures += 1
            row.wake_claimed_until = now() + min(LEASE * 2 ** (row.wake_failures - 1), MAX_BACKOFF)
        raise WakeFailed(f"{type(exc).__name__}: {exc}") from exc


class WakeFailed(Exception):
    """Waking an instance failed; the reason is recorded on it (failed, or retried later)."""


def wake_due_instances(
    factory: sessionmaker[Session], settings: Settings, *, now: Callable[[], datetime], limit: int = 1000
) -> WakeReport:
    """Claim every due instance and wake each once, in its own transaction (`lanedesk tick`)."""
    report = WakeReport()
    with unit_of_work(factory) as session:
        ids = claim_due(session, now(), limit=limit)
    for instance_id in ids:
        try:
            if wake_or_record_failure(factory, settings, instance_id, now=now):
                report.woken.append(instance_id)
        except WakeFailed as exc:
            report.failed[instance_id] = str(exc)
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
