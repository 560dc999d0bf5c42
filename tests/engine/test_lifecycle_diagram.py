"""The bundled ticket lifecycle (bpmn/ticket_lifecycle.bpmn), walked through SpiffWorkflow.

Scripts call recording fakes of the desk operations; the clock is frozen around every engine call
and moved by hand, so timers fire without sleeping. Every walk runs twice: once live and once
serialized and deserialized between every step (with the script engine attached again, as the
desk must do after every load).
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from SpiffWorkflow.bpmn import BpmnEvent, BpmnWorkflow
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine, TaskDataEnvironment
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.bpmn.specs.event_definitions.message import MessageEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.multiple import MultipleEventDefinition
from SpiffWorkflow.bpmn.specs.event_definitions.timer import TimerEventDefinition
from SpiffWorkflow.bpmn.specs.mixins import UserTaskMixin
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG
from SpiffWorkflow.util.task import TaskState

from engine.clock import frozen_at
from engine.errors import FormInvalid
from engine.forms import validate_submission
from engine.parser import DeskParser
from engine.sandbox import check_source
from engine.xmlload import load_xml

from .fake_desk import NEVER, SLA_TARGETS, FakeDesk
from .lifecycle_facts import ACKNOWLEDGED, ANSWERED, DESK_OPERATIONS, RESOLVED

BPMN_FILE = Path(__file__).resolve().parents[2] / "bpmn" / "ticket_lifecycle.bpmn"
PROCESS_ID = "ticket_lifecycle"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SERIALIZER = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SPIFF_CONFIG))


# --- a recording desk --------------------------------------------------------------------------
class PlainEngineDesk(FakeDesk):
    """The shared fake desk, with ``sla_due`` handed to scripts as ISO text.

    The real desk's ``sla_due`` gives an aware datetime and the desk's script engine
    (engine.sandbox) turns a timer expression's datetime into ISO text. These walks run on
    SpiffWorkflow's plain script engine, which does not: it keeps a timer's value as evaluated,
    parses it as text, and must serialize it.
    """

    def functions(self) -> dict[str, Callable[..., Any]]:
        return {**super().functions(), "sla_due": self.sla_due_text}

    def sla_due_text(self, clock: str, percent: float = 100) -> str:
        return self.sla_due(clock, percent).isoformat()


# --- driving one ticket ------------------------------------------------------------------------
def _message_definitions(task_spec: Any) -> list[MessageEventDefinition]:
    definition = getattr(task_spec, "event_definition", None)
    # An event-based gateway holds its events' definitions; its catch events keep none.
    found = definition.event_definitions if isinstance(definition, MultipleEventDefinition) else [definition]
    return [d for d in found if isinstance(d, MessageEventDefinition)]


class Walk:
    """One ticket's workflow, driven as the desk drives it: each call under a frozen clock."""

    def __init__(self, spec: Any, subprocess_specs: dict[str, Any], *, reload_each_step: bool) -> None:
        self.now = T0
        self.desk = PlainEngineDesk(T0)
        self.reload_each_step = reload_each_step
        self.workflow = BpmnWorkflow(spec, subprocess_specs, script_engine=self._script_engine())
        self._engine_call(self.workflow.do_engine_steps)

    def _script_engine(self) -> PythonScriptEngine:
        return PythonScriptEngine(environment=TaskDataEnvironment(self.desk.functions()))

    def _engine_call(self, action: Callable[[], None]) -> None:
        self.desk.now = self.now
        with frozen_at(self.now):
            action()
        if self.reload_each_step:
            self.workflow = SERIALIZER.deserialize_json(SERIALIZER.serialize_json(self.workflow))
            self.workflow.script_engine = self._script_engine()  # never serialized

    # reading
    def ready(self) -> list[str]:
        """Element ids of the user tasks waiting for an agent."""
        tasks = self.workflow.get_tasks(state=TaskState.READY, spec_class=UserTaskMixin)
        return sorted(t.task_spec.bpmn_id for t in tasks)

    def lane(self, element_id: str) -> str:
        return self._ready_task(element_id).task_spec.lane

    def waiting_for_reply(self) -> list[str]:
        """Element ids of the waiting tasks that would catch ``customer_replied`` now."""
        return sorted(
            t.task_spec.bpmn_id
            for t in self.workflow.get_tasks(state=TaskState.WAITING)
            if any(d.name == "customer_replied" for d in _message_definitions(t.task_spec))
        )

    def timer_due(self, element_id: str) -> datetime:
        """When the waiting timer (or event-based gateway) ``element_id`` fires."""
        for task in self.workflow.get_tasks(state=TaskState.WAITING):
            if task.task_spec.bpmn_id == element_id:
                return datetime.fromisoformat(task.internal_data["event_value"])
        raise AssertionError(f"{element_id} is not waiting")

    def waiting_timers(self) -> list[str]:
        """Element ids of the timer events armed now."""
        return sorted(
            t.task_spec.bpmn_id
            for t in self.workflow.get_tasks(state=TaskState.WAITING)
            if isinstance(getattr(t.task_spec, "event_definition", None), TimerEventDefinition)
        )

    def states(self, element_id: str) -> list[str]:
        """The state of every task the workflow made for ``element_id``, in tree order."""
        return [
            TaskState.get_name(t.state)
            for t in self.workflow.get_tasks()
            if t.task_spec.bpmn_id == element_id
        ]

    @property
    def completed(self) -> bool:
        return bool(self.workflow.is_completed())

    # acting
    def complete(self, element_id: str, **submitted: Any) -> None:
        """Submit the task's form (validated as the desk validates it) and run on."""
        task = self._ready_task(element_id)
        cleaned = validate_submission(task.task_spec.extensions["form"], submitted)

        def run() -> None:
            task.data.update(cleaned)
            task.run()
            self.workflow.do_engine_steps()

        self._engine_call(run)

    def reply(self) -> list[str]:
        """Deliver ``customer_replied``; returns the ids of the tasks that were waiting for it."""
        catchers = self.waiting_for_reply()
        assert catchers, "nothing waits for customer_replied: the desk would have to keep the message"
        waiting = self.workflow.get_tasks(state=TaskState.WAITING)
        task = next(t for t in waiting if t.task_spec.bpmn_id in catchers)
        definition = next(d for d in _message_definitions(task.task_spec) if d.name == "customer_replied")

        def deliver() -> None:
            self.workflow.catch(BpmnEvent(definition, {}))
            self.workflow.do_engine_steps()

        self._engine_call(deliver)
        return catchers

    def advance(self, **delta: float) -> None:
        """Move the clock and fire whatever timers fell due (refresh first: notes §3)."""
        self.now += timedelta(**delta)

        def fire() -> None:
            self.workflow.refresh_timers()
            self.workflow.do_engine_steps()

        self._engine_call(fire)

    def _ready_task(self, element_id: str) -> Any:
        tasks = [
            t
            for t in self.workflow.get_tasks(state=TaskState.READY, spec_class=UserTaskMixin)
            if t.task_spec.bpmn_id == element_id
        ]
        assert len(tasks) == 1, f"{element_id} is not ready (ready: {self.ready()})"
        return tasks[0]

    def triage(self, category: str = "incident", priority: str = "P2") -> None:
        self.complete("triage", category=category, priority=priority, summary="VPN drops every hour")
        applied = [("set_priority", priority), ("set_category", category)]
        assert self.desk.take() == [*applied, ("stop_sla", "first_response"), ("set_status", "open")]


@pytest.fixture(scope="module")
def definition() -> tuple[Any, dict[str, Any]]:
    parser = DeskParser()  # XSD validation on
    parser.add_bpmn_xml(load_xml(BPMN_FILE.read_bytes(), BPMN_FILE.name), filename=BPMN_FILE.name)
    return parser.get_spec(PROCESS_ID), parser.get_subprocess_specs(PROCESS_ID)


@pytest.fixture(params=["live", "reloaded"])
def walk(request: pytest.FixtureRequest, definition: tuple[Any, dict[str, Any]]) -> Walk:
    spec, subprocess_specs = definition
    started = Walk(spec, subprocess_specs, reload_each_step=request.param == "reloaded")
    assert started.desk.take() == ACKNOWLEDGED
    assert started.ready() == ["triage"]
    return started


# --- walks -------------------------------------------------------------------------------------
RESOLUTION = SLA_TARGETS["resolution"]
ESCALATED_TO_TIER_2 = [("notify_lead", "tier-2", "escalated")]
ESCALATED_TO_TIER_3 = [("notify_lead", "tier-3", "escalated")]


def test_an_incident_is_triaged_worked_resolved_and_closed_a_week_later(walk: Walk) -> None:
    assert walk.lane("triage") == "Tier 1"
    assert walk.desk.status == "new"
    walk.advance(hours=1)
    walk.triage(priority="P2")
    assert walk.ready() == ["work_tier_1"]
    assert walk.lane("work_tier_1") == "Tier 1"

    walk.advance(hours=2)
    walk.complete("work_tier_1", outcome="resolve", note="Replaced the router")
    assert walk.desk.take() == [*ANSWERED, *RESOLVED]
    assert walk.ready() == []
    assert walk.timer_due("resolved_gateway") == walk.now + timedelta(days=7)

    walk.advance(days=7, minutes=-1)
    assert walk.desk.take() == []
    assert not walk.completed
    walk.advance(minutes=2)
    assert walk.desk.take() == [("close", "")]
    assert walk.desk.statuses == ["new", "open", "resolved", "closed"]
    assert walk.completed


def test_a_customer_answer_brings_the_ticket_back_to_the_same_tier(walk: Walk) -> None:
    walk.triage()
    walk.complete("work_tier_1", outcome="escalate")
    assert walk.desk.take() == [*ANSWERED, ("escalate", "tier-2", "escalated by agent"), *ESCALATED_TO_TIER_2]
    walk.complete("work_tier_2", outcome="wait_customer", note="Which VPN client version?")
    # The status pauses the clocks by itself: the diagram calls no pause_sla.
    assert walk.desk.take() == [*ANSWERED, ("set_status", "waiting_on_customer")]
    assert walk.desk.clock("resolution") == "paused"
    assert walk.ready() == []
    assert walk.waiting_for_reply() == ["waiting_gateway"]

    walk.advance(days=1)
    assert walk.reply() == ["waiting_gateway"]
    assert walk.desk.take() == [("set_status", "open"), ("start_sla", "next_response")]
    assert walk.desk.clock("resolution") == walk.desk.clock("next_response") == "running"
    assert walk.ready() == ["work_tier_2"]
    walk.advance(days=3)  # the reminder timer went with the gateway
    assert walk.desk.take() == []
    assert walk.desk.statuses == ["new", "open", "escalated", "waiting_on_customer", "open"]


def test_time_waiting_on_the_customer_is_added_to_the_resolution_target(walk: Walk) -> None:
    """The clock pauses by itself while the status is waiting_on_customer (the diagram no longer
    pauses it). The fake desk does not re-time armed timers as the real desk does; here no
    ``sla_due`` timer is armed during the wait, and work_tier_1's boundaries are armed afresh when
    the work comes back, so their due times include the two days waited."""
    walk.triage()
    assert walk.timer_due("work_tier_1_resolution_warning") == T0 + RESOLUTION * 0.75
    assert walk.timer_due("work_tier_1_resolution_due") == T0 + RESOLUTION
    walk.complete("work_tier_1", outcome="wait_customer")
    assert walk.desk.take() == [*ANSWERED, ("set_status", "waiting_on_customer")]
    assert walk.desk.clock("resolution") == "paused"
    assert walk.waiting_timers() == []  # nothing armed on the paused clock (the gateway holds "P3D")
    assert walk.timer_due("waiting_gateway") == walk.now + timedelta(days=3)
    walk.advance(days=2)
    walk.reply()
    assert walk.desk.take() == [("set_status", "open"), ("start_sla", "next_response")]
    assert walk.ready() == ["work_tier_1"]
    assert walk.timer_due("work_tier_1_resolution_warning") == T0 + RESOLUTION * 0.75 + timedelta(days=2)
    assert walk.timer_due("work_tier_1_resolution_due") == T0 + RESOLUTION + timedelta(days=2)


def test_an_unanswered_ticket_gets_a_reminder_after_3_days_and_closes_after_7(walk: Walk) -> None:
    walk.triage()
    walk.complete("work_tier_1", outcome="wait_customer")
    walk.desk.take()
    asked = walk.now

    walk.advance(days=3, minutes=-1)
    assert walk.desk.take() == []
    walk.advance(minutes=2)
    assert walk.desk.take() == [("send_template", "reminder")]
    assert walk.waiting_for_reply() == ["reminded_gateway"]

    walk.advance(days=4, minutes=-1)  # 4 more days after the reminder
    assert walk.desk.take() == []
    walk.advance(minutes=2)
    assert walk.now - asked == timedelta(days=7, minutes=2)
    assert walk.desk.take() == [("send_template", "auto_closed"), ("close", "")]
    assert walk.desk.statuses[-2:] == ["waiting_on_customer", "closed"]
    assert walk.desk.clock("resolution") == "stopped"
    assert walk.completed


def test_an_answer_after_the_reminder_still_reopens_the_work(walk: Walk) -> None:
    walk.triage()
    walk.complete("work_tier_1", outcome="wait_customer")
    walk.advance(days=4)
    walk.desk.take()
    assert walk.reply() == ["reminded_gateway"]
    assert walk.desk.take() == [("set_status", "open"), ("start_sla", "next_response")]
    assert walk.ready() == ["work_tier_1"]


def test_agents_escalate_twice_to_tier_3_which_resolves(walk: Walk) -> None:
    walk.triage()
    walk.complete("work_tier_1", outcome="escalate")
    assert walk.desk.take() == [*ANSWERED, ("escalate", "tier-2", "escalated by agent"), *ESCALATED_TO_TIER_2]
    assert walk.ready() == ["work_tier_2"]
    assert walk.lane("work_tier_2") == "Tier 2"
    walk.complete("work_tier_2", outcome="escalate")
    assert walk.desk.take() == [*ANSWERED, ("escalate", "tier-3", "escalated by agent"), *ESCALATED_TO_TIER_3]
    assert walk.ready() == ["work_tier_3"]
    assert walk.lane("work_tier_3") == "Tier 3"
    assert walk.states("escalate") == ["COMPLETED", "COMPLETED"]

    with pytest.raises(FormInvalid) as refused:  # Tier 3 is the last tier: no escalate choice
        walk.complete("work_tier_3", outcome="escalate")
    assert "outcome" in refused.value.errors
    walk.complete("work_tier_3", outcome="resolve")
    assert walk.desk.take() == [*ANSWERED, *RESOLVED]
    assert walk.desk.statuses == ["new", "open", "escalated", "resolved"]


def test_a_wish_goes_to_engineering_for_review(walk: Walk) -> None:
    walk.triage(category="wish", priority="P4")
    assert walk.ready() == ["review_wish"]
    assert walk.lane("review_wish") == "Engineering"
    walk.complete("review_wish", decision="declined", note="Not on this year's roadmap")
    assert walk.desk.take() == RESOLVED
    assert walk.ready() == []


def test_at_75_percent_of_the_resolution_target_the_tier_1_assignee_is_warned_and_keeps_the_work(
    walk: Walk,
) -> None:
    walk.advance(hours=1)
    walk.triage()
    assert walk.waiting_timers() == ["work_tier_1_resolution_due", "work_tier_1_resolution_warning"]
    assert walk.timer_due("work_tier_1_resolution_warning") == T0 + timedelta(hours=54)
    walk.advance(hours=53)  # exactly T0 + 54 h: a timer fires only once its time has passed
    assert walk.desk.take() == []
    walk.advance(seconds=1)
    assert walk.desk.take() == [("notify_assignee", "sla_warning")]
    assert walk.ready() == ["work_tier_1"]
    assert walk.states("work_tier_1") == ["READY"]
    assert walk.states("warn_assignee") == ["COMPLETED"]
    assert walk.waiting_timers() == ["work_tier_1_resolution_due"]  # the warning is spent; 100 % still armed
    assert walk.timer_due("work_tier_1_resolution_due") == T0 + RESOLUTION
    assert walk.desk.status == "open"

    walk.complete("work_tier_1", outcome="resolve")  # the assignee still holds the work and resolves it
    assert walk.desk.take() == [*ANSWERED, *RESOLVED]


def test_at_100_percent_the_tier_1_work_is_taken_to_tier_2_and_its_lead_is_notified(walk: Walk) -> None:
    walk.advance(hours=1)
    walk.triage()
    walk.advance(hours=60)
    assert walk.desk.take() == [("notify_assignee", "sla_warning")]
    walk.advance(hours=10, minutes=59)  # one minute before T0 + 72 h
    assert walk.ready() == ["work_tier_1"]
    assert walk.desk.take() == []

    walk.advance(minutes=2)
    assert walk.desk.take() == [("escalate", "tier-2", "resolution target reached"), *ESCALATED_TO_TIER_2]
    assert walk.states("work_tier_1") == ["CANCELLED"]
    assert walk.states("breach_tier_1") == walk.states("escalate") == ["COMPLETED"]
    assert walk.states("agent_escalates") == []
    assert walk.ready() == ["work_tier_2"]
    assert walk.desk.status == "escalated"
    assert walk.waiting_timers() == ["work_tier_2_resolution_overdue"]
    assert walk.timer_due("work_tier_2_resolution_overdue") == T0 + RESOLUTION * 1.5
    walk.complete("work_tier_2", outcome="escalate")  # the breach set tier = 2
    assert walk.desk.take() == [*ANSWERED, ("escalate", "tier-3", "escalated by agent"), *ESCALATED_TO_TIER_3]


def test_at_150_percent_the_tier_2_work_is_taken_to_tier_3_and_its_lead_is_notified(walk: Walk) -> None:
    walk.triage()
    walk.advance(hours=72, minutes=1)
    assert walk.desk.take() == [
        ("notify_assignee", "sla_warning"),
        ("escalate", "tier-2", "resolution target reached"),
        *ESCALATED_TO_TIER_2,
    ]
    assert walk.ready() == ["work_tier_2"]
    walk.advance(hours=35, minutes=58)  # one minute before T0 + 108 h
    assert walk.desk.take() == []
    assert walk.ready() == ["work_tier_2"]

    walk.advance(minutes=2)
    assert walk.desk.take() == [
        ("escalate", "tier-3", "resolution target exceeded by 50 %"),
        *ESCALATED_TO_TIER_3,
    ]
    assert walk.states("work_tier_2") == ["CANCELLED"]
    assert walk.states("breach_tier_2") == ["COMPLETED"]
    assert walk.states("escalate") == ["COMPLETED", "COMPLETED"]
    assert walk.ready() == ["work_tier_3"]
    assert walk.lane("work_tier_3") == "Tier 3"
    assert walk.waiting_timers() == []  # Tier 3 is the last tier: no resolution timer on its work
    walk.complete("work_tier_3", outcome="resolve")
    assert walk.desk.take() == [*ANSWERED, *RESOLVED]


def test_an_agent_escalation_takes_the_same_escalate_step_as_a_breach(walk: Walk) -> None:
    walk.triage()
    walk.advance(hours=2)
    walk.complete("work_tier_1", outcome="escalate")
    assert walk.desk.take() == [*ANSWERED, ("escalate", "tier-2", "escalated by agent"), *ESCALATED_TO_TIER_2]
    assert walk.states("work_tier_1") == ["COMPLETED"]
    assert walk.states("agent_escalates") == walk.states("escalate") == ["COMPLETED"]
    assert walk.states("breach_tier_1") == []
    assert walk.ready() == ["work_tier_2"]
    assert walk.desk.status == "escalated"
    # Tier 2's overdue timer counts from the ticket's resolution clock, not from the escalation.
    assert walk.timer_due("work_tier_2_resolution_overdue") == T0 + RESOLUTION * 1.5


def test_a_customer_reply_during_work_starts_the_next_response_clock_and_the_answer_stops_it(
    walk: Walk,
) -> None:
    walk.triage()
    assert walk.desk.clock("next_response") is None
    walk.advance(hours=1)
    assert walk.reply() == ["work_tier_1_customer_replied"]
    assert walk.desk.take() == [("start_sla", "next_response")]
    assert walk.desk.clock("next_response") == "running"
    assert walk.states("work_tier_1_next_response") == ["COMPLETED"]
    assert walk.ready() == ["work_tier_1"]

    walk.advance(hours=2)
    walk.complete("work_tier_1", outcome="escalate")  # the agent answers by completing the work
    assert walk.desk.take() == [*ANSWERED, ("escalate", "tier-2", "escalated by agent"), *ESCALATED_TO_TIER_2]
    assert walk.desk.clock("next_response") == "stopped"

    assert walk.reply() == ["work_tier_2_customer_replied"]  # the same in Tier 2
    assert walk.desk.take() == [("start_sla", "next_response")]
    assert walk.desk.clock("next_response") == "running"
    walk.complete("work_tier_2", outcome="wait_customer")
    assert walk.desk.take() == [*ANSWERED, ("set_status", "waiting_on_customer")]
    assert walk.desk.clock("next_response") == "stopped"
    assert walk.desk.clock("resolution") == "paused"


def test_a_late_engine_call_past_75_and_100_percent_warns_and_escalates_in_one_step(walk: Walk) -> None:
    """Both tier 1 timers are due when the clock jumps to 110 %: refresh_timers makes both READY,
    and a READY boundary event is not cancelled by its interrupting sibling (only WAITING ones
    are), so the warning goes out too, before the escalation (its path is shorter)."""
    walk.triage()
    walk.advance(hours=72 * 1.1)
    assert walk.desk.take() == [
        ("notify_assignee", "sla_warning"),
        ("escalate", "tier-2", "resolution target reached"),
        *ESCALATED_TO_TIER_2,
    ]
    assert walk.states("work_tier_1") == ["CANCELLED"]
    assert walk.states("work_tier_1_resolution_warning") == ["COMPLETED"]
    assert walk.states("work_tier_1_resolution_due") == ["COMPLETED"]
    assert walk.ready() == ["work_tier_2"]
    assert walk.waiting_timers() == ["work_tier_2_resolution_overdue"]


def test_a_late_engine_call_past_160_percent_runs_every_tier_in_one_step(walk: Walk) -> None:
    """At 160 % the tier 1 timers fire as at 110 %; Tier 2's 150 % timer is then armed with a due
    time already passed, and SpiffWorkflow fires such a timer as it arms it, in the same call."""
    walk.triage()
    walk.advance(hours=72 * 1.6)
    assert walk.desk.take() == [
        ("notify_assignee", "sla_warning"),
        ("escalate", "tier-2", "resolution target reached"),
        *ESCALATED_TO_TIER_2,
        ("escalate", "tier-3", "resolution target exceeded by 50 %"),
        *ESCALATED_TO_TIER_3,
    ]
    assert walk.states("work_tier_1") == walk.states("work_tier_2") == ["CANCELLED"]
    assert walk.states("warn_assignee") == ["COMPLETED"]
    assert walk.ready() == ["work_tier_3"]
    assert walk.waiting_timers() == []
    assert walk.desk.statuses == ["new", "open", "escalated"]


def test_work_coming_back_to_tier_1_after_75_percent_is_warned_again_at_once(walk: Walk) -> None:
    """The warning boundary is armed afresh each time work_tier_1 starts; past 75 % its due time
    has passed, so it fires as it arms: the assignee gets a second sla_warning."""
    walk.triage()
    walk.advance(hours=55)
    assert walk.desk.take() == [("notify_assignee", "sla_warning")]
    walk.complete("work_tier_1", outcome="wait_customer")
    assert walk.desk.take() == [*ANSWERED, ("set_status", "waiting_on_customer")]
    walk.advance(hours=1)
    walk.reply()
    assert walk.desk.take() == [
        ("set_status", "open"),
        ("start_sla", "next_response"),
        ("notify_assignee", "sla_warning"),
    ]
    assert walk.ready() == ["work_tier_1"]
    assert walk.states("warn_assignee") == ["COMPLETED", "COMPLETED"]
    assert walk.timer_due("work_tier_1_resolution_due") == T0 + RESOLUTION + timedelta(hours=1)


def test_a_reply_to_a_resolved_ticket_reopens_it(walk: Walk) -> None:
    walk.triage()
    walk.complete("work_tier_1", outcome="resolve")
    walk.desk.take()
    walk.advance(days=2)
    assert walk.reply() == ["resolved_gateway"]
    assert walk.desk.take() == [
        ("set_status", "open"),
        ("start_sla", "resolution"),
        ("start_sla", "next_response"),
    ]
    assert walk.ready() == ["work_tier_1"]
    assert walk.timer_due("work_tier_1_resolution_due") == walk.now + RESOLUTION
    assert walk.timer_due("work_tier_1_resolution_warning") == walk.now + RESOLUTION * 0.75

    walk.complete("work_tier_1", outcome="resolve")
    walk.advance(days=7, minutes=1)
    assert walk.desk.take() == [*ANSWERED, *RESOLVED, ("close", "")]
    assert walk.desk.statuses == ["new", "open", "resolved", "open", "resolved", "closed"]
    assert walk.completed


def test_tier_1_is_reminded_when_triage_misses_the_first_response_target(walk: Walk) -> None:
    assert walk.timer_due("triage_first_response_due") == T0 + timedelta(hours=8)
    walk.advance(hours=8, minutes=1)
    assert walk.desk.take() == [("notify", "tier-1", "first_response_due")]
    assert walk.ready() == ["triage"]
    walk.triage(priority="P3")
    assert walk.ready() == ["work_tier_1"]


def test_replies_while_an_agent_works_leave_the_task_in_place(walk: Walk) -> None:
    assert walk.reply() == ["triage_customer_replied"]
    assert walk.ready() == ["triage"]
    walk.triage()
    assert walk.reply() == ["work_tier_1_customer_replied"]
    assert walk.ready() == ["work_tier_1"]
    assert walk.desk.take() == [("start_sla", "next_response")]


def test_a_boundary_reply_catch_is_armed_once_per_task_activation(walk: Walk) -> None:
    """SpiffWorkflow 3.2.0 does not re-arm a non-interrupting boundary event after it fired.

    A second reply while the same task is open finds no catcher, so the desk keeps it; the desk
    must not hand such a stale reply to a later "waiting for the customer" gateway.
    """
    walk.reply()
    assert walk.waiting_for_reply() == []
    walk.triage()
    assert walk.waiting_for_reply() == ["work_tier_1_customer_replied"]  # armed again for the next task


def test_the_plain_engine_desk_hands_sla_due_to_scripts_as_iso_text() -> None:
    """What differs from the shared fake desk (its contract is tested in test_runtime.py)."""
    desk = PlainEngineDesk(T0)
    functions = desk.functions()
    assert list(functions) == list(DESK_OPERATIONS)
    assert all(functions[name] == getattr(desk, name) for name in DESK_OPERATIONS if name != "sla_due")
    sla_due = functions["sla_due"]
    with pytest.raises(ValueError, match="never started"):
        sla_due("resolution")
    desk.start_sla("resolution")
    assert sla_due("resolution") == (T0 + RESOLUTION).isoformat()
    assert sla_due("resolution", 75) == (T0 + timedelta(hours=54)).isoformat()
    desk.set_status("waiting_on_customer")
    assert sla_due("resolution", 150) == NEVER.isoformat()
    assert desk.sla_due("resolution") == NEVER  # the desk itself still answers with a datetime


# --- the diagram as a document -----------------------------------------------------------------
NS = {
    "bpmn": "http://www.omg.org/spec/BPMN/20100524/MODEL",
    "bpmndi": "http://www.omg.org/spec/BPMN/20100524/DI",
    "dc": "http://www.omg.org/spec/DD/20100524/DC",
    "di": "http://www.omg.org/spec/DD/20100524/DI",
}
FLOW_NODES = (
    *("startEvent", "endEvent", "intermediateCatchEvent", "intermediateThrowEvent", "boundaryEvent"),
    *("task", "userTask", "scriptTask", "serviceTask", "sendTask", "receiveTask", "manualTask"),
    *("businessRuleTask", "callActivity", "subProcess"),
    *("exclusiveGateway", "parallelGateway", "inclusiveGateway", "eventBasedGateway", "complexGateway"),
)
AGENT_LANES = {"Tier 1", "Tier 2", "Tier 3", "Engineering"}


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    def overlaps(self, other: Box) -> bool:
        return (
            self.x < other.x + other.w
            and other.x < self.x + self.w
            and self.y < other.y + other.h
            and other.y < self.y + self.h
        )

    def contains(self, other: Box) -> bool:
        return (
            self.x <= other.x
            and other.x + other.w <= self.x + self.w
            and self.y <= other.y
            and other.y + other.h <= self.y + self.h
        )

    def on_border(self, x: float, y: float) -> bool:
        inside = self.x - 1 <= x <= self.x + self.w + 1 and self.y - 1 <= y <= self.y + self.h + 1
        return (
            inside
            and min(abs(x - self.x), abs(x - self.x - self.w), abs(y - self.y), abs(y - self.y - self.h)) <= 1
        )


@pytest.fixture(scope="module")
def root() -> etree._Element:
    return load_xml(BPMN_FILE.read_bytes(), BPMN_FILE.name)


def _process(root: etree._Element) -> etree._Element:
    return root.find(f"bpmn:process[@id='{PROCESS_ID}']", NS)


def _flow_nodes(root: etree._Element) -> list[etree._Element]:
    return [el for tag in FLOW_NODES for el in _process(root).iterfind(f"bpmn:{tag}", NS)]


def _shapes(root: etree._Element) -> dict[str, Box]:
    boxes = {}
    for shape in root.iterfind(".//bpmndi:BPMNShape", NS):
        b = shape.find("dc:Bounds", NS)
        boxes[shape.get("bpmnElement")] = Box(*(float(b.get(k)) for k in ("x", "y", "width", "height")))
    return boxes


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname


def test_the_process_is_executable_in_a_one_pool_collaboration_with_five_lanes(root: etree._Element) -> None:
    process = _process(root)
    assert process.get("isExecutable") == "true"
    assert process.get("name") == "Ticket lifecycle"
    participants = root.findall("bpmn:collaboration/bpmn:participant", NS)
    assert [(p.get("name"), p.get("processRef")) for p in participants] == [("Service desk", PROCESS_ID)]
    lanes = process.findall("bpmn:laneSet/bpmn:lane", NS)
    assert [lane.get("name") for lane in lanes] == ["Tier 1", "Tier 2", "Tier 3", "Engineering", "Desk"]
    placed = [ref.text for lane in lanes for ref in lane.iterfind("bpmn:flowNodeRef", NS)]
    assert sorted(placed) == sorted(el.get("id") for el in _flow_nodes(root))  # each node in exactly one lane


def test_every_user_task_is_in_an_agent_lane_and_has_a_form(definition: tuple[Any, dict[str, Any]]) -> None:
    spec, _ = definition
    user_tasks = {s.bpmn_id: s for s in spec.task_specs.values() if isinstance(s, UserTaskMixin)}
    assert sorted(user_tasks) == ["review_wish", "triage", "work_tier_1", "work_tier_2", "work_tier_3"]
    for task_spec in user_tasks.values():
        assert task_spec.lane in AGENT_LANES, task_spec.bpmn_id
        form = task_spec.extensions.get("form")
        assert form, f"{task_spec.bpmn_id} has no form"
        for field in form:
            assert field["type"] in {"string", "long", "boolean", "date", "enum"}
            assert field["type"] != "enum" or field["options"], field["id"]
    triage = {f["id"]: f for f in user_tasks["triage"].extensions["form"]}
    assert [o[0] for o in triage["category"]["options"]] == ["question", "incident", "request", "wish"]
    assert triage["priority"]["default"] == "P3"
    assert triage["summary"]["validation"] == {"required": None, "maxlength": "200"}
    outcomes = {
        i: [o[0] for o in s.extensions["form"][0]["options"]] for i, s in user_tasks.items() if "work" in i
    }
    assert outcomes["work_tier_1"] == outcomes["work_tier_2"] == ["resolve", "wait_customer", "escalate"]
    assert outcomes["work_tier_3"] == ["resolve", "wait_customer"]


def test_every_element_is_drawn(root: etree._Element) -> None:
    shapes = _shapes(root)
    plane = root.find(".//bpmndi:BPMNPlane", NS)
    assert plane.get("bpmnElement") == root.find("bpmn:collaboration", NS).get("id")
    drawn = [el.get("id") for el in _flow_nodes(root)]
    drawn += [el.get("id") for el in root.iterfind(".//bpmn:lane", NS)]
    drawn += [el.get("id") for el in root.iterfind(".//bpmn:participant", NS)]
    assert [i for i in drawn if i not in shapes] == []
    edges = {e.get("bpmnElement"): e for e in root.iterfind(".//bpmndi:BPMNEdge", NS)}
    for flow in _process(root).iterfind("bpmn:sequenceFlow", NS):
        edge = edges[flow.get("id")]
        points = [(float(p.get("x")), float(p.get("y"))) for p in edge.iterfind("di:waypoint", NS)]
        assert len(points) >= 2, flow.get("id")
        assert shapes[flow.get("sourceRef")].on_border(*points[0]), f"{flow.get('id')} starts off its source"
        assert shapes[flow.get("targetRef")].on_border(*points[-1]), f"{flow.get('id')} ends off its target"
        if flow.get("name"):
            assert edge.find("bpmndi:BPMNLabel/dc:Bounds", NS) is not None, flow.get("id")
    labelled = {s.get("bpmnElement") for s in root.iterfind(".//bpmndi:BPMNShape[bpmndi:BPMNLabel]", NS)}
    for el in _flow_nodes(root):
        if el.get("name") and not _local(el).endswith("Task"):
            assert el.get("id") in labelled, el.get("id")


def test_the_layout_keeps_shapes_apart_and_inside_their_lanes(root: etree._Element) -> None:
    shapes = _shapes(root)
    pool = shapes[root.find(".//bpmn:participant", NS).get("id")]
    lanes = {lane.get("id"): lane for lane in root.iterfind(".//bpmn:lane", NS)}
    for lane_id in lanes:
        assert pool.contains(shapes[lane_id])
    lane_boxes = [shapes[i] for i in lanes]
    assert not any(a.overlaps(b) for i, a in enumerate(lane_boxes) for b in lane_boxes[i + 1 :])
    lane_of = {ref.text: i for i, lane in lanes.items() for ref in lane.iterfind("bpmn:flowNodeRef", NS)}
    nodes = _flow_nodes(root)
    for el in nodes:
        assert shapes[lanes[lane_of[el.get("id")]].get("id")].contains(shapes[el.get("id")]), el.get("id")
        if _local(el) == "boundaryEvent":
            host = shapes[el.get("attachedToRef")]
            box = shapes[el.get("id")]
            assert host.on_border(box.x + box.w / 2, box.y + box.h / 2), el.get("id")
    solid = [shapes[el.get("id")] for el in nodes if _local(el) != "boundaryEvent"]
    clashes = [(a, b) for i, a in enumerate(solid) for b in solid[i + 1 :] if a.overlaps(b)]
    assert clashes == []


def test_the_diagram_keeps_to_what_the_desk_runs_reliably(root: etree._Element) -> None:
    process = _process(root)
    for tag in ("inclusiveGateway", "complexGateway", "linkEventDefinition", "subProcess", "callActivity"):
        assert process.find(f".//bpmn:{tag}", NS) is None, tag
    flows = {f.get("id"): f for f in process.iterfind("bpmn:sequenceFlow", NS)}
    for el in _flow_nodes(root):
        outgoing = [flows[o.text] for o in el.iterfind("bpmn:outgoing", NS)]
        if _local(el).endswith("Task"):
            assert len(outgoing) == 1, el.get("id")
        if _local(el) == "exclusiveGateway" and len(outgoing) > 1:
            for flow in outgoing:
                conditional = flow.find("bpmn:conditionExpression", NS) is not None
                assert conditional != (flow.get("id") == el.get("default")), flow.get("id")
        if _local(el) == "eventBasedGateway":
            targets = [process.find(f"*[@id='{f.get('targetRef')}']", NS) for f in outgoing]
            timers = [t for t in targets if t.find("bpmn:timerEventDefinition", NS) is not None]
            messages = [t for t in targets if t.find("bpmn:messageEventDefinition", NS) is not None]
            assert (len(timers), len(messages)) == (1, 1), el.get("id")
    message_names = {m.get("id"): m.get("name") for m in root.iterfind("bpmn:message", NS)}
    for ref in process.iterfind(".//bpmn:messageEventDefinition", NS):
        assert message_names[ref.get("messageRef")] == "customer_replied"


def _timer_expressions(root: etree._Element) -> Iterator[tuple[str, str]]:
    for timer in _process(root).iterfind(".//bpmn:timerEventDefinition", NS):
        for child in timer:
            yield _local(child), (child.text or "").strip()


def test_timers_are_quoted_durations_or_sla_due_calls(root: etree._Element) -> None:
    assert sorted(_timer_expressions(root)) == [
        ("timeDate", 'sla_due("first_response")'),
        ("timeDate", 'sla_due("resolution")'),
        ("timeDate", 'sla_due("resolution", 150)'),
        ("timeDate", 'sla_due("resolution", 75)'),
        ("timeDuration", '"P3D"'),
        ("timeDuration", '"P4D"'),
        ("timeDuration", '"P7D"'),
    ]


def test_scripts_and_expressions_use_only_desk_operations_and_pass_the_sandbox(root: etree._Element) -> None:
    process = _process(root)
    sources = [(s.text or "", "exec") for s in process.iterfind(".//bpmn:script", NS)]
    sources += [(c.text or "", "eval") for c in process.iterfind(".//bpmn:conditionExpression", NS)]
    sources += [(text, "eval") for _, text in _timer_expressions(root)]
    assert len(sources) > 20
    for source, mode in sources:
        assert check_source(source, mode) == [], source
        called = {n.func.id for n in ast.walk(ast.parse(source, mode=mode)) if isinstance(n, ast.Call)}
        assert called <= {*DESK_OPERATIONS, "min"}, source
