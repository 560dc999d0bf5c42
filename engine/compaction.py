"""Bounded task trees for long-lived instances: "splice compaction" (notes/spiffworkflow.md §12.1).

SpiffWorkflow 3.2.0 never forgets a finished task. A ticket that loops (agent reply → customer
reply → agent reply ...) grows its tree by several levels per round until a recursive ancestor
walk raises ``RecursionError`` (round ~150 of our ticket loop, tree depth ~1000) or the
iterator's depth limit silently stalls the instance (~200-500 rounds, §5). :func:`compact`
splices finished history out of the tree after every step, keeping only what the engine still
reads:

* the root task (it holds full data; everything below is serialized as a delta);
* every task that is not COMPLETED/CANCELLED, and the *real* parent of each (``_inherit_data``
  and ``find_ancestor`` read it);
* the real parent of every kept join-type task (parallel/inclusive gateways and ``EndJoin`` read
  ``task.parent.task_spec`` / ``.state`` / ``.data``), and the split ancestor of structured joins
  (``BoundaryEventJoin`` looks its ``BoundaryEventSplit`` up with ``find_ancestor``);
* every child of an unfinished multi-instance task (it finds its last merged child by id);
* every branch point with two or more children leading to kept tasks (parallel forks, boundary
  event splits), so sibling branches stay siblings;
* one finished ``EndJoin`` per workflow: the newest, after its parent's data has absorbed (in
  ``last_state_change`` order) the parent data of all the others, because the final ``EndJoin``
  merges every finished instance's parent data when the process completes;
* ``workflow.last_task`` itself. The recipe in the notes moves it to its nearest kept ancestor;
  keeping the one task instead leaves ``last_task`` and ``run_next()`` exactly as in the stock
  engine (the most recent task is often a finished ``BoundaryEventJoin`` with no children).

Each kept task is re-attached to its nearest kept ancestor; everything else is dropped, together
with the subprocess workflows of dropped tasks and their event-manager registrations. Data is
safe because every task holds its full data in memory and the serializer recomputes deltas
against the new parent at save time; ``workflow.tasks`` keeps parent-before-child order, which
deserialization needs.

Consequences for callers: history is gone (keep the audit trail in our own tables), and
``reset_from_task_id`` can only target tasks that were kept. Behaviour is otherwise the stock
engine's, except where stock 3.2.0 reads stale history: a parallel or inclusive join inside a
loop counts a finished join instance of an earlier round as an arrived branch (stock fires early
and duplicates tokens when branches finish in a different order than last round; compacted, the
join waits as BPMN says), and merges those stale instances' data.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from copy import deepcopy
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.specs.control import _EndJoin
from SpiffWorkflow.bpmn.specs.mixins.multiinstance_task import MultiInstanceTask
from SpiffWorkflow.bpmn.util.task import BpmnTaskIterator
from SpiffWorkflow.specs.Join import Join
from SpiffWorkflow.util.deep_merge import DeepMerge
from SpiffWorkflow.util.task import TaskIterator, TaskState

__all__ = ["DEPTH_LIMIT", "compact", "patch_depth_limit"]

_log = logging.getLogger(__name__)

#: States whose tasks are history. ERROR is deliberately absent: a failed task stays visible.
_DONE = TaskState.COMPLETED | TaskState.CANCELLED

#: Default ``max_depth`` installed by :func:`patch_depth_limit` (stock: 1000).
DEPTH_LIMIT = 10**9


def compact(workflow: BpmnWorkflow) -> int:
    """Splice finished history out of the task tree in place (notes §12.1); returns tasks removed.

    Safe to call after every step; keeps everything the engine still reads (see the module
    docstring for the exact rules). Works on the top workflow and, parents first, on every live
    subprocess workflow; completed subprocesses are deleted with the task that ran them, and are
    left untouched while that task is kept. Idempotent: a second call removes nothing. A workflow
    whose tree is inconsistent (a task unreachable from its root) is left as it is.
    """
    removed = _compact_workflow(workflow, workflow)
    for sub in sorted(workflow.subprocesses.values(), key=lambda sp: sp.depth):
        if workflow.subprocesses.get(sub.parent_task_id) is not sub or sub.completed:
            continue  # deleted above together with its parent task, or finished: nothing runs in it
        removed += _compact_workflow(sub, workflow)
    return removed


def patch_depth_limit(limit: int = DEPTH_LIMIT) -> None:
    """Defensively raise TaskIterator/BpmnTaskIterator default max_depth (notes §5) — idempotent.

    Stock 3.2.0 stops iterating at depth 1000: a deep tree then hides its READY tasks, the
    instance stalls and ``is_completed()`` may even return True. Rewrites the ``max_depth``
    default of both iterator constructors (callers passing ``max_depth`` explicitly are unaffected).
    This does not prevent the ``RecursionError`` of recursive ancestor walks; :func:`compact` does.
    """
    for cls in (TaskIterator, BpmnTaskIterator):
        init: Any = cls.__init__
        params = [p for p in inspect.signature(init).parameters.values() if p.default is not p.empty]
        names = [p.name for p in params]
        defaults = list(init.__defaults__)
        if "max_depth" not in names or len(defaults) != len(names):
            raise RuntimeError(f"{cls.__name__}.__init__ has no max_depth default: SpiffWorkflow changed")
        defaults[names.index("max_depth")] = limit
        init.__defaults__ = tuple(defaults)


def _compact_workflow(wf: Any, top: BpmnWorkflow) -> int:
    """Compact one (sub)workflow's own tree; returns tasks removed (subprocesses included)."""
    tasks: dict[UUID, Any] = wf.tasks
    root = wf.task_tree
    order = _preorder(tasks, root.id)
    if order is None or len(order) != len(tasks):
        _log.warning("not compacting %s: its task tree does not reach every task", wf.spec.name)
        return 0

    last = wf.last_task.id if wf.last_task is not None else None
    keep = _tasks_to_keep(tasks, root.id, order, last)
    dropped = [tid for tid in order if tid not in keep]
    if not dropped:
        return 0

    # Re-attach every kept task to its nearest kept ancestor, preserving sibling order.
    new_parent: dict[UUID, UUID | None] = {root.id: None}
    new_children: dict[UUID, list[UUID]] = {tid: [] for tid in keep}
    stack: list[tuple[UUID, UUID | None]] = [(root.id, None)]
    while stack:
        tid, anchor = stack.pop()
        if tid in keep:
            if anchor is not None:
                new_parent[tid] = anchor
                new_children[anchor].append(tid)
            anchor = tid
        stack.extend((child, anchor) for child in reversed(tasks[tid]._children))

    for tid in keep:
        task = tasks[tid]
        task._parent = new_parent[tid]
        task._children = new_children[tid]

    removed = 0
    for tid in dropped:
        if tid in top.subprocesses:
            removed += _delete_subprocess(top, tid)
        top.event_manager.tasks.pop(tid, None)
        del tasks[tid]
        removed += 1
    _ensure_parent_first(tasks, root.id)
    return removed


def _tasks_to_keep(
    tasks: dict[UUID, Any], root_id: UUID, order: list[UUID], last_task: UUID | None
) -> set[UUID]:
    """The ids the engine may still read (module docstring); folds finished EndJoins as a side effect."""
    keep: set[UUID] = {root_id}
    if last_task in tasks:
        keep.add(last_task)
    for task in tasks.values():
        if not task.state & _DONE:
            keep.add(task.id)
            if task._parent is not None:
                keep.add(task._parent)

    end_join = _fold_end_joins(tasks.values())
    if end_join is not None:
        keep.add(end_join.id)

    for tid in list(keep):
        task = tasks[tid]
        spec = task.task_spec
        if isinstance(spec, Join):
            if task._parent is not None:
                keep.add(task._parent)
            if spec.split_task is not None and not task.state & _DONE:
                split = _ancestor_named(tasks, task, spec.split_task)
                if split is not None:
                    keep.add(split)
        if isinstance(spec, MultiInstanceTask) and not task.state & _DONE:
            keep.update(task._children)

    # Branch points: tasks with two or more children whose subtrees hold kept tasks.
    leads: set[UUID] = set()
    for tid in reversed(order):
        live = sum(1 for child in tasks[tid]._children if child in leads)
        if live >= 2:
            keep.add(tid)
        if tid in keep or live:
            leads.add(tid)
    return keep


def _fold_end_joins(tasks: Iterable[Any]) -> Any | None:
    """Keep one finished EndJoin carrying every finished instance's parent data; return it.

    ``UnstructuredJoin._run_hook`` merges, in ``last_state_change`` order, the parent data of every
    finished EndJoin instance into the one that completes the process. We merge the older
    instances' parent data (in that order) under the newest one's, so one instance says it all.
    """
    finished = [
        t for t in tasks if isinstance(t.task_spec, _EndJoin) and t.state & _DONE and t.parent is not None
    ]
    if not finished:
        return None
    finished.sort(key=lambda t: t.last_state_change)
    newest = finished[-1]
    if len(finished) > 1:
        merged: dict[str, Any] = {}
        for task in finished:
            DeepMerge.merge(merged, deepcopy(task.parent.data))
        newest.parent.data = merged
    return newest


def _ancestor_named(tasks: dict[UUID, Any], task: Any, spec_name: str) -> UUID | None:
    """Iterative ``Task.find_ancestor`` (the stock one recurses once per tree level)."""
    current = tasks.get(task._parent) if task._parent is not None else None
    while current is not None:
        if current.task_spec.name == spec_name:
            return current.id
        current = tasks.get(current._parent) if current._parent is not None else None
    return None


def _preorder(tasks: dict[UUID, Any], root_id: UUID) -> list[UUID] | None:
    """Depth-first pre-order of the tree (children in order), or None if it references unknown ids."""
    order: list[UUID] = []
    stack = [root_id]
    while stack:
        tid = stack.pop()
        task = tasks.get(tid)
        if task is None:
            return None
        order.append(tid)
        stack.extend(reversed(task._children))
    return order


def _ensure_parent_first(tasks: dict[UUID, Any], root_id: UUID) -> None:
    """Reorder ``tasks`` (in place) by pre-order if some task precedes its parent."""
    seen: set[UUID] = set()
    for tid, task in tasks.items():
        if task._parent is not None and task._parent not in seen:
            break
        seen.add(tid)
    else:
        return
    order = _preorder(tasks, root_id) or list(tasks)
    reordered = {tid: tasks[tid] for tid in order}
    tasks.clear()
    tasks.update(reordered)


def _delete_subprocess(top: BpmnWorkflow, task_id: UUID) -> int:
    """Delete the subprocess run by ``task_id`` and those nested in it; returns their task count."""
    removed = 0
    pending = [task_id]
    while pending:
        sub = top.subprocesses.pop(pending.pop(), None)
        if sub is None:
            continue
        for tid in sub.tasks:
            top.event_manager.tasks.pop(tid, None)
            if tid in top.subprocesses:
                pending.append(tid)
        removed += len(sub.tasks)
    return removed
