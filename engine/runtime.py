"""Running one workflow instance: start, complete a user task, deliver a message, fire timers.

Every operation takes ``now`` (aware) and the desk ``functions`` scripts may call for this
call only, runs the instance until it is blocked again (waiting on people, messages or timers)
and returns the BPMN elements it completed, for the audit trail. The caller persists
:meth:`Instance.dump` and :meth:`Instance.next_wake` in the same transaction, or discards the
object on error: a failed step never leaves half-advanced state behind.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnEvent
from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.multiple import MultipleEventDefinition
from SpiffWorkflow.bpmn.specs.mixins import UserTaskMixin
from SpiffWorkflow.exceptions import TaskNotFoundException
from SpiffWorkflow.util.task import TaskState

from . import state as state_store
from .clock import frozen_at
from .compaction import compact, patch_depth_limit
from .errors import DefinitionError, EngineError, Problem, ScriptError, TaskNotReady
from .forms import validate_submission
from .parser import DeskParser
from .sandbox import SandboxedScriptEngine, as_script_error
from .timers import next_wake, retime, timer_facts
from .xmlload import line_of, load_xml

Functions = Mapping[str, Callable[..., Any]]

#: Engine passes per call before we call an instance stuck (a timer cycle catching up after a
#: long outage needs one pass per missed cycle).
MAX_PASSES = 1000
#: Elements one engine pass may complete before we call it an endless loop: a cycle with no wait
#: state never leaves do_engine_steps(). SpiffWorkflow's cost grows with the square of the steps
#: (~1 s for 1,000, ~140 s for 10,000); the bundled lifecycle needs fewer than 10 a pass.
MAX_STEPS = 1_000

patch_depth_limit()


@dataclass(frozen=True)
class Step:
    """One BPMN element completed during an engine call (one audit row)."""

    task_id: str
    element_id: str
    name: str
    kind: str
    lane: str | None
    #: For a timer event: {"expression": ..., "due": ISO time it was due}; else None.
    timer: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class UserTaskView:
    """A READY user task, as the inbox projection needs it."""

    task_id: str
    element_id: str
    name: str
    lane: str | None
    form: list[dict[str, Any]]
    documentation: str | None


@dataclass
class Definition:
    """A parsed, runnable process definition (one deployed version)."""

    xml: bytes
    filename: str
    process_id: str
    spec: Any = field(repr=False)
    subprocess_specs: dict[str, Any] = field(repr=False)
    _messages: dict[str, Any] | None = field(default=None, init=False, repr=False)

    @property
    def content_hash(self) -> str:
        return content_hash(self.xml)

    @classmethod
    def parse(cls, xml: bytes, filename: str, process_id: str) -> Definition:
        """Parse ``process_id`` from ``xml``; raises :class:`DefinitionError` with element and line.

        This is the loader, not the linter: deploy runs ``engine.validate`` first.
        """
        root = load_xml(xml, filename)
        parser = DeskParser()
        try:
            parser.add_bpmn_xml(root, filename=filename)
            spec = parser.get_spec(process_id)
            subprocess_specs = parser.get_subprocess_specs(process_id)
        except Exception as exc:  # SpiffWorkflow raises ValidationException, KeyError, TypeError...
            element = getattr(exc, "id", "") or ""
            raise DefinitionError([Problem(filename, line_of(root, element), element, str(exc))]) from None
        return cls(xml, filename, process_id, spec, subprocess_specs)

    def message_event(self, name: str) -> Any | None:
        """The parsed message event definition called ``name`` (catching side), if any.

        Behind an event-based gateway SpiffWorkflow keeps the definitions on the gateway's
        ``MultipleEventDefinition``, not on the catch events, so look inside those too.
        """
        return self._message_definitions().get(name)

    def message_names(self) -> set[str]:
        """Every message name some catch event of this definition listens for."""
        return set(self._message_definitions())

    def _message_definitions(self) -> dict[str, Any]:
        if self._messages is not None:
            return self._messages
        found: dict[str, Any] = {}
        for spec in [self.spec, *self.subprocess_specs.values()]:
            for task_spec in spec.task_specs.values():
                for ed in _event_definitions(getattr(task_spec, "event_definition", None)):
                    if isinstance(ed, MessageEventDefinition):
                        found.setdefault(ed.name, ed)
        self._messages = found
        return found


def _event_definitions(ed: Any) -> list[Any]:
    if isinstance(ed, MultipleEventDefinition):
        return list(ed.event_definitions)
    return [ed] if ed is not None else []


def content_hash(xml: bytes) -> str:
    """The identity of a definition's content: sha256 of its bytes."""
    return hashlib.sha256(xml).hexdigest()


class Instance:
    """One running workflow instance of a :class:`Definition`."""

    def __init__(self, definition: Definition, workflow: state_store.DeskWorkflow):
        self.definition = definition
        self.workflow = workflow
        #: Called with each Step as it starts, so an audit trail interleaves steps with the
        #: desk operations their scripts perform.
        self.on_step: Callable[[Step], None] | None = None
        self._functions: Functions | None = None  # those of the last engine call, for next_wake()

    # -- creating and storing ------------------------------------------------------------
    @classmethod
    def start(
        cls,
        definition: Definition,
        *,
        data: Mapping[str, Any],
        now: datetime,
        functions: Functions,
        on_step: Callable[[Step], None] | None = None,
    ) -> tuple[Instance, list[Step]]:
        """Create an instance, seed its start data and run it until it blocks."""
        workflow = state_store.DeskWorkflow(
            definition.spec, definition.subprocess_specs, script_engine=SandboxedScriptEngine()
        )
        start = workflow.get_next_task(state=TaskState.READY)
        if start is not None:
            start.data.update(data)
        instance = cls(definition, workflow)
        instance.on_step = on_step
        with instance._call(now, functions) as steps:
            instance._advance(steps)
        return instance, steps

    @classmethod
    def load(cls, definition: Definition, state: str) -> Instance:
        """Rebuild an instance stored with :meth:`dump` (always with a sandboxed engine)."""
        return cls(definition, state_store.restore(state, definition.spec, definition.subprocess_specs))

    def dump(self) -> str:
        """Compact the finished history out of the tree, then serialize (no spec inside)."""
        compact(self.workflow)
        return state_store.dump(self.workflow)

    # -- reading -------------------------------------------------------------------------
    @property
    def completed(self) -> bool:
        return bool(self.workflow.is_completed())

    def next_wake(
        self, now: datetime | None = None, *, functions: Functions | None = None
    ) -> datetime | None:
        """When a timer of this instance next falls due (None: no timer waits).

        Pass the time of the step just run: behind an event-based gateway a predicted time
        that has passed without firing is then dropped instead of waking the instance forever.
        Those predictions evaluate timer expressions again, as the engine did: under the clock
        frozen at ``now`` and with ``functions`` (by default those of this object's last engine
        call), so a timer such as ``sla_due("resolution")`` is predicted too.
        """
        functions = self._functions if functions is None else functions
        with ExitStack() as stack:
            if now is not None:
                stack.enter_context(frozen_at(now))
            if functions is not None:
                stack.enter_context(self.workflow.script_engine.bound(functions))
            return next_wake(self.workflow, now)

    def user_tasks(self) -> list[UserTaskView]:
        """Every READY user task, in a stable order."""
        tasks = self.workflow.get_tasks(state=TaskState.READY, spec_class=UserTaskMixin)
        return [_view(t) for t in sorted(tasks, key=lambda t: (t.task_spec.bpmn_id or "", str(t.id)))]

    def waiting_messages(self) -> set[str]:
        """Names of the messages some waiting catch event of this instance would take now."""
        return {name for name in self.definition.message_names() if self._catchers(name)}

    def _catchers(self, name: str) -> list[Any]:
        ed = self.definition.message_event(name)
        if ed is None:
            return []
        return list(self.workflow.get_tasks(state=TaskState.WAITING, catches_event=BpmnEvent(ed, {})))

    # -- advancing -----------------------------------------------------------------------
    def complete_task(
        self, task_id: str, data: Mapping[str, Any], *, now: datetime, functions: Functions
    ) -> tuple[dict[str, Any], list[Step]]:
        """Validate ``data`` against the task's form, complete it and run on.

        Raises :class:`TaskNotReady` if the task is unknown or not READY, and
        :class:`~engine.errors.FormInvalid` (nothing changed) when the data fails the form.
        """
        task = self._ready_user_task(task_id)
        cleaned = validate_submission(task.task_spec.extensions.get("form", []), dict(data))
        with self._call(now, functions) as steps:
            # Timers that fell due before this event come first (one event at a time, in
            # time order): an agent cannot complete a task its deadline already took away.
            self._advance(steps)
            task = self._ready_user_task(task_id)
            self._record(steps, task)
            task.data.update(cleaned)
            task.run()
            self._advance(steps)
        return cleaned, steps

    def deliver_message(
        self, name: str, payload: Mapping[str, Any], *, now: datetime, functions: Functions
    ) -> tuple[bool, list[Step]]:
        """Give message ``name`` to a catch event waiting for it; False (nothing changed) if none.

        SpiffWorkflow drops messages nobody waits for; the caller keeps undelivered ones and
        offers them again after later steps (:meth:`waiting_messages`).
        """
        ed = self.definition.message_event(name)
        if ed is None:
            return False, []
        with self._call(now, functions) as steps:
            # Fire overdue timers first: behind an event-based gateway SpiffWorkflow 3.2.0 would
            # otherwise take the message *and* every passed timer, running both branches.
            self._advance(steps)
            if not self._catchers(name):
                return False, steps
            self.workflow.catch(BpmnEvent(ed, dict(payload)))
            self._advance(steps)
        return True, steps

    def fire_due_timers(self, *, now: datetime, functions: Functions) -> list[Step]:
        """Fire every timer due at ``now`` and run on (refresh first: notes §3, §10.9)."""
        with self._call(now, functions) as steps:
            self._advance(steps)
        return steps

    def retime_timers(self, *, now: datetime, functions: Functions, mentioning: str) -> int:
        """Re-evaluate waiting date timers whose expression mentions ``mentioning`` (no firing).

        For timers that follow something outside the diagram, such as an SLA clock paused
        or given a new target during this event (:func:`engine.timers.retime`).
        """
        with self._call(now, functions):
            return retime(self.workflow, mentioning)

    # -- internals -----------------------------------------------------------------------
    @contextmanager
    def _call(self, now: datetime, functions: Functions) -> Iterator[list[Step]]:
        steps: list[Step] = []
        self._functions = functions
        with frozen_at(now), self.workflow.script_engine.bound(functions):
            try:
                yield steps
            except EngineError:  # TaskNotReady, FormInvalid, ScriptError... are ours already
                raise
            except Exception as exc:
                raise as_script_error(exc) from exc

    def _advance(self, steps: list[Step]) -> None:
        count = 0  # elements completed in this pass

        def record(task: Any) -> None:
            nonlocal count
            if task.task_spec.bpmn_id:
                count += 1
                if count > MAX_STEPS:
                    message = (
                        f"more than {MAX_STEPS:,} steps in one event — an endless loop without a "
                        "wait state? Put a user task, timer or message on the way back"
                    )
                    raise ScriptError(message, element_id=task.task_spec.bpmn_id)
            self._record(steps, task)

        for _ in range(MAX_PASSES):
            count = 0
            self.workflow.refresh_timers()
            self.workflow.do_engine_steps(will_complete_task=record)
            if not any(not t.task_spec.manual for t in self.workflow.get_tasks(state=TaskState.READY)):
                return
        raise ScriptError(f"instance still busy after {MAX_PASSES} engine passes (an endless loop?)")

    def _record(self, steps: list[Step], task: Any) -> None:
        if not task.task_spec.bpmn_id:  # SpiffWorkflow's internal split/join helpers
            return
        step = _step(task)
        steps.append(step)
        if self.on_step is not None:
            self.on_step(step)

    def _ready_user_task(self, task_id: str) -> Any:
        try:
            task = self.workflow.get_task_from_id(UUID(task_id))
        except (ValueError, TaskNotFoundException):
            task = None
        if task is None or not isinstance(task.task_spec, UserTaskMixin):
            raise TaskNotReady(f"task {task_id} is not a task of this instance")
        if task.state != TaskState.READY:
            raise TaskNotReady(f"task {task_id} is no longer waiting ({TaskState.get_name(task.state)})")
        return task


def _step(task: Any) -> Step:
    spec = task.task_spec
    return Step(
        str(task.id),
        spec.bpmn_id or "",
        spec.bpmn_name or spec.bpmn_id or "",
        type(spec).__name__,
        getattr(spec, "lane", None),
        timer_facts(task),
    )


def _view(task: Any) -> UserTaskView:
    spec = task.task_spec
    return UserTaskView(
        task_id=str(task.id),
        element_id=spec.bpmn_id,
        name=spec.bpmn_name or spec.bpmn_id,
        lane=spec.lane,
        form=list(spec.extensions.get("form", [])),
        documentation=getattr(spec, "documentation", None),
    )
