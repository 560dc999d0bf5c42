"""Splice compaction (engine/compaction.py): same behaviour as the stock engine, bounded state.

The ticket-loop diagrams live in tests/data/engine/. Time is driven with engine.clock.frozen_at
around every engine call; messages are delivered with ``send_event`` as the desk would.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.multiple import MultipleEventDefinition
from SpiffWorkflow.bpmn.util.task import BpmnTaskIterator
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.util.task import TaskIterator, TaskState

from engine.clock import frozen_at
from engine.compaction import DEPTH_LIMIT, compact, patch_depth_limit
from engine.parser import DeskParser
from engine.xmlload import load_xml

DATA = Path(__file__).resolve().parents[1] / "data" / "engine"
REGISTRY = BpmnWorkflowSerializer.configure(SPIFF_CONFIG)
SERIALIZER = BpmnWorkflowSerializer(REGISTRY)
START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
DONE = TaskState.COMPLETED | TaskState.CANCELLED
UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

#: variant -> (file, process id)
VARIANTS = {
    "sequential": ("ticket_loop.bpmn", "ticket_loop"),
    "parallel": ("ticket_loop_parallel.bpmn", "ticket_loop_parallel"),
    "customer_note": ("ticket_loop_note.bpmn", "ticket_loop_note"),
    "subprocess": ("ticket_loop_subprocess.bpmn", "ticket_loop_subprocess"),
    "assorted": ("ticket_assorted.bpmn", "ticket_assorted"),
    "parallel_review": ("parallel_review_loop.bpmn", "parallel_review_loop"),
}
#: action -> message it delivers
MESSAGES = {"customer": "customer_replied", "escalation": "escalation_requested"}


@cache
def load_spec(variant: str) -> tuple[Any, dict[str, Any]]:
    filename, process_id = VARIANTS[variant]
    parser = DeskParser()
    parser.add_bpmn_xml(load_xml((DATA / filename).read_bytes(), filename), filename=filename)
    return parser.get_spec(process_id), parser.get_subprocess_specs(process_id)


def message_definition(variant: str, name: str = "customer_replied") -> Any:
    """The parsed catch definition for ``name`` (behind a gateway it lives in the gateway's spec)."""
    spec, subprocess_specs = load_spec(variant)
    for process in (spec, *subprocess_specs.values()):
        for task_spec in process.task_specs.values():
            definition = getattr(task_spec, "event_definition", None)
            candidates = (
                definition.event_definitions
                if isinstance(definition, MultipleEventDefinition)
                else [definition]
            )
            for candidate in candidates:
                if isinstance(candidate, MessageEventDefinition) and candidate.name == name:
                    return candidate
    raise LookupError(name)


def reload(workflow: BpmnWorkflow) -> BpmnWorkflow:
    return SERIALIZER.deserialize_json(SERIALIZER.serialize_json(workflow))


def stored_size(workflow: BpmnWorkflow) -> int:
    """JSON bytes of an instance without its process definition (stored once per version)."""
    state = SERIALIZER.to_dict(workflow)
    state.pop("spec")
    state.pop("subprocess_specs")
    return len(json.dumps(state))


def all_tasks(workflow: BpmnWorkflow) -> list[Any]:
    return [task for wf in (workflow, *workflow.subprocesses.values()) for task in wf.tasks.values()]


def open_tasks(workflow: BpmnWorkflow) -> dict[Any, tuple[str, int, str]]:
    """Unfinished tasks by id: spec name, state, data."""
    return {
        t.id: (t.task_spec.name, t.state, _canonical(t.data))
        for t in all_tasks(workflow)
        if not t.state & DONE
    }


def tree_depth(workflow: BpmnWorkflow) -> int:
    """Depth of the deepest task, in one pass (``Task.depth`` walks to the root for every task)."""
    depth: dict[Any, int] = {}
    for task in workflow.tasks.values():  # parents come before their children
        depth[task.id] = depth[task._parent] + 1 if task._parent is not None else 0
    return max(depth.values())


class Stalled(Exception):
    """The agent's task should be ready but the engine shows none (the depth-limit stall)."""


@dataclass
class Ticket:
    """One instance of a ticket loop, stepped the way the desk's worker steps it."""

    variant: str
    compacted: bool
    start_data: dict[str, Any] = field(default_factory=lambda: {"ticket_id": "T-1"})
    now: datetime = START
    workflow: BpmnWorkflow = field(init=False)

    def __post_init__(self) -> None:
        spec, subprocess_specs = load_spec(self.variant)
        with frozen_at(self.now):
            self.workflow = BpmnWorkflow(spec, subprocess_specs)
            self.workflow.get_next_task(spec_name="Start").data = dict(self.start_data)
            self.workflow.do_engine_steps()
        self.save()

    def step(self, action: str, label: int, *, reload_after: bool | None = None) -> None:
        """Run ``action`` (tick, reply, customer, escalation) now; compact and reload if compacted."""
        wf = self.workflow
        with frozen_at(self.now):
            wf.refresh_timers()
            if action == "reply":
                ready = wf.get_tasks(state=TaskState.READY, manual=True)
                if not ready:
                    raise Stalled(f"round {label}: no agent task is ready")
                for task in ready:
                    task.data["draft"] = f"reply {label}"
                    task.run()
            elif action in MESSAGES:
                definition = message_definition(self.variant, MESSAGES[action])
                payload = {"ticket_id": "T-1", "body": f"message {label}"}
                correlations = definition.calculate_correlations(
                    wf.script_engine, definition.correlation_properties, payload
                )
                wf.send_event(BpmnEvent(definition, payload, correlations))
            wf.do_engine_steps()
        self.save(reload_after)

    def save(self, reload_after: bool | None = None) -> None:
        if self.compacted:
            compact(self.workflow)
            if reload_after is None or reload_after:
                self.workflow = reload(self.workflow)


def ticket_script(rounds: int, *, notes: bool) -> Iterator[tuple[timedelta, str, int]]:
    """(clock advance, action, round): reminders every 3rd round, an SLA breach every 10th, customer
    notes while the agent drafts (every 4th round, when the diagram catches them), and a final
    seven days of silence that auto-closes the ticket."""
    for r in range(rounds):
        if r % 3 == 1:
            yield timedelta(minutes=90), "tick", r  # reminder (PT1H) fires
        if r % 10 == 7:
            yield timedelta(hours=4, minutes=5), "tick", r  # SLA (PT4H) interrupts, agent replies again
        if notes and r % 4 == 2:
            yield timedelta(minutes=10), "customer", r  # caught by the non-interrupting boundary
        yield timedelta(minutes=5), "reply", r
        yield timedelta(minutes=30), "customer", r
    yield timedelta(minutes=5), "reply", rounds
    yield timedelta(days=8), "tick", rounds  # P7D behind the event-based gateway closes the ticket


def _canonical(value: Any) -> str:
    """JSON of a value, task ids masked (multi-instance tasks record their children's ids)."""
    return UUID_TEXT.sub("<id>", json.dumps(REGISTRY.convert(value), sort_keys=True, default=repr))


def observable(workflow: BpmnWorkflow) -> dict[str, Any]:
    """Everything the desk (or the engine's next step) can see of an instance, ids aside."""
    unfinished = sorted(
        (t.task_spec.name, t.state, _canonical(t.data), _canonical(t.internal_data))
        for t in all_tasks(workflow)
        if not t.state & DONE
    )
    waiting = sorted(
        _canonical(
            [
                e.name,
                e.event_type,
                [p.name for p in e.value] if isinstance(e.value, list) else e.value,
                e.correlations,
            ]
        )
        for e in workflow.waiting_events()
    )
    return {
        "unfinished": unfinished,
        "waiting_events": waiting,
        "correlations": _canonical(workflow.correlations),
        "completed": workflow.is_completed(),
        "data": _canonical(workflow.data),
        "last_task": workflow.last_task.task_spec.name if workflow.last_task else None,
    }


def run_in_lockstep(
    variant: str, script: Iterable[tuple[timedelta, str, int]], start_data: dict[str, Any] | None = None
) -> tuple[Ticket, Ticket]:
    """Drive a stock and a compacted-and-reloaded instance with the same script and clock,
    asserting after every step that nothing observable differs."""
    data = start_data or {"ticket_id": "T-1"}
    reference, compacted = Ticket(variant, False, data), Ticket(variant, True, data)
    for steps, (advance, action, label) in enumerate(script, start=1):
        for ticket in (reference, compacted):
            ticket.now += advance
            ticket.step(action, label)
        expected, actual = observable(reference.workflow), observable(compacted.workflow)
        assert actual == expected, f"step {steps} ({action}, round {label}) differs"
    return reference, compacted


@pytest.fixture
def deep_trees() -> Iterator[None]:
    """Let the *uncompacted* reference run deep: patched iterator depth, higher recursion limit."""
    saved = (TaskIterator.__init__.__defaults__, BpmnTaskIterator.__init__.__defaults__)
    limit = sys.getrecursionlimit()
    patch_depth_limit()
    sys.setrecursionlimit(max(limit, 20_000))
    try:
        yield
    finally:
        TaskIterator.__init__.__defaults__, BpmnTaskIterator.__init__.__defaults__ = saved
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize(
    ("variant", "rounds"),
    [
        ("sequential", 150),
        ("customer_note", 150),
        ("subprocess", 150),
        ("parallel", 40),
        # Stock 3.2.0 checks a parallel join against every earlier instance with a recursive
        # ancestor walk: the *uncompacted reference* costs O(rounds^3) (~160 s for 150 rounds).
        pytest.param("parallel", 150, marks=pytest.mark.slow),
    ],
)
def test_compacted_reloaded_ticket_behaves_exactly_like_the_stock_engine(
    variant: str, rounds: int, deep_trees: None
) -> None:
    reference, compacted = run_in_lockstep(variant, ticket_script(rounds, notes=variant == "customer_note"))

    assert reference.workflow.is_completed()
    fired = Counter(t.task_spec.name for t in all_tasks(reference.workflow) if t.state == TaskState.COMPLETED)
    assert fired["remind"] >= rounds // 3 and fired["escalate"] >= rounds // 10  # the timers really fired
    if variant == "customer_note":
        assert fired["record_note"] >= rounds // 4
    assert len(all_tasks(compacted.workflow)) < 10 < rounds * 5 < len(all_tasks(reference.workflow))


def test_compaction_matches_the_stock_engine_around_multi_instance_loops_and_event_subprocesses(
    deep_trees: None,
) -> None:
    def script(rounds: int) -> Iterator[tuple[timedelta, str, int]]:
        for r in range(rounds):
            if r % 4 == 1:
                yield timedelta(minutes=5), "escalation", r  # starts the event subprocess
            yield timedelta(minutes=5), "reply", r  # checklist item 1
            if r % 3 == 0:
                yield timedelta(minutes=70), "tick", r  # the R2/PT1H nag fires
            yield timedelta(minutes=5), "reply", r  # checklist item 2
            yield timedelta(minutes=30), "customer", r

    # 25 rounds: the stock reference re-checks every earlier parallel join instance (cubic cost).
    reference, compacted = run_in_lockstep("assorted", script(25), {"max_rounds": 25})

    fired = Counter(t.task_spec.name for t in all_tasks(reference.workflow) if t.state == TaskState.COMPLETED)
    assert fired["nagged"] >= 8 and fired["page_lead"] >= 6 and fired["count_round"] == 25
    assert len(reference.workflow.subprocesses) >= 6 > len(compacted.workflow.subprocesses)
    assert len(all_tasks(compacted.workflow)) * 20 < len(all_tasks(reference.workflow))


def test_looped_parallel_join_waits_for_both_branches_once_compacted_unlike_stock() -> None:
    """The one behaviour compaction changes on purpose. Stock 3.2.0 lets a parallel join count the
    cancelled join instance of an *earlier* round as an arrived branch, so when the branches finish
    in another order than last round it fires early and duplicates tokens (then crashes). Dropping
    finished history removes those stale instances: compacted, the join waits as BPMN says."""

    def finish_round(ticket: Ticket, first: str) -> list[str]:
        ready = {t.task_spec.name: t for t in ticket.workflow.get_tasks(state=TaskState.READY, manual=True)}
        with frozen_at(ticket.now):
            ready[first].run()
            ticket.workflow.do_engine_steps()
        ticket.save()
        return sorted(t.task_spec.name for t in ticket.workflow.get_tasks(state=TaskState.READY, manual=True))

    compacted, stock = Ticket("parallel_review", compacted=True), Ticket("parallel_review", compacted=False)
    for ticket in (compacted, stock):  # round 0: the agent finishes first
        assert finish_round(ticket, "agent_reply") == ["qa_review"]
        assert finish_round(ticket, "qa_review") == ["agent_reply", "qa_review"]

    assert finish_round(stock, "qa_review") == ["agent_reply", "agent_reply", "qa_review"]  # fired early

    for rnd in range(1, 10):  # QA first in odd rounds
        first, second = ("qa_review", "agent_reply") if rnd % 2 else ("agent_reply", "qa_review")
        assert finish_round(compacted, first) == [second], f"round {rnd}"
        assert finish_round(compacted, second) == ([] if rnd == 9 else ["agent_reply", "qa_review"])
    assert compacted.workflow.is_completed()
    assert compacted.workflow.data["rounds"] == 10


def test_compaction_keeps_a_5000_round_ticket_small_and_flat() -> None:
    ticket = Ticket("sequential", compacted=True)
    sizes: list[int] = []
    counts: list[int] = []
    for advance, action, label in ticket_script(5000, notes=False):
        ticket.now += advance
        # Reload every 100th round as the worker would; stepping in memory keeps the test fast.
        ticket.step(action, label, reload_after=label % 100 == 0)
        if action == "customer":
            counts.append(len(all_tasks(ticket.workflow)))
            if label % 10 == 0 or label > 4990:  # converting the instance costs as much as a step
                sizes.append(stored_size(ticket.workflow))
    assert ticket.workflow.is_completed()
    assert len(counts) == 5000
    assert max(sizes) <= 64 * 1024
    assert max(counts[100:]) <= max(counts[50:101])
    assert max(sizes[10:]) <= max(sizes[5:11]) + 64  # from round 100 on; round counters gain digits


def test_without_compaction_the_loop_grows_until_the_engine_breaks() -> None:
    """The documented failure (notes §5, §12.1): each round deepens the tree by several levels
    until a recursive ancestor walk overflows or the iterator's depth limit hides the next task."""
    ticket = Ticket("sequential", compacted=False)
    depths: list[int] = []
    with pytest.raises((RecursionError, Stalled)):
        for advance, action, label in ticket_script(400, notes=False):
            ticket.now += advance
            ticket.step(action, label)
            if action == "customer":
                depths.append(tree_depth(ticket.workflow))
    assert len(depths) < 300
    assert all(later - earlier >= 5 for earlier, later in pairwise(depths))


def test_compact_keeps_every_unfinished_task_and_is_idempotent() -> None:
    ticket = Ticket("customer_note", compacted=False)
    for advance, action, label in ticket_script(12, notes=True):
        if action == "tick" and advance > timedelta(days=1):
            break  # stop before the auto-close so tasks are still open
        ticket.now += advance
        ticket.step(action, label)
    wf = ticket.workflow
    unfinished = open_tasks(wf)
    before = observable(wf)

    removed = compact(wf)

    assert removed > 100
    assert compact(wf) == 0
    assert open_tasks(wf) == unfinished
    assert observable(wf) == before
    seen: set[Any] = set()
    for task in wf.tasks.values():  # parent before child: deserialization rebuilds data deltas in order
        assert task._parent is None or task._parent in seen
        assert all(child in wf.tasks for child in task._children)
        seen.add(task.id)
    assert all(task.id in wf.tasks for task in wf.event_manager.tasks.values())
    assert observable(reload(wf)) == before


def test_compact_deletes_the_subprocess_workflows_of_finished_rounds() -> None:
    reference = Ticket("subprocess", compacted=False)
    compacted = Ticket("subprocess", compacted=True)
    for advance, action, label in ticket_script(30, notes=False):
        if action == "tick" and advance > timedelta(days=1):
            break
        for ticket in (reference, compacted):
            ticket.now += advance
            ticket.step(action, label)
    assert len(reference.workflow.subprocesses) > 30
    assert len(compacted.workflow.subprocesses) == 1  # only the round in progress
    live = {t.id for t in all_tasks(compacted.workflow)}
    assert set(compacted.workflow.event_manager.tasks) <= live


def test_compacting_a_finished_instance_keeps_its_outcome() -> None:
    ticket = Ticket("customer_note", compacted=False)
    for advance, action, label in ticket_script(6, notes=True):
        ticket.now += advance
        ticket.step(action, label)
    wf = ticket.workflow
    assert wf.is_completed()
    data = dict(wf.data)

    compact(wf)
    restored = reload(wf)

    assert restored.is_completed()
    assert restored.data == data
    assert len(restored.tasks) <= 4


def test_patch_depth_limit_raises_both_iterator_defaults_idempotently(deep_trees: None) -> None:
    patch_depth_limit()
    patch_depth_limit()
    for cls in (TaskIterator, BpmnTaskIterator):
        defaults = cls.__init__.__defaults__
        assert defaults is not None and defaults[1] == DEPTH_LIMIT
