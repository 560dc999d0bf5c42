"""Timer due times (engine/timers.py): predicted wake-ups match what the engine then does.

Time is driven with engine.clock.frozen_at around every engine call and instances are reloaded
between calls, as the desk's worker does.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from SpiffWorkflow.bpmn import BpmnWorkflow
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.util.task import TaskState

from engine.clock import frozen_at
from engine.compaction import compact
from engine.parser import DeskParser
from engine.timers import due_times, next_wake
from engine.xmlload import load_xml

DATA = Path(__file__).resolve().parents[1] / "data" / "engine"
SERIALIZER = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SPIFF_CONFIG))
START = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)


@cache
def load_spec(filename: str, process_id: str) -> tuple[Any, dict[str, Any]]:
    parser = DeskParser()
    parser.add_bpmn_xml(load_xml((DATA / filename).read_bytes(), filename), filename=filename)
    return parser.get_spec(process_id), parser.get_subprocess_specs(process_id)


def start(filename: str, process_id: str, data: dict[str, Any], now: datetime = START) -> BpmnWorkflow:
    spec, subprocess_specs = load_spec(filename, process_id)
    with frozen_at(now):
        wf = BpmnWorkflow(spec, subprocess_specs)
        wf.get_next_task(spec_name="Start").data = dict(data)
        wf.do_engine_steps()
    return reload(wf)


def reload(wf: BpmnWorkflow) -> BpmnWorkflow:
    return SERIALIZER.deserialize_json(SERIALIZER.serialize_json(wf))


def wake_at(wf: BpmnWorkflow, now: datetime) -> BpmnWorkflow:
    """What the worker does when an instance is due: refresh timers, run, save."""
    with frozen_at(now):
        wf.refresh_timers()
        wf.do_engine_steps()
    return reload(wf)


def reply(wf: BpmnWorkflow, now: datetime) -> BpmnWorkflow:
    with frozen_at(now):
        wf.refresh_timers()
        (task,) = wf.get_tasks(state=TaskState.READY, manual=True)
        task.run()
        wf.do_engine_steps()
    return reload(wf)


def named_due_times(wf: BpmnWorkflow) -> dict[str, datetime]:
    return {wf.get_task_from_id(tid).task_spec.name: due for tid, due in due_times(wf).items()}


def completed(wf: BpmnWorkflow, name: str) -> int:
    return sum(
        1
        for w in (wf, *wf.subprocesses.values())
        for t in w.tasks.values()
        if t.task_spec.name == name and t.state == TaskState.COMPLETED
    )


def ticket() -> BpmnWorkflow:
    return start("ticket_loop.bpmn", "ticket_loop", {"ticket_id": "T-1"})


def gateway(silence: str, deadline: datetime, nudge: str = "P30D") -> BpmnWorkflow:
    """Event-based gateway: message, then timers ``silence`` (duration), ``deadline`` (date), ``nudge``."""
    data = {"silence": silence, "deadline": deadline.isoformat(), "nudge": nudge}
    return start("timer_shapes.bpmn", "gateway_timers", data)


def nagging(wake: datetime) -> BpmnWorkflow:
    return start("timer_shapes.bpmn", "wait_then_nag", {"wake_at": wake.isoformat(), "nags": 0})


def follow_up() -> BpmnWorkflow:
    return start("timer_shapes.bpmn", "inner_timer", {})


def test_agent_reply_wakes_for_the_reminder_first_then_the_sla() -> None:
    wf = ticket()

    assert named_due_times(wf) == {
        "reminder_timer": START + timedelta(hours=1),
        "sla_timer": START + timedelta(hours=4),
    }
    assert next_wake(wf) == START + timedelta(hours=1)
    assert all(due.tzinfo is UTC for due in due_times(wf).values())


def test_event_based_gateway_timer_is_reported_though_waiting_events_hides_it() -> None:
    replied = START + timedelta(minutes=20)
    wf = reply(ticket(), replied)

    ((event_type, value),) = [(e.event_type, e.value) for e in wf.waiting_events()]
    assert (event_type, value) == ("MultipleEventDefinition", None)
    assert named_due_times(wf) == {"await_customer": replied + timedelta(days=7)}
    assert next_wake(wf) == replied + timedelta(days=7)


def test_intermediate_date_timer_is_due_at_its_date() -> None:
    wake = START + timedelta(hours=6)
    wf = nagging(wake)

    assert named_due_times(wf) == {"wait_until": wake}


def test_cycle_timer_is_due_once_per_cycle_three_times_then_never() -> None:
    ready_at = START + timedelta(hours=6) + SECOND
    wf = wake_at(nagging(START + timedelta(hours=6)), ready_at)
    assert [t.task_spec.name for t in wf.get_tasks(state=TaskState.READY, manual=True)] == ["work"]

    expected = ready_at + timedelta(hours=1)
    for fired in (1, 2, 3):
        due = next_wake(wf)
        assert due == expected
        wf = wake_at(wf, due)
        assert completed(wf, "count_nag") == fired - 1, "fired at, not after, its due time"
        wf = wake_at(wf, due + SECOND)
        assert completed(wf, "count_nag") == fired
        expected += timedelta(hours=1)

    assert next_wake(wf) is None
    wf = wake_at(wf, expected + timedelta(days=1))
    assert completed(wf, "count_nag") == 3


def test_timer_inside_a_subprocess_is_found() -> None:
    wf = follow_up()

    (task_id,) = due_times(wf)
    assert task_id not in wf.tasks and task_id in next(iter(wf.subprocesses.values())).tasks
    assert named_due_times(wf) == {"fu_wait": START + timedelta(minutes=30)}


def test_gateway_timers_share_one_due_time_so_wake_at_the_earliest_prediction() -> None:
    """Engine defect (notes §12.4): the first timer behind the gateway stores the due time every
    other timer then compares against. A one-day deadline behind a three-day silence timer never
    fires on its own; the wake-up still comes at the deadline, then at the shared time."""
    deadline = START + timedelta(days=1)
    wf = gateway("P3D", deadline)
    assert next_wake(wf) == deadline

    wf = wake_at(wf, deadline + SECOND)
    assert completed(wf, "g_late") == 0 and not wf.is_completed()
    assert next_wake(wf) == deadline  # without ``now`` every prediction counts
    assert next_wake(wf, now=deadline + SECOND) == START + timedelta(days=3)

    wf = wake_at(wf, START + timedelta(days=3) + SECOND)
    assert wf.is_completed() and completed(wf, "g_silent") == 1 and completed(wf, "g_late") == 0
    assert next_wake(wf) is None


def test_gateway_prediction_later_than_the_shared_time_does_not_delay_the_wake() -> None:
    wf = gateway("P1M", START + timedelta(days=60), nudge="P90D")  # a month from January 6th: 31 days

    assert next_wake(wf) == START + timedelta(days=31)


def test_later_gateway_duration_is_anchored_where_the_gateway_started_waiting() -> None:
    """Anchored at the engine's own (fake-clock) time, not ``last_state_change`` (wall clock)."""
    wf = gateway("P3D", START + timedelta(days=10), nudge="PT12H")

    assert next_wake(wf) == START + timedelta(hours=12)
    assert next_wake(reload(wf)) == START + timedelta(hours=12)


SHAPES = {
    "boundary reminder": ticket,
    "event-based gateway": lambda: reply(ticket(), START + timedelta(minutes=20)),
    "intermediate date": lambda: nagging(START + timedelta(hours=2)),
    "subprocess timer": follow_up,
    "gateway, shared time": lambda: gateway("PT5H", START + timedelta(days=2)),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_due_times_survive_a_serialize_round_trip(shape: str) -> None:
    wf = SHAPES[shape]()

    assert due_times(wf)
    assert due_times(reload(wf)) == due_times(wf)
    assert due_times(reload(reload(wf))) == due_times(wf)


@pytest.mark.parametrize("shape", SHAPES)
def test_compaction_changes_no_due_time(shape: str) -> None:
    wf = SHAPES[shape]()
    expected = due_times(wf)

    compact(wf)

    assert due_times(wf) == expected
    assert due_times(reload(wf)) == expected


@pytest.mark.parametrize("shape", SHAPES)
def test_timer_fires_once_the_clock_passes_the_predicted_time_and_not_before(shape: str) -> None:
    wf = SHAPES[shape]()
    due = next_wake(wf)
    assert due is not None
    (task_id,) = [tid for tid, when in due_times(wf).items() if when == due]

    for early in (due - timedelta(minutes=1), due - SECOND, due):
        wf = wake_at(wf, early)
        assert state_of(wf, task_id) == TaskState.WAITING, f"fired at {early - due} from the due time"

    wf = wake_at(wf, due + SECOND)
    assert state_of(wf, task_id) == TaskState.COMPLETED
    assert task_id not in due_times(wf)


def state_of(wf: BpmnWorkflow, task_id: UUID) -> int:
    return int(wf.get_task_from_id(task_id).state)


def test_nothing_to_wake_for_without_a_waiting_timer() -> None:
    wf = wake_at(follow_up(), START + timedelta(hours=1))

    assert wf.is_completed()
    assert due_times(wf) == {}
    assert next_wake(wf) is None
