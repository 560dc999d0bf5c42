"""Moving running tickets onto a newer (or older) deployed version of their process.

Deployed versions are immutable and every instance is pinned to one: a new version changes
nothing for running tickets until a process owner previews the move (where each ticket's current
task would land) and confirms it. :func:`migrate_instances` then takes one instance at a time,
locked as advancing does, plans again under the lock, moves it with :mod:`engine.migration`,
stores the state and the version, re-projects its human tasks and audits the move. An instance
that cannot move is left exactly as it was and reported with the reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from engine.errors import EngineError
from engine.migration import MigrationPlan, TaskLanding, migrate, needs_engine_run, plan_migration
from engine.runtime import Definition, Instance

from . import audit, sla
from .definitions import get_version, load_definition
from .errors import DeskError, NotFound, PermissionDenied
from .instances import _sync_tasks, lock_instance
from .models import TICKET_NUMBER_OFFSET, HumanTask, ProcessVersion, Ticket, User, WorkflowInstance
from .operations import DeskOperations, group_slug
from .settings import Settings

MIGRATED, REFUSED = "instance_migrated", "instance_migration_refused"


@dataclass(frozen=True)
class TaskMove:
    """One current task of a ticket: where it is, and where it lands in the target version."""

    element_id: str
    kind: str
    state: str
    name: str
    group: str | None
    new_name: str | None
    new_group: str | None
    refusal: str | None
    changes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "element_id": self.element_id,
            "kind": self.kind,
            "state": self.state,
            "from": {"name": self.name, "group": self.group},
            "to": None if self.refusal else {"name": self.new_name, "group": self.new_group},
            "refusal": self.refusal,
            "changes": list(self.changes),
        }


@dataclass(frozen=True)
class InstancePreview:
    """Whether one running instance can move to the target version, task by task."""

    instance_id: int
    ticket_id: int
    ticket: str  # "LD-1042"
    process_id: str
    from_version: int | None
    to_version: int
    revision: int
    can_migrate: bool
    reason: str | None
    tasks: tuple[TaskMove, ...] = ()
    next_wake_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "ticket": self.ticket,
            "process_id": self.process_id,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "revision": self.revision,
            "can_migrate": self.can_migrate,
            "reason": self.reason,
            "tasks": [task.to_dict() for task in self.tasks],
            "next_wake_at": self.next_wake_at.isoformat() if self.next_wake_at else None,
        }


@dataclass
class MigrationReport:
    """What :func:`migrate_instances` did: the instances moved (as they are now) and those refused."""

    process_id: str
    to_version: int
    migrated: list[InstancePreview] = field(default_factory=list)
    refused: list[InstancePreview] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "process_id": self.process_id,
            "to_version": self.to_version,
            "migrated": [item.to_dict() for item in self.migrated],
            "refused": [item.to_dict() for item in self.refused],
        }


def preview_migration(
    session: Session,
    settings: Settings,
    *,
    process_id: str,
    to_version: int,
    instance_ids: list[int] | None = None,
) -> list[InstancePreview]:
    """Where every running instance of ``process_id`` on another version would land in ``to_version``.

    ``instance_ids`` narrows the selection: an instance that cannot move at all (finished, on the
    target version already, another process) comes back refused with the reason; an unknown id
    raises NotFound. Reads only.
    """
    target = get_version(session, process_id, to_version)
    ids = (
        candidates(session, process_id=process_id, to_version=to_version)
        if instance_ids is None
        else instance_ids
    )
    rows = {
        row.id: row for row in session.scalars(select(WorkflowInstance).where(WorkflowInstance.id.in_(ids)))
    }
    missing = [str(i) for i in ids if i not in rows]
    if missing:
        raise NotFound(f"no workflow instance {', '.join(missing)}")
    return [_preview(session, settings, rows[i], target) for i in dict.fromkeys(ids)]


def candidates(session: Session, *, process_id: str, to_version: int) -> list[int]:
    """Ids of the running instances of ``process_id`` on versions other than ``to_version``."""
    target = get_version(session, process_id, to_version)
    return list(
        session.scalars(
            select(WorkflowInstance.id)
            .join(ProcessVersion, WorkflowInstance.process_version_id == ProcessVersion.id)
            .where(ProcessVersion.process_id == process_id, WorkflowInstance.status == "running")
            .where(WorkflowInstance.process_version_id != target.id)
            .order_by(WorkflowInstance.id)
        )
    )


def migrate_instances(
    session: Session,
    settings: Settings,
    *,
    process_id: str,
    to_version: int,
    instance_ids: Iterable[int],
    actor: User,
    now: datetime,
    expected_revisions: Mapping[int, int] | None = None,
) -> MigrationReport:
    """Move each of ``instance_ids`` to ``to_version`` of ``process_id``; only owners and admins may.

    Each instance is locked, planned again under the lock and moved in its own savepoint: a
    refusal, or an engine or desk error, never undoes the others, and a refused instance is left
    untouched. ``expected_revisions`` (instance id → the revision its preview showed) refuses
    instances that changed since that preview, so what was confirmed is what moves. Every
    instance gets one audit row: ``instance_migrated`` or ``instance_migration_refused``.
    Raises NotFound (nothing done) when the version or one of the instances does not exist.
    """
    if actor.role not in ("owner", "admin"):
        raise PermissionDenied(
            f"{actor.email} is an {actor.role}; only process owners and admins move tickets"
        )
    target = get_version(session, process_id, to_version)
    ids = list(dict.fromkeys(instance_ids))
    known = set(session.scalars(select(WorkflowInstance.id).where(WorkflowInstance.id.in_(ids))))
    missing = [str(i) for i in ids if i not in known]
    if missing:
        raise NotFound(f"no workflow instance {', '.join(missing)}")
    report = MigrationReport(process_id, to_version)
    for instance_id in ids:
        savepoint = session.begin_nested()  # its rollback drops this instance's audit rows only
        try:
            outcome = _migrate_one(session, settings, instance_id, target, actor, now, expected_revisions)
        except (EngineError, DeskError) as exc:  # e.g. a timer expression that fails: this one only
            outcome = _refused(
                _eligible(session, settings, instance_id, target), f"it cannot be moved: {exc}"
            )
        if outcome.can_migrate:
            savepoint.commit()
            report.migrated.append(outcome)
        else:
            savepoint.rollback()
            _audit_refusal(session, outcome, actor, now)
            report.refused.append(outcome)
    return report


def _migrate_one(
    session: Session,
    settings: Settings,
    instance_id: int,
    target: ProcessVersion,
    actor: User,
    now: datetime,
    expected: Mapping[int, int] | None,
) -> InstancePreview:
    row = lock_instance(session, instance_id)
    preview = _preview(session, settings, row, target, plan=False)
    if not preview.can_migrate:
        return preview
    if expected is not None and expected.get(row.id, row.revision) != row.revision:
        seen = expected[row.id]
        return _refused(
            preview, f"the ticket changed since the preview (revision {seen}, now {row.revision})"
        )
    old, new = load_definition(session, row.process_version), load_definition(session, target)
    instance = Instance.load(old, row.state)
    label = f"version {target.version}"
    plan = plan_migration(instance, new, target=label)
    preview = _with_plan(settings, preview, plan)
    if not plan.can_migrate:
        return preview
    return _move_instance(session, settings, row, instance, (new, target), preview, actor=actor, now=now)


def _move_instance(
    session: Session,
    settings: Settings,
    row: WorkflowInstance,
    instance: Instance,
    to: tuple[Definition, ProcessVersion],
    preview: InstancePreview,
    *,
    actor: User,
    now: datetime,
) -> InstancePreview:
    """Migrate the locked ``row``, whose plan allows it; store, re-project and audit the move."""
    (new, version), who, before = to, audit.actor_of(actor), row.next_wake_at
    target = version.version
    ops = DeskOperations(session, settings, session.get_one(Ticket, row.ticket_id), now=now, actor=who)
    with session.no_autoflush:  # timer expressions may read SLA clocks between our writes
        moved = migrate(instance, new, now=now, functions=ops.functions(), target=f"version {target}")
        wake = now if needs_engine_run(moved) else moved.next_wake(now, functions=ops.functions())
    row.state, row.process_version_id, row.process_version = moved.dump(), version.id, version
    row.next_wake_at = None if wake is None or wake >= sla.NEVER else wake
    row.updated_at = now
    _retitle_open_tasks(session, settings, row, moved, ops)
    _sync_tasks(session, settings, row, moved, ops, now=now, actor=who)
    try:
        session.flush()
    except StaleDataError:
        return _refused(preview, "the ticket changed while it was being moved; preview again")
    audit.record(
        session,
        ticket_id=row.ticket_id,
        actor=who,
        action=MIGRATED,
        now=now,
        detail=f"{preview.process_id} v{preview.from_version} → v{target}",
        data={
            "process_id": preview.process_id,
            "from_version": preview.from_version,
            "to_version": target,
            "tasks": [task.to_dict() for task in preview.tasks],
            "next_wake_at": {"before": _iso(before), "after": _iso(row.next_wake_at)},
        },
    )
    return replace(preview, next_wake_at=row.next_wake_at, revision=row.revision)


def _retitle_open_tasks(
    session: Session, settings: Settings, row: WorkflowInstance, moved: Instance, ops: DeskOperations
) -> None:
    """Give open human tasks the name, lane, group and form of their element in the new version.

    Task ids survive a migration, so ``_sync_tasks`` (which adds and withdraws by id) would keep
    the old titles. A holder who is not in the task's new group gives it back to the group.
    """
    views = {view.task_id: view for view in moved.user_tasks()}
    query = select(HumanTask).where(HumanTask.instance_id == row.id, HumanTask.state == "open")
    for task in session.scalars(query):
        view = views.get(task.id)
        if view is None:
            continue
        group = ops.find_group(group_slug(view.lane or "", settings.lane_groups))
        group_id = group.id if group else None
        holder = task.assignee
        if group_id != task.group_id and holder is not None and not _may_hold(holder, group_id):
            task.assignee_id, task.claimed_at = None, None
        task.element_id, task.name, task.lane, task.form = view.element_id, view.name, view.lane, view.form
        task.group_id = group_id


def _may_hold(user: User, group_id: int | None) -> bool:
    return user.role == "admin" or any(g.id == group_id for g in user.groups)


def _preview(
    session: Session, settings: Settings, row: WorkflowInstance, target: ProcessVersion, *, plan: bool = True
) -> InstancePreview:
    """The instance's preview; ``plan=False`` checks only that it is eligible (no plan yet)."""
    version = row.process_version
    ticket = f"{settings.ticket_prefix}-{row.ticket_id + TICKET_NUMBER_OFFSET}"
    base = InstancePreview(
        instance_id=row.id,
        ticket_id=row.ticket_id,
        ticket=ticket,
        process_id=version.process_id,
        from_version=version.version,
        to_version=target.version,
        revision=row.revision,
        can_migrate=True,
        reason=None,
        next_wake_at=row.next_wake_at,
    )
    if version.process_id != target.process_id:
        return _refused(base, f"{ticket} runs the process {version.process_id!r}, not {target.process_id!r}")
    if version.id == target.id:
        return _refused(base, f"{ticket} already runs version {target.version}")
    if row.status != "running":
        return _refused(base, f"{ticket}'s process is {row.status}; only running tickets move")
    if not plan:
        return base
    try:
        instance = Instance.load(load_definition(session, version), row.state)
    except EngineError as exc:  # one unreadable instance must not hide the others' previews
        return _refused(base, f"it cannot be moved: {exc}")
    label = f"version {target.version}"
    return _with_plan(
        settings, base, plan_migration(instance, load_definition(session, target), target=label)
    )


def _with_plan(settings: Settings, base: InstancePreview, plan: MigrationPlan) -> InstancePreview:
    moves = tuple(_move(settings, landing) for landing in plan.tasks)
    return replace(base, can_migrate=plan.can_migrate, reason=plan.reason, tasks=moves)


def _move(settings: Settings, landing: TaskLanding) -> TaskMove:
    return TaskMove(
        element_id=landing.element_id,
        kind=landing.kind,
        state=landing.state,
        name=landing.name,
        group=_group(settings, landing.lane),
        new_name=landing.new_name,
        new_group=_group(settings, landing.new_lane) if landing.lands else None,
        refusal=landing.refusal,
        changes=landing.changes,
    )


def _group(settings: Settings, lane: str | None) -> str | None:
    return (group_slug(lane, settings.lane_groups) or None) if lane else None


def _refused(preview: InstancePreview, reason: str) -> InstancePreview:
    return replace(preview, can_migrate=False, reason=reason)


def _eligible(
    session: Session, settings: Settings, instance_id: int, target: ProcessVersion
) -> InstancePreview:
    """The preview of an instance re-read after a failed attempt (no plan)."""
    row = session.get_one(WorkflowInstance, instance_id, populate_existing=True)
    return _preview(session, settings, row, target, plan=False)


def _audit_refusal(session: Session, outcome: InstancePreview, actor: User, now: datetime) -> None:
    audit.record(
        session,
        ticket_id=outcome.ticket_id,
        actor=audit.actor_of(actor),
        action=REFUSED,
        now=now,
        detail=outcome.reason or "",
        data={
            "process_id": outcome.process_id,
            "from_version": outcome.from_version,
            "to_version": outcome.to_version,
            "tasks": [task.to_dict() for task in outcome.tasks],
        },
    )


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None
