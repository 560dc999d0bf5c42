"""Moving a running instance onto another version of its process definition.

SpiffWorkflow 3.2.0 has spec migration in ``SpiffWorkflow.bpmn.util.diff``: ``SpecDiff`` aligns
the old spec's task specs with the new one's (by element id, then by position in the flow),
``WorkflowDiff`` maps an instance's tasks through that alignment (``diff_workflow`` builds both),
and ``migrate_workflow`` swaps every task's spec and resets each READY/WAITING task
(``reset_branch``) so that its future is predicted again from the new diagram. Used as it is, it
is not safe for running tickets; this module plans first and refuses what it cannot do, then
migrates and repairs what ``migrate_workflow`` breaks:

1. It never refuses. A task whose element was removed keeps the *old* version's spec object, and
   so do finished tasks still in the tree: the state then no longer loads with the new version.
   Current tasks must land on their own element id here; finished ones without a counterpart
   are spliced out of the tree (history is in the audit trail), never left dangling.
2. Where ids differ it aligns by position: a task replaced by another element is silently
   matched to it. We only land on the same element id and name the guess in the refusal.
3. ``reset_branch`` clears internal data and replaces the task's data with its parent's: every
   waiting timer is evaluated again at the moment of migration (a "P3D" reminder starts over).
   Data, state-change times and the due times of unchanged timers are restored; a changed
   duration keeps the moment its timer started waiting.
4. It sets ``workflow.spec`` but not ``subprocess_specs``, and migrates one workflow: each live
   subprocess needs its own diff, and a running subprocess task (STARTED) keeps children
   predicted from the old diagram. All three are done here.
5. A task that already waits cannot gain or lose a boundary event: the split that armed them
   has run and is not reset. Such changes are refused.
6. ``SpecDiff`` converts every task spec through the serializer, per call: the diff of a pair of
   versions is computed once and reused for every instance (``_spec_diffs``), so the two parts
   of ``diff_workflow`` are called here directly.
7. ``WorkflowDiff`` indexes the alignment: a task whose spec ``SpecDiff`` did not reach from the
   start event raises KeyError. Ours looks it up, and aligns only equal element ids (see 2).

Everything here reads or changes the workflow in memory only; callers persist the result.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from copy import deepcopy
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.specs.control import BoundaryEventSplit
from SpiffWorkflow.bpmn.specs.event_definitions.multiple import MultipleEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import (
    DurationTimerEventDefinition,
    TimerEventDefinition,
)
from SpiffWorkflow.bpmn.specs.mixins.events.intermediate_event import BoundaryEvent
from SpiffWorkflow.bpmn.util.diff import SpecDiff, WorkflowDiff, migrate_workflow
from SpiffWorkflow.specs.Join import Join
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.util.task import TaskState

from . import state as state_store
from .clock import frozen_at
from .errors import EngineError
from .runtime import Definition, Functions, Instance

__all__ = [
    "MigrationPlan",
    "MigrationRefused",
    "TaskLanding",
    "migrate",
    "needs_engine_run",
    "plan_migration",
]

#: The tasks a plan reports: what the instance is doing now.
_CURRENT = TaskState.READY | TaskState.WAITING | TaskState.STARTED
_FINISHED = TaskState.COMPLETED | TaskState.CANCELLED
_KINDS = {"SubWorkflowTask": "subprocess", "CallActivity": "call activity", "_EndJoin": "end join"}


@dataclass(frozen=True)
class TaskLanding:
    """One current task of an instance and where it lands in the new version."""

    task_id: str
    element_id: str
    name: str
    lane: str | None
    kind: str  # "user task", "boundary event", "event based gateway", ...
    state: str  # "ready" | "waiting" | "started"
    #: Element id of the subprocess the task runs in; None for the main process.
    subprocess: str | None = None
    new_name: str | None = None
    new_lane: str | None = None
    #: Why the task cannot move (None: it lands on the same element id).
    refusal: str | None = None
    #: What changes for it, in words ("renamed ...", "lane Tier 1 → Tier 2", "timer ...").
    changes: tuple[str, ...] = ()
    #: For a waiting timer: its due time before the migration.
    due: datetime | None = None

    @property
    def lands(self) -> bool:
        return self.refusal is None

    def to_dict(self) -> dict[str, Any]:
        due = self.due.isoformat() if self.due else None
        return {**asdict(self), "lands": self.lands, "changes": list(self.changes), "due": due}


@dataclass(frozen=True)
class MigrationPlan:
    """Whether an instance can move to ``target`` and where each of its current tasks lands."""

    target: str
    can_migrate: bool
    reason: str | None
    tasks: tuple[TaskLanding, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tasks": [task.to_dict() for task in self.tasks]}


class MigrationRefused(EngineError):
    """The instance cannot move to the new version; ``plan`` says why, task by task."""

    def __init__(self, plan: MigrationPlan):
        self.plan = plan
        super().__init__(plan.reason or "the instance cannot move to the new version")


def plan_migration(instance: Instance, new: Definition, *, target: str = "the new version") -> MigrationPlan:
    """Where each current (READY/WAITING/STARTED) task of ``instance`` would land in ``new``.

    ``target`` names the new version in the reasons ("version 7"). Reads only; a stored state is
    planned with ``plan_migration(Instance.load(old, state), new)``. The plan refuses when a
    current task's element is gone, moved into or out of a subprocess, changed type, or had
    boundary events added or removed, or when a waiting join counts a branch that was removed.
    """
    old = instance.definition
    if new.process_id != old.process_id:
        other = f"{target} is the process {new.process_id!r}, not {old.process_id!r}"
        return MigrationPlan(target, False, other, ())
    diffs = _spec_diffs(old, new)
    landings: list[TaskLanding] = []
    for wf, diff in _workflows_with_diffs(instance.workflow, diffs):
        sub = None if wf is instance.workflow else str(wf.spec.name)
        if diff is None:
            where = f"it runs inside the subprocess {_subprocess_label(old, wf.spec.name)}, which was removed"
            landings += [_refused(_base(t, sub), target, where) for t in _current(wf)]
            continue
        new_spec = _new_spec(new, wf.spec.name, wf is instance.workflow)
        landings += [_landing(t, diff, sub, old, new, new_spec, target) for t in _current(wf)]
    refusals = [landing.refusal for landing in landings if landing.refusal is not None]
    reason = "; ".join(dict.fromkeys(refusals)) or None
    return MigrationPlan(target, reason is None, reason, tuple(landings))


def migrate(
    instance: Instance,
    new: Definition,
    *,
    now: datetime,
    functions: Functions,
    target: str = "the new version",
) -> Instance:
    """A copy of ``instance`` moved onto ``new`` (``instance`` itself is left as it was).

    Raises :class:`MigrationRefused` when :func:`plan_migration` refuses. Task ids, task data and
    the due times of waiting timers are kept; a timer the new version changed is armed again
    (a duration from the moment it started waiting, a date or cycle from ``now``, evaluated with
    ``functions`` as the engine would). Nothing runs: see :func:`needs_engine_run`.
    """
    plan = plan_migration(instance, new, target=target)
    if not plan.can_migrate:
        raise MigrationRefused(plan)
    old = instance.definition
    workflow = state_store.restore(state_store.dump(instance.workflow), old.spec, old.subprocess_specs)
    pairs = _workflows_with_diffs(workflow, _spec_diffs(old, new))
    kept = {
        t.id: _Snapshot.of(t) for wf, _ in pairs for t in wf.get_tasks(state=_CURRENT, skip_subprocesses=True)
    }
    with frozen_at(now), workflow.script_engine.bound(functions):
        # Subprocesses started from now on must come from the new version too (defect 4).
        workflow.subprocess_specs = new.subprocess_specs
        for wf, diff in pairs:
            assert diff is not None  # the plan refuses instances inside removed subprocesses
            migrate_workflow(_WorkflowDiff(wf, diff), wf, _new_spec(new, wf.spec.name, wf is workflow))
            for task in wf.get_tasks(state=TaskState.STARTED, skip_subprocesses=True):
                _repredict(task)
        for wf, _ in pairs:
            for task in wf.get_tasks(state=_CURRENT, skip_subprocesses=True):
                if task.id in kept:
                    kept[task.id].restore(task, workflow)
    for wf, _ in pairs:
        _drop_removed_history(wf, workflow, _new_spec(new, wf.spec.name, wf is workflow), target)
    return Instance(new, workflow)


def needs_engine_run(instance: Instance) -> bool:
    """True when an automatic task is READY (a timer the migration found overdue): run the instance."""
    return any(not t.task_spec.manual for t in instance.workflow.get_tasks(state=TaskState.READY))


# -- planning -----------------------------------------------------------------------------------
def _landing(
    task: Any, diff: SpecDiff, sub: str | None, old: Definition, new: Definition, new_spec: Any, target: str
) -> TaskLanding:
    spec = task.task_spec
    base = _base(task, sub)
    main = _main_task(task)
    if main is not None:  # a boundary event cannot move without the task it is attached to
        refused = _landing(main, diff, sub, old, new, new_spec, target).refusal
        if refused is not None:
            return replace(base, refusal=refused)
    candidate = diff.alignment.get(spec)
    if candidate is None or candidate.name != spec.name:
        return replace(base, refusal=_removal(base, candidate, task, old, new, target))
    if type(candidate) is not type(spec):
        return _refused(base, target, f"it changed from a {base.kind} to a {_kind(candidate)}")
    fed_by = task.parent
    if isinstance(spec, Join) and fed_by is not None and _aligned(diff, fed_by.task_spec) is None:
        label = _label(_name(fed_by.task_spec), fed_by.task_spec.bpmn_id or fed_by.task_spec.name)
        return _refused(base, target, f"it waits with the finished {label}, which was removed")
    boundary = _boundary_change(task, new_spec)
    if boundary:
        why = f"its boundary events changed ({boundary}); a task that already waits keeps the ones it had"
        return _refused(base, target, why)
    return replace(
        base,
        new_name=_name(candidate),
        new_lane=getattr(candidate, "lane", None),
        changes=tuple(_changes(spec, candidate)),
    )


def _removal(
    base: TaskLanding, candidate: Any, task: Any, old: Definition, new: Definition, target: str
) -> str:
    where = _locate(new, task.task_spec.name)
    here = task.workflow.spec.name
    if where is not None and where != here:
        if here == old.spec.name:
            how = f"it moved into the subprocess {_subprocess_label(new, where)}"
        elif where == new.spec.name:
            how = f"it moved out of the subprocess {_subprocess_label(old, here)}"
        else:
            how = f"it moved into the subprocess {_subprocess_label(new, where)}"
        return _cannot(base, target, how)
    guess = ""
    if candidate is not None:  # SpiffWorkflow matched it to another element by its place in the flow
        guess = (
            f" ({target} has {_label(_name(candidate), candidate.name)} in its place; "
            "tickets only move onto the same element id)"
        )
    return f"the {base.kind} {_label(base.name, base.element_id)} is not in {target}: it was removed{guess}"


def _refused(base: TaskLanding, target: str, why: str) -> TaskLanding:
    return replace(base, refusal=_cannot(base, target, why))


def _cannot(base: TaskLanding, target: str, why: str) -> str:
    return f"the {base.kind} {_label(base.name, base.element_id)} cannot move to {target}: {why}"


def _base(task: Any, sub: str | None) -> TaskLanding:
    spec = task.task_spec
    return TaskLanding(
        task_id=str(task.id),
        element_id=spec.bpmn_id or spec.name,
        name=_name(spec),
        lane=getattr(spec, "lane", None),
        kind=_kind(spec),
        state=TaskState.get_name(task.state).lower(),
        subprocess=sub,
        due=_due(task),
    )


def _boundary_change(task: Any, new_spec: Any) -> str:
    """What changed in the boundary events armed around ``task`` ('' when nothing did)."""
    spec, parent = task.task_spec, task.parent
    if parent is not None and isinstance(parent.task_spec, BoundaryEventSplit):
        split_name = parent.task_spec.name
        before = _boundary_events(parent.task_spec)
    elif isinstance(spec, BoundaryEvent):
        return ""
    else:
        split_name, before = f"{spec.name}.BoundaryEventSplit", {}
    split = new_spec.task_specs.get(split_name)
    after = _boundary_events(split) if split is not None else {}
    added = [_label(_name(s), n) for n, s in after.items() if n not in before]
    removed = [_label(_name(s), n) for n, s in before.items() if n not in after]
    parts = [f"added {', '.join(added)}"] * bool(added) + [f"removed {', '.join(removed)}"] * bool(removed)
    return "; ".join(parts)


def _main_task(task: Any) -> Any | None:
    """For a boundary event: the task it is attached to (its sibling under the split)."""
    parent = task.parent
    if not isinstance(task.task_spec, BoundaryEvent) or parent is None:
        return None
    return next((c for c in parent.children if not isinstance(c.task_spec, BoundaryEvent)), None)


def _boundary_events(split: Any) -> dict[str, Any]:
    return {s.name: s for s in split.outputs if isinstance(s, BoundaryEvent)}


def _changes(spec: Any, candidate: Any) -> list[str]:
    changes = []
    if _name(spec) != _name(candidate):
        changes.append(f"renamed '{_name(spec)}' → '{_name(candidate)}'")
    lanes = getattr(spec, "lane", None), getattr(candidate, "lane", None)
    if lanes[0] != lanes[1]:
        changes.append(f"lane {lanes[0] or '-'} → {lanes[1] or '-'}")
    if getattr(spec, "extensions", {}).get("form") != getattr(candidate, "extensions", {}).get("form"):
        changes.append("form changed")
    old_timers, new_timers = _timers(spec), _timers(candidate)
    if old_timers != new_timers:
        before = ", ".join(expr for _, expr in old_timers) or "none"
        after = ", ".join(expr for _, expr in new_timers) or "none"
        how = (
            "counted from when it started waiting"
            if _reanchorable(old_timers, new_timers)
            else "armed again now"
        )
        changes.append(f"timer {before} → {after} ({how})")
    interrupting = getattr(spec, "cancel_activity", None), getattr(candidate, "cancel_activity", None)
    if interrupting[0] != interrupting[1]:
        changes.append("now interrupts its task" if interrupting[1] else "no longer interrupts its task")
    if candidate.bpmn_id and [s.name for s in spec.outputs] != [s.name for s in candidate.outputs]:
        nexts = [_label(_name(s), s.bpmn_id) for s in candidate.outputs if s.bpmn_id]
        changes.append(f"then {', '.join(nexts)}" if nexts else "what follows it changed")
    return changes


# -- migrating ----------------------------------------------------------------------------------
@dataclass
class _Snapshot:
    """What ``reset_branch`` throws away and a migrated current task must keep."""

    data: dict[str, Any]
    internal_data: dict[str, Any]
    last_state_change: float
    timers: tuple[tuple[str, str], ...]
    event: Any

    @classmethod
    def of(cls, task: Any) -> _Snapshot:
        return cls(
            deepcopy(task.data),
            deepcopy(task.internal_data),
            task.last_state_change,
            _timers(task.task_spec),
            getattr(task.task_spec, "event_definition", None),
        )

    def restore(self, task: Any, workflow: Any) -> None:
        task.data = self.data
        task.last_state_change = self.last_state_change
        if task.state != TaskState.WAITING:
            return
        timers = _timers(task.task_spec)
        if timers == self.timers and (timers or self.event == task.task_spec.event_definition):
            task.internal_data = self.internal_data  # same timer: same due time
        elif _reanchorable(self.timers, timers) and self.internal_data.get("event_value"):
            due = _reanchor(
                task, workflow, self.timers[0][1], timers[0][1], self.internal_data["event_value"]
            )
            if due is not None:
                task.internal_data = {**self.internal_data, "event_value": due}


def _reanchor(task: Any, workflow: Any, old_expr: str, new_expr: str, old_value: Any) -> str | None:
    """The due time of a changed duration, counted from when the timer started waiting."""
    old_due = _moment(old_value)
    if old_due is None:
        return None
    try:
        old_duration = TimerEventDefinition.parse_iso_duration(
            str(workflow.script_engine.evaluate(task, old_expr))
        )
        new_duration = TimerEventDefinition.parse_iso_duration(
            str(workflow.script_engine.evaluate(task, new_expr))
        )
    except Exception:  # an expression that no longer evaluates: keep the engine's fresh value
        return None
    started = old_due - TimerEventDefinition.get_timedelta_from_end(old_duration, old_due)
    return (started + TimerEventDefinition.get_timedelta_from_start(new_duration, started)).isoformat()


def _repredict(task: Any) -> None:
    """Predict the children of a running subprocess task again, from its new spec.

    They are FUTURE, which ``_sync_children`` never removes, so drop them first.
    """
    task._drop_children()
    task.task_spec._predict_hook(task)
    mask = TaskState.PREDICTED_MASK | TaskState.FUTURE
    for child in task.children:
        if child.has_state(mask):
            child.task_spec._predict(child, mask=mask)


def _drop_removed_history(wf: Any, top: Any, new_spec: Any, target: str) -> None:
    """Splice out finished tasks whose element ``new_spec`` lacks (their history is in the audit)."""
    if (
        wf.last_task is not None
        and new_spec.task_specs.get(wf.last_task.task_spec.name) is not wf.last_task.task_spec
    ):
        wf.last_task = None
    for task in list(wf.tasks.values()):
        if task.id not in wf.tasks or new_spec.task_specs.get(task.task_spec.name) is task.task_spec:
            continue
        if task.state & TaskState.PREDICTED_MASK:  # a guess about the future: guess again later
            wf._remove_task(task.id)
            continue
        if not task.state & _FINISHED or task is wf.task_tree:
            raise MigrationRefused(  # the plan refuses these; never store a state that will not load
                MigrationPlan(target, False, f"'{task.task_spec.name}' has no counterpart in {target}")
            )
        parent = task.parent
        at = parent._children.index(task.id)
        parent._children[at : at + 1] = task._children
        for child in task.children:
            child._parent = parent.id
        top.event_manager.tasks.pop(task.id, None)
        del wf.tasks[task.id]


# -- helpers ------------------------------------------------------------------------------------
class _WorkflowDiff(WorkflowDiff):
    """``WorkflowDiff`` that aligns a task only with the same element id (defects 2 and 7).

    The stock one raises KeyError for a task whose spec ``SpecDiff`` did not reach, and maps a
    removed element to whatever took its place in the flow.
    """

    def _align(self, workflow: Any, spec_diff: SpecDiff) -> None:
        for task in workflow.get_tasks(skip_subprocesses=True):
            self.alignment[task] = _aligned(spec_diff, task.task_spec)
            if self.alignment[task] is None:
                self.removed.append(task)
            elif task.task_spec in spec_diff.changed:
                self.changed.append(task)


def _aligned(diff: SpecDiff, spec: Any) -> Any | None:
    candidate = diff.alignment.get(spec)
    return candidate if candidate is not None and candidate.name == spec.name else None


_lock = threading.Lock()
_registry: Any = None
_cache: list[tuple[Definition, Definition, dict[str, SpecDiff | None]]] = []
_CACHE_SIZE = 8


def _spec_diffs(old: Definition, new: Definition) -> dict[str, SpecDiff | None]:
    """SpecDiff of the main process and of each subprocess spec of ``old`` (None: gone), cached
    per pair of definitions: SpecDiff serializes every task spec to compare them (defect 6)."""
    global _registry
    with _lock:
        for cached_old, cached_new, diffs in _cache:
            if cached_old is old and cached_new is new:
                return diffs
        if _registry is None:  # never used to encode, so its shared encoder flag stays off
            _registry = BpmnWorkflowSerializer.configure(SPIFF_CONFIG)
        diffs = {old.spec.name: SpecDiff(_registry, old.spec, new.spec)}
        for name, spec in old.subprocess_specs.items():
            counterpart = new.subprocess_specs.get(name)
            diffs[name] = SpecDiff(_registry, spec, counterpart) if counterpart is not None else None
        _cache.insert(0, (old, new, diffs))
        del _cache[_CACHE_SIZE:]
        return diffs


def _workflows_with_diffs(
    workflow: Any, diffs: Mapping[str, SpecDiff | None]
) -> list[tuple[Any, SpecDiff | None]]:
    """The main workflow and each subprocess workflow (parents first), with the diff of its spec."""
    subs = sorted(workflow.subprocesses.values(), key=lambda sp: sp.depth)
    return [(wf, diffs.get(wf.spec.name)) for wf in (workflow, *subs)]


def _new_spec(new: Definition, name: str, is_top: bool) -> Any:
    return new.spec if is_top else new.subprocess_specs[name]


def _current(wf: Any) -> list[Any]:
    tasks = wf.get_tasks(state=_CURRENT, skip_subprocesses=True)
    return sorted((t for t in tasks if t.task_spec.bpmn_id), key=lambda t: (t.task_spec.bpmn_id, str(t.id)))


def _locate(definition: Definition, element_id: str) -> str | None:
    """Name of the (sub)process spec of ``definition`` that holds ``element_id``."""
    for spec in (definition.spec, *definition.subprocess_specs.values()):
        if element_id in spec.task_specs:
            return str(spec.name)
    return None


def _subprocess_label(definition: Definition, name: str) -> str:
    for spec in (definition.spec, *definition.subprocess_specs.values()):
        found = spec.task_specs.get(name)
        if found is not None:
            return _label(_name(found), name)
    return _label(name, name)


def _timers(spec: Any) -> tuple[tuple[str, str], ...]:
    """(kind, expression) of the timers a task spec waits for (an event-based gateway: several)."""
    ed = getattr(spec, "event_definition", None)
    found = ed.event_definitions if isinstance(ed, MultipleEventDefinition) else [ed]
    return tuple((type(d).__name__, d.expression) for d in found if isinstance(d, TimerEventDefinition))


def _reanchorable(before: tuple[tuple[str, str], ...], after: tuple[tuple[str, str], ...]) -> bool:
    duration = DurationTimerEventDefinition.__name__
    return bool(before and after) and before[0][0] == after[0][0] == duration


def _due(task: Any) -> datetime | None:
    if task.state != TaskState.WAITING or not _timers(task.task_spec):
        return None
    value = task.internal_data.get("event_value")
    return _moment(value.get("next") if isinstance(value, dict) else value)


def _moment(value: Any) -> datetime | None:
    """An aware UTC datetime from a stored timer value (a datetime or an ISO string)."""
    if isinstance(value, datetime):
        value = value.isoformat()
    try:
        return TimerEventDefinition.get_datetime(str(value)) if value else None
    except ValueError:
        return None


def _name(spec: Any) -> str:
    return str(spec.bpmn_name or spec.bpmn_id or spec.name)


def _label(name: str, element_id: str) -> str:
    return f"'{name}' ({element_id})" if name != element_id else f"'{element_id}'"


def _kind(spec: Any) -> str:
    cls = type(spec).__name__
    return _KINDS.get(cls) or re.sub(r"(?<!^)(?=[A-Z])", " ", cls).lower()
