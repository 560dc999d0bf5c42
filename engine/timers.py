"""When does an instance next need waking? Due times of waiting timers (notes/spiffworkflow.md §3, §12.4).

SpiffWorkflow 3.2.0 has no scheduler: a timer fires only when somebody calls ``refresh_timers()``
(or ``do_engine_steps()``) after its due time, under a clock that says so. The first time a
catching timer task is updated (when it starts WAITING) the engine evaluates the timer expression
and stores the due time in ``task.internal_data['event_value']`` (serialized with the instance):

* duration and date timers: an ISO datetime string (a date timer stores whatever its expression
  returned — an ISO date/datetime string; naive values are read in the server's zone);
* cycle timers (``R3/PT1H``): ``{'cycles': remaining, 'next': ISO datetime, 'duration': seconds}``,
  exhausted when ``cycles == 0``;
* event-based gateways: one task with a ``MultipleEventDefinition``. ``waiting_events()`` reports it
  with ``value=None``, and **every timer behind the gateway shares one stored due time**: the first
  timer (in flow order) evaluates and stores it, the others compare their own clock against that
  same value, and only the first unseen timer's branch is taken when it passes.

A timer fires once the clock is strictly *after* its due time (``due < now``): run the instance
at (or after) the returned time plus a moment. These functions only read; they never fire a timer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.specs.event_definitions.multiple import MultipleEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import (
    CycleTimerEventDefinition,
    DurationTimerEventDefinition,
    TimeDateEventDefinition,
    TimerEventDefinition,
)
from SpiffWorkflow.util.task import TaskState

__all__ = ["due_times", "next_wake", "retime", "timer_facts"]


def due_times(workflow: BpmnWorkflow, now: datetime | None = None) -> dict[UUID, datetime]:
    """Due time (aware UTC) of every waiting timer, subprocesses and event-based gateways included.

    (notes/spiffworkflow.md §3, §12.4.)

    Keyed by the id of the WAITING task that waits (for a gateway: the gateway task, one entry for
    all its timers). Plain timers report the due time the engine stored. Behind an event-based
    gateway each timer is re-evaluated from its expression (``workflow.script_engine.evaluate``)
    and anchored at the moment the gateway started waiting — derived exactly from the engine's
    stored value when the first timer is a duration, else the gateway task's
    ``last_state_change`` — and the entry is min(predicted times, the shared time the engine will
    act on). A prediction that cannot be evaluated is skipped; the engine's value still counts.

    ``now`` (aware), when given, drops gateway predictions already passed that the engine will not
    act on (it only acts on its shared time), so a scheduler waking at such a time is not told to
    wake again at once, forever. Overdue *engine* times are always kept: they are due now.
    """
    result: dict[UUID, datetime] = {}
    for wf in (workflow, *workflow.subprocesses.values()):
        for task in wf.tasks.values():
            if task.state != TaskState.WAITING:
                continue
            definition = getattr(task.task_spec, "event_definition", None)
            if isinstance(definition, MultipleEventDefinition):
                due = _gateway_due(workflow, task, definition, now)
            elif isinstance(definition, TimerEventDefinition):
                due = _engine_due(task, definition)
            else:
                continue
            if due is not None:
                result[task.id] = due
    return result


def next_wake(workflow: BpmnWorkflow, now: datetime | None = None) -> datetime | None:
    """min(due_times) — when the instance next needs waking; None when no timer waits.

    ``now`` is passed to :func:`due_times` (pass the time of the step just run).
    """
    return min(due_times(workflow, now).values(), default=None)


def _engine_due(task: Any, definition: Any) -> datetime | None:
    """The due time the engine stored for a plain (non-gateway) timer task, if any."""
    value = task.internal_data.get("event_value")
    if isinstance(definition, CycleTimerEventDefinition):
        if isinstance(value, dict) and value.get("cycles") != 0:
            return _as_datetime(value.get("next"))
        return None
    if value is None:
        return None
    return _as_datetime(value)


def _gateway_due(workflow: Any, task: Any, definition: Any, now: datetime | None) -> datetime | None:
    """min(predicted due times of the gateway's unseen timers, the engine's shared due time)."""
    seen = [event.event_definition for event in task.internal_data.get("seen_events", [])]
    timers = [
        d
        for d in definition.event_definitions
        if isinstance(d, TimerEventDefinition)
        and not isinstance(d, CycleTimerEventDefinition)
        and d not in seen
    ]
    if not timers:
        return None  # messages/signals only; a cycle behind a gateway never fires by time in 3.2.0
    engine_due = _as_datetime(task.internal_data.get("event_value"))
    anchor = _gateway_anchor(workflow, task, timers[0], engine_due)
    predicted = [p for p in (_predict(workflow, task, d, anchor) for d in timers) if p is not None]
    if now is not None and engine_due is not None:
        predicted = [p for p in predicted if p > now or p >= engine_due]
    candidates = [*predicted, *([engine_due] if engine_due is not None else [])]
    return min(candidates, default=None)


def _gateway_anchor(workflow: Any, task: Any, first: Any, engine_due: datetime | None) -> datetime:
    """When the gateway started waiting: exact from the stored due time of a first duration timer.

    ``last_state_change`` comes from ``time.time()``, which a fake engine clock does not move, so
    it is only the fallback (it agrees with the engine whenever the engine runs on real time).
    """
    if engine_due is not None and isinstance(first, DurationTimerEventDefinition):
        try:
            parsed = TimerEventDefinition.parse_iso_duration(
                str(workflow.script_engine.evaluate(task, first.expression))
            )
            return engine_due - TimerEventDefinition.get_timedelta_from_end(parsed, engine_due)
        except Exception:  # a prediction must never break the caller; fall back
            pass
    return datetime.fromtimestamp(task.last_state_change, UTC)


def _predict(workflow: Any, task: Any, definition: Any, anchor: datetime) -> datetime | None:
    """Due time of one timer behind a gateway, as if it had been evaluated on its own at ``anchor``."""
    try:
        value = workflow.script_engine.evaluate(task, definition.expression)
        if isinstance(value, datetime):
            return _as_datetime(value)
        text = str(value).strip()
        if text.upper().startswith("P"):
            parsed = TimerEventDefinition.parse_iso_duration(text)
            return anchor + TimerEventDefinition.get_timedelta_from_start(parsed, anchor)
        return _as_datetime(TimerEventDefinition.parse_time_or_duration(text))
    except Exception:  # scripts may raise anything; the engine's own value still counts
        return None


def _as_datetime(value: Any) -> datetime | None:
    """An aware UTC datetime from a stored timer value (ISO string or datetime); None if unreadable."""
    try:
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, str) and not value.strip().upper().startswith("P"):
            moment = TimerEventDefinition.parse_time_or_duration(value.strip())
        else:
            return None
        if not isinstance(moment, datetime):
            return None
        return TimerEventDefinition.get_datetime(moment.isoformat())
    except (ValueError, TypeError, AttributeError):
        return None


def retime(workflow: BpmnWorkflow, mentioning: str) -> int:
    """Re-evaluate armed date timers whose expression mentions ``mentioning``; how many moved.

    SpiffWorkflow evaluates a timer expression once, when the timer starts waiting. A timer such
    as ``sla_due("resolution", 75)`` must follow its clock when the clock pauses, resumes or
    gets a new target, so the caller re-times after an event that changed a clock, under the
    step's clock and functions. Timers behind event-based gateways are left alone (their due
    time is shared and predicted, :func:`due_times`).
    """
    moved = 0
    for wf in (workflow, *workflow.subprocesses.values()):
        for task in wf.tasks.values():
            definition = getattr(task.task_spec, "event_definition", None)
            if (
                task.state != TaskState.WAITING
                or not isinstance(definition, TimeDateEventDefinition)
                or mentioning not in (definition.expression or "")
                or task.internal_data.get("event_value") is None
            ):
                continue
            value = workflow.script_engine.evaluate(task, definition.expression)
            if value != task.internal_data.get("event_value"):
                task.internal_data["event_value"] = value
                moved += 1
    return moved


def timer_facts(task: Any) -> dict[str, Any] | None:
    """For a timer event task: its expression and the due time it fired at; else None."""
    definition = getattr(task.task_spec, "event_definition", None)
    if not isinstance(definition, TimerEventDefinition):
        return None
    value = task.internal_data.get("event_value")
    due = _engine_due(task, definition) if value is not None else None
    return {"expression": definition.expression, "due": due.isoformat() if due else None}
