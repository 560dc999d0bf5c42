"""engine.runtime: Definition and Instance, driven through the bundled ticket lifecycle.

Desk functions are recording fakes and time is passed as ``now=`` to every call. As in the desk,
every step starts from storage: the instance is dumped and loaded again between every two calls
(:class:`Ticket`); one walk is also run on an object kept in memory, to compare.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from SpiffWorkflow.bpmn.script_engine import PythonScriptEngine
from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer
from SpiffWorkflow.spiff.serializer.config import SPIFF_CONFIG

from engine import state as state_store
from engine.errors import (
    DefinitionError,
    EngineError,
    FormInvalid,
    SandboxViolation,
    ScriptError,
    TaskNotReady,
)
from engine.runtime import Definition, Instance, Step, UserTaskView
from engine.sandbox import SandboxedScriptEngine

from .fake_desk import NEVER, SLA_TARGETS, FakeDesk
from .lifecycle_facts import ACKNOWLEDGED, ANSWERED, RESOLVED

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "runtime"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TRIAGE = {"category": "incident", "priority": "P2", "summary": "VPN drops every hour"}
TRIAGED = [
    ("set_priority", "P2"),
    ("set_category", "incident"),
    ("stop_sla", "first_response"),
    ("set_status", "open"),
]
R = TypeVar("R")


@pytest.fixture(scope="module")
def lifecycle() -> Definition:
    xml = (REPO / "bpmn" / "ticket_lifecycle.bpmn").read_bytes()
    return Definition.parse(xml, "ticket_lifecycle.bpmn", "ticket_lifecycle")


def _diagram(name: str) -> Definition:
    return Definition.parse((DATA / f"{name}.bpmn").read_bytes(), f"{name}.bpmn", name)


# --- driving one instance as the desk does -----------------------------------------------------
RELOADED, KEPT, DUMPED_AND_KEPT = "reloaded", "kept", "dumped and kept"


class Ticket:
    """One instance, driven call by call with the time passed as ``now``.

    ``mode`` RELOADED (the desk's way): after every call dump the instance and load it again from
    that text, so the next call starts from storage. KEPT: never dump, keep the one object.
    DUMPED_AND_KEPT: dump (which compacts in place) but keep using the same object.
    """

    def __init__(
        self, definition: Definition, *, mode: str = RELOADED, data: dict[str, Any] | None = None
    ) -> None:
        self.definition = definition
        self.mode = mode
        self.now = T0
        self.journal: list[Any] = []  # Steps (on_step) interleaved with desk calls, as an audit trail
        self.desk = FakeDesk(T0, journal=self.journal)
        self.stored = ""
        self.instance, self.steps = Instance.start(
            definition, data=data or {}, now=T0, functions=self.desk.functions(), on_step=self.journal.append
        )
        self._store()

    def _store(self) -> None:
        if self.mode == KEPT:
            return
        self.stored = self.instance.dump()
        if self.mode == RELOADED:
            self.instance = Instance.load(self.definition, self.stored)
            self.instance.on_step = self.journal.append

    def call(self, action: Callable[[Instance], R]) -> R:
        """Run one engine call at ``self.now``, then store (and reload) the instance."""
        self.desk.now = self.now
        result = action(self.instance)
        self._store()
        return result

    def later(self, **delta: float) -> None:
        self.now += timedelta(**delta)

    # acting
    def complete(self, element_id: str, **data: Any) -> list[Step]:
        task_id = self.task(element_id).task_id
        _, steps = self.call(
            lambda i: i.complete_task(task_id, data, now=self.now, functions=self.desk.functions())
        )
        return steps

    def deliver(self, name: str = "customer_replied", **payload: Any) -> tuple[bool, list[Step]]:
        return self.call(
            lambda i: i.deliver_message(name, payload, now=self.now, functions=self.desk.functions())
        )

    def fire(self, **delta: float) -> list[Step]:
        """Move the clock by ``delta`` and fire whatever timers are due then."""
        self.later(**delta)
        return self.call(lambda i: i.fire_due_timers(now=self.now, functions=self.desk.functions()))

    # reading
    def ready(self) -> list[str]:
        return [view.element_id for view in self.instance.user_tasks()]

    def task(self, element_id: str) -> UserTaskView:
        found = [view for view in self.instance.user_tasks() if view.element_id == element_id]
        assert len(found) == 1, f"{element_id} is not ready (ready: {self.ready()})"
        return found[0]

    def triage(self) -> None:
        self.complete("triage", **TRIAGE)
        assert self.desk.take() == TRIAGED


def ids(steps: list[Step]) -> list[str]:
    return [step.element_id for step in steps]


def new_ticket(lifecycle: Definition, mode: str = RELOADED) -> Ticket:
    """A new ticket of the lifecycle, acknowledged and waiting for triage."""
    started = Ticket(lifecycle, mode=mode)
    assert started.desk.take() == ACKNOWLEDGED
    return started


@pytest.fixture
def ticket(lifecycle: Definition) -> Ticket:
    """A new ticket, stored and reloaded between every two engine calls."""
    return new_ticket(lifecycle)


def test_the_fake_desk_keeps_the_desks_sla_contract() -> None:
    """The one test of tests/engine/fake_desk.py, which test_lifecycle_diagram.py walks too."""
    journal: list[Any] = []
    desk = FakeDesk(T0, journal=journal)
    resolution = SLA_TARGETS["resolution"]
    with pytest.raises(ValueError, match="never started"):
        desk.sla_due("resolution")
    desk.stop_sla("next_response")  # never started: nothing to stop
    assert desk.clock("next_response") is None
    desk.set_status("open")
    desk.start_sla("resolution")
    assert desk.sla_due("resolution") == T0 + resolution
    assert desk.sla_due("resolution", 75) == T0 + resolution * 0.75
    desk.now = T0 + timedelta(hours=1)
    desk.set_status("waiting_on_customer")
    assert desk.clock("resolution") == "paused"
    assert desk.sla_due("resolution", 150) == NEVER
    desk.start_sla("next_response")  # started under a pause status: starts paused
    assert desk.clock("next_response") == "paused"
    desk.now = T0 + timedelta(hours=5)
    desk.set_status("open")
    assert desk.clock("resolution") == desk.clock("next_response") == "running"
    assert desk.sla_due("resolution", 150) == T0 + resolution * 1.5 + timedelta(hours=4)
    desk.stop_sla("resolution")
    desk.stop_sla("resolution")  # no longer running: nothing happens
    assert desk.sla_due("resolution") == NEVER
    assert desk.statuses == ["open", "waiting_on_customer", "open"]
    for refused in (lambda: desk.set_status("pending"), lambda: desk.notify_lead("tier-9", "escalated")):
        with pytest.raises(ValueError, match="unknown"):
            refused()
    made = [
        ("stop_sla", "next_response"),
        ("set_status", "open"),
        ("start_sla", "resolution"),
        ("set_status", "waiting_on_customer"),
        ("start_sla", "next_response"),
        ("set_status", "open"),
        ("stop_sla", "resolution"),
        ("stop_sla", "resolution"),
    ]
    assert desk.take() == journal == made  # sla_due is a question, not a call the desk records
    assert desk.take() == []


# --- starting ----------------------------------------------------------------------------------
def test_start_acknowledges_and_stops_at_triage_in_tier_1_with_its_form(ticket: Ticket) -> None:
    assert ids(ticket.steps) == ["ticket_received", "acknowledge_customer"]
    [triage] = ticket.instance.user_tasks()
    assert (triage.element_id, triage.name, triage.lane) == ("triage", "Triage", "Tier 1")
    assert triage.documentation and triage.documentation.startswith("Read the request")
    fields = {field["id"]: field for field in triage.form}
    assert list(fields) == ["category", "priority", "summary"]
    assert [option[0] for option in fields["category"]["options"]] == [
        "question",
        "incident",
        "request",
        "wish",
    ]
    assert fields["priority"]["default"] == "P3"
    assert fields["summary"]["validation"] == {"required": None, "maxlength": "200"}
    assert not ticket.instance.completed


def test_the_first_wake_after_start_is_the_first_response_due_time(ticket: Ticket) -> None:
    assert ticket.instance.next_wake() == T0 + SLA_TARGETS["first_response"]


def test_start_data_is_visible_to_the_diagram() -> None:
    definition = _diagram("sandbox_escape")
    # The gateway routes on the seeded value: "later" avoids the escaping script at the start.
    instance, steps = Instance.start(definition, data={"escape_at": "later"}, now=T0, functions={})
    assert ids(steps) == ["start", "when"]
    assert [view.element_id for view in instance.user_tasks()] == ["review"]


def test_a_naive_now_is_refused(lifecycle: Definition, ticket: Ticket) -> None:
    naive = datetime(2026, 3, 2, 9, 0)
    with pytest.raises(ValueError, match="naive"):
        Instance.start(lifecycle, data={}, now=naive, functions=ticket.desk.functions())
    with pytest.raises(ValueError, match="naive"):
        ticket.instance.fire_due_timers(now=naive, functions=ticket.desk.functions())


# --- completing user tasks ---------------------------------------------------------------------
def test_completing_triage_returns_the_cleaned_form_and_moves_to_tier_1_work(ticket: Ticket) -> None:
    task_id = ticket.task("triage").task_id
    ticket.later(hours=1)
    cleaned, steps = ticket.call(
        lambda i: i.complete_task(
            task_id,
            {"category": "question", "summary": "How?"},
            now=ticket.now,
            functions=ticket.desk.functions(),
        )
    )
    assert cleaned == {"category": "question", "priority": "P3", "summary": "How?"}  # the default filled in
    assert ids(steps) == ["triage", "apply_triage", "is_wish", "to_routing", "route_by_tier"]
    assert steps[0].task_id == task_id
    assert ticket.desk.take() == [
        ("set_priority", "P3"),
        ("set_category", "question"),
        ("stop_sla", "first_response"),
        ("set_status", "open"),
    ]
    [work] = ticket.instance.user_tasks()
    assert (work.element_id, work.lane) == ("work_tier_1", "Tier 1")
    # The first of work_tier_1's resolution timers: the assignee's warning at 75 % of the target.
    assert ticket.instance.next_wake() == T0 + SLA_TARGETS["resolution"] * 0.75


@pytest.mark.parametrize(
    ("submitted", "refused_field"),
    [
        ({**TRIAGE, "category": "complaint"}, "category"),  # not one of the enum's values
        ({"category": "incident", "priority": "P2"}, "summary"),  # required, missing
        ({**TRIAGE, "summary": "   "}, "summary"),  # required, blank
        ({**TRIAGE, "summary": "x" * 201}, "summary"),  # over maxlength
        ({**TRIAGE, "assignee": "ann"}, "assignee"),  # not a field of the form
    ],
    ids=["wrong-enum", "missing-required", "blank-required", "too-long", "unknown-field"],
)
def test_a_submission_that_fails_the_form_is_refused_and_changes_nothing(
    ticket: Ticket, submitted: dict[str, Any], refused_field: str
) -> None:
    before = ticket.stored
    task_id = ticket.task("triage").task_id
    with pytest.raises(FormInvalid) as refused:
        ticket.instance.complete_task(task_id, submitted, now=T0, functions=ticket.desk.functions())
    assert list(refused.value.errors) == [refused_field]
    assert ticket.desk.take() == []
    assert ticket.instance.dump() == before
    assert ticket.ready() == ["triage"]


def test_form_errors_are_reported_for_every_field_at_once(ticket: Ticket) -> None:
    task_id = ticket.task("triage").task_id
    with pytest.raises(FormInvalid) as refused:
        ticket.instance.complete_task(task_id, {"category": "x", "extra": 1}, now=T0, functions={})
    assert sorted(refused.value.errors) == ["category", "extra", "summary"]


@pytest.mark.parametrize(
    "task_id",
    [str(uuid.UUID(int=1)), "not-a-task-id", "", "{" + str(uuid.UUID(int=2))],
    ids=["unknown-uuid", "malformed", "empty", "malformed-braces"],
)
def test_an_id_that_names_no_task_is_not_ready(ticket: Ticket, task_id: str) -> None:
    before = ticket.stored
    with pytest.raises(TaskNotReady):
        ticket.instance.complete_task(task_id, TRIAGE, now=T0, functions=ticket.desk.functions())
    assert ticket.instance.dump() == before


@pytest.mark.parametrize("mode", [RELOADED, KEPT])
def test_a_completed_task_is_not_ready_again(lifecycle: Definition, mode: str) -> None:
    ticket = new_ticket(lifecycle, mode)
    task_id = ticket.task("triage").task_id
    ticket.triage()
    before = ticket.instance.dump() if mode == RELOADED else None
    with pytest.raises(TaskNotReady):
        ticket.instance.complete_task(task_id, TRIAGE, now=T0, functions=ticket.desk.functions())
    assert ticket.desk.take() == []
    assert ticket.ready() == ["work_tier_1"]
    if before is not None:
        assert ticket.instance.dump() == before


def test_a_user_task_of_another_instance_is_not_ready_here(lifecycle: Definition, ticket: Ticket) -> None:
    other = Ticket(lifecycle)
    with pytest.raises(TaskNotReady):
        ticket.instance.complete_task(
            other.task("triage").task_id, TRIAGE, now=T0, functions=ticket.desk.functions()
        )


# --- messages ----------------------------------------------------------------------------------
def test_the_lifecycle_listens_for_customer_replied_only(lifecycle: Definition) -> None:
    assert lifecycle.message_names() == {"customer_replied"}
    assert lifecycle.message_event("customer_replied") is not None
    assert lifecycle.message_event("customer_called") is None


def test_a_reply_while_waiting_on_the_customer_is_taken_and_work_resumes(ticket: Ticket) -> None:
    ticket.triage()
    ticket.later(hours=1)
    ticket.complete("work_tier_1", outcome="wait_customer")
    assert ticket.desk.take() == [*ANSWERED, ("set_status", "waiting_on_customer")]
    assert ticket.desk.clock("resolution") == "paused"  # by the status: the diagram calls no pause_sla
    assert ticket.ready() == []
    assert ticket.instance.waiting_messages() == {"customer_replied"}

    ticket.later(days=2)
    delivered, steps = ticket.deliver(body="It is version 5.1")
    assert delivered is True
    assert ids(steps) == [
        "waiting_gateway",
        "waiting_customer_replied",
        "to_customer_answered",
        "customer_answered",
        "to_routing",
        "route_by_tier",
    ]
    assert ticket.desk.take() == [("set_status", "open"), ("start_sla", "next_response")]
    assert ticket.desk.clock("resolution") == "running"
    assert ticket.ready() == ["work_tier_1"]
    # The two days spent waiting on the customer push the resolution targets back (the first of
    # them, the 75 % warning, is armed afresh with the work).
    assert ticket.instance.next_wake() == T0 + SLA_TARGETS["resolution"] * 0.75 + timedelta(days=2)


def test_a_reply_during_triage_is_kept_by_the_boundary_catch_and_triage_stays(ticket: Ticket) -> None:
    triage_id = ticket.task("triage").task_id
    delivered, steps = ticket.deliver()
    assert delivered is True
    assert ids(steps) == ["triage_customer_replied", "triage_reply_kept"]
    assert ticket.desk.take() == []
    assert [view.task_id for view in ticket.instance.user_tasks()] == [triage_id]


def test_a_reply_nobody_waits_for_is_not_delivered_and_changes_nothing(ticket: Ticket) -> None:
    ticket.deliver()  # triage's non-interrupting catch took the first reply and is not armed again
    assert ticket.instance.waiting_messages() == set()
    before, journal = ticket.stored, list(ticket.journal)
    second = ticket.instance.deliver_message(
        "customer_replied", {}, now=T0, functions=ticket.desk.functions()
    )
    assert second == (False, [])
    assert ticket.journal == journal  # no step ran, no desk call was made
    assert ticket.instance.dump() == before


def test_an_unknown_message_name_is_not_delivered(ticket: Ticket) -> None:
    before = ticket.stored
    assert ticket.instance.deliver_message(
        "customer_called", {}, now=T0, functions=ticket.desk.functions()
    ) == (
        False,
        [],
    )
    assert ticket.instance.dump() == before
    assert ticket.instance.waiting_messages() == {"customer_replied"}


def test_a_message_nothing_waits_for_yet_can_be_delivered_once_something_does() -> None:
    ticket = Ticket(_diagram("message_later"))
    assert ticket.ready() == ["prepare"]
    assert ticket.instance.waiting_messages() == set()
    before = ticket.stored
    assert ticket.deliver("ping") == (False, [])
    assert ticket.stored == before

    ticket.complete("prepare")
    assert ticket.instance.waiting_messages() == {"ping"}
    delivered, steps = ticket.deliver("ping")
    assert (delivered, ids(steps)) == (True, ["wait_for_ping", "end"])
    assert ticket.instance.completed


@pytest.mark.parametrize(
    ("outcome", "wait", "branches"),
    [
        ("resolve", timedelta(days=7), {"resolved_close_due", "resolved_customer_replied"}),
        ("wait_customer", timedelta(days=3), {"waiting_reminder_due", "waiting_customer_replied"}),
    ],
    ids=["resolved-close-vs-reopen", "waiting-reminder-vs-answer"],
)
def test_a_reply_after_an_overdue_gateway_timer_takes_exactly_one_branch(
    ticket: Ticket, outcome: str, wait: timedelta, branches: set[str]
) -> None:
    ticket.triage()
    ticket.complete("work_tier_1", outcome=outcome)
    ticket.desk.take()
    ticket.later(seconds=(wait + timedelta(minutes=5)).total_seconds())  # the worker has not run yet
    _, delivered_steps = ticket.deliver()
    fired_steps = ticket.call(lambda i: i.fire_due_timers(now=ticket.now, functions=ticket.desk.functions()))
    taken = [e for e in ids(delivered_steps + fired_steps) if e in branches]
    closed = ("close", "") in ticket.desk.take()
    assert len(taken) == 1, f"both branches of the event-based gateway ran: {taken}"
    assert not (closed and ticket.ready()), "the ticket was closed and reopened at once"


# --- timers ------------------------------------------------------------------------------------
def test_no_timer_fires_before_or_exactly_at_its_due_time(ticket: Ticket) -> None:
    before = ticket.stored
    assert ticket.fire(hours=7, minutes=59) == []
    assert ticket.fire(minutes=1) == []  # at the due time: the engine fires strictly after it
    assert ticket.now == ticket.instance.next_wake()
    assert ticket.desk.take() == []
    assert ticket.stored == before


def test_the_first_response_timer_notifies_tier_1_and_leaves_triage_ready(ticket: Ticket) -> None:
    triage_id = ticket.task("triage").task_id
    steps = ticket.fire(hours=8, seconds=1)
    assert ids(steps) == ["triage_first_response_due", "remind_tier_1", "tier_1_reminded"]
    assert ticket.desk.take() == [("notify", "tier-1", "first_response_due")]
    assert [view.task_id for view in ticket.instance.user_tasks()] == [triage_id]
    assert ticket.instance.next_wake() is None  # the non-interrupting timer does not fire twice
    assert ticket.fire(days=1) == []
    ticket.triage()
    assert ticket.ready() == ["work_tier_1"]


def test_an_unanswered_ticket_is_reminded_after_3_days_and_closed_4_days_later(ticket: Ticket) -> None:
    ticket.triage()
    ticket.later(hours=2)
    ticket.complete("work_tier_1", outcome="wait_customer")
    ticket.desk.take()
    asked = ticket.now
    assert ticket.instance.next_wake() == asked + timedelta(days=3)

    assert ticket.fire(days=3, minutes=-1) == []
    steps = ticket.fire(minutes=2)
    assert ids(steps) == ["waiting_gateway", "waiting_reminder_due", "send_reminder"]
    assert ticket.desk.take() == [("send_template", "reminder")]
    assert ticket.instance.waiting_messages() == {"customer_replied"}
    reminded = ticket.now
    assert ticket.instance.next_wake() == reminded + timedelta(days=4)

    assert ticket.fire(days=4, minutes=-1) == []
    steps = ticket.fire(minutes=2)
    assert ids(steps) == [
        "reminded_gateway",
        "reminded_auto_close_due",
        "auto_close_notice",
        "to_closing",
        "close_ticket",
        "ticket_closed",
    ]
    assert ticket.desk.take() == [("send_template", "auto_closed"), ("close", "")]
    assert ticket.instance.completed
    assert ticket.instance.user_tasks() == []
    assert ticket.instance.waiting_messages() == set()
    assert ticket.instance.next_wake() is None
    assert ticket.deliver() == (False, [])


def test_a_breached_resolution_target_moves_the_work_from_tier_1_to_tier_2(ticket: Ticket) -> None:
    ticket.later(hours=1)
    ticket.triage()
    tier_1 = ticket.task("work_tier_1")
    assert ticket.instance.next_wake() == T0 + SLA_TARGETS["resolution"] * 0.75

    steps = ticket.fire(hours=53, minutes=1)  # one minute past T0 + 54 h: warned, work stays
    assert ids(steps) == ["work_tier_1_resolution_warning", "warn_assignee", "assignee_warned"]
    assert ticket.desk.take() == [("notify_assignee", "sla_warning")]
    assert ticket.task("work_tier_1").task_id == tier_1.task_id
    assert ticket.instance.next_wake() == T0 + SLA_TARGETS["resolution"]

    assert ticket.fire(hours=17, minutes=58) == []  # one minute before T0 + 72 h
    assert ticket.ready() == ["work_tier_1"]
    steps = ticket.fire(minutes=2)
    assert ids(steps) == [
        "work_tier_1_resolution_due",
        "breach_tier_1",
        "to_escalation",
        "escalate",
        "to_routing",
        "route_by_tier",
    ]
    assert ticket.desk.take() == [
        ("escalate", "tier-2", "resolution target reached"),
        ("notify_lead", "tier-2", "escalated"),
    ]
    [tier_2] = ticket.instance.user_tasks()
    assert (tier_2.element_id, tier_2.lane) == ("work_tier_2", "Tier 2")
    with pytest.raises(TaskNotReady):
        ticket.instance.complete_task(
            tier_1.task_id, {"outcome": "resolve"}, now=ticket.now, functions=ticket.desk.functions()
        )


@pytest.mark.parametrize(
    ("failing_percent", "timer"),
    [(75, "work_tier_1_resolution_warning"), (100, "work_tier_1_resolution_due")],
    ids=["warning", "due"],
)
def test_an_error_in_a_timer_expression_names_the_timer(
    ticket: Ticket, failing_percent: float, timer: str
) -> None:
    """work_tier_1 arms two sla_due timers at once; the error names the one whose expression failed."""

    def no_due_time(clock: str, percent: float = 100) -> datetime:
        if percent == failing_percent:
            raise ValueError(f"no due time for {clock} at {percent} %")
        return ticket.desk.sla_due(clock, percent)

    task_id = ticket.task("triage").task_id
    functions = {**ticket.desk.functions(), "sla_due": no_due_time}
    with pytest.raises(ScriptError) as failed:
        ticket.instance.complete_task(task_id, TRIAGE, now=T0, functions=functions)
    assert failed.value.element_id == timer
    assert f"no due time for resolution at {failing_percent} %" in str(failed.value)


# --- steps -------------------------------------------------------------------------------------
def test_steps_describe_each_element_run_in_order(ticket: Ticket) -> None:
    start, acknowledge = ticket.steps
    assert (start.element_id, start.name, start.kind, start.lane) == (
        "ticket_received",
        "Ticket received",
        "StartEvent",
        "Desk",
    )
    assert (acknowledge.element_id, acknowledge.name, acknowledge.kind, acknowledge.lane) == (
        "acknowledge_customer",
        "Acknowledge customer",
        "ScriptTask",
        "Desk",
    )
    assert start.task_id != acknowledge.task_id
    assert all(uuid.UUID(step.task_id) for step in ticket.steps)


def test_on_step_reports_each_step_before_the_desk_calls_its_script_makes(lifecycle: Definition) -> None:
    ticket = Ticket(lifecycle)
    [received, acknowledge] = ticket.steps
    assert ticket.journal == [received, acknowledge, *ACKNOWLEDGED]

    del ticket.journal[:]
    steps = ticket.complete("triage", **TRIAGE)
    triage, apply_triage, *routing = steps
    assert ticket.journal == [triage, apply_triage, *TRIAGED, *routing]

    del ticket.journal[:]
    steps = ticket.fire(hours=54, minutes=1)
    timer, warn, warned = steps
    assert ticket.journal == [timer, warn, ("notify_assignee", "sla_warning"), warned]

    del ticket.journal[:]
    steps = ticket.fire(hours=18)
    timer, breach, merge, escalate, *routing = steps
    assert ids([timer, breach, merge, escalate]) == [
        "work_tier_1_resolution_due",
        "breach_tier_1",
        "to_escalation",
        "escalate",
    ]
    escalated = [("escalate", "tier-2", "resolution target reached"), ("notify_lead", "tier-2", "escalated")]
    assert ticket.journal == [timer, breach, merge, escalate, *escalated, *routing]


def test_an_instance_loaded_from_storage_reports_no_steps_until_given_a_callback(ticket: Ticket) -> None:
    loaded = Instance.load(ticket.definition, ticket.stored)
    assert loaded.on_step is None
    seen: list[Step] = []
    loaded.on_step = seen.append
    steps = loaded.fire_due_timers(now=T0 + timedelta(hours=9), functions=ticket.desk.functions())
    assert seen == steps
    assert ids(steps) == ["triage_first_response_due", "remind_tier_1", "tier_1_reminded"]


# --- the sandbox, by construction --------------------------------------------------------------
@pytest.mark.parametrize("engine", [PythonScriptEngine(), None], ids=["stock-engine", "no-engine"])
def test_a_desk_workflow_cannot_be_built_without_the_sandbox(lifecycle: Definition, engine: Any) -> None:
    with pytest.raises(TypeError, match="SandboxedScriptEngine"):
        state_store.DeskWorkflow(lifecycle.spec, lifecycle.subprocess_specs, script_engine=engine)


def test_the_sandboxed_engine_of_a_desk_workflow_cannot_be_replaced(ticket: Ticket) -> None:
    workflow = ticket.instance.workflow
    with pytest.raises(TypeError, match="SandboxedScriptEngine"):
        workflow.script_engine = PythonScriptEngine()
    assert type(workflow.script_engine) is SandboxedScriptEngine


def test_an_instance_loaded_from_storage_runs_under_the_sandbox(ticket: Ticket) -> None:
    loaded = Instance.load(ticket.definition, ticket.stored)
    assert isinstance(loaded.workflow, state_store.DeskWorkflow)
    assert type(loaded.workflow.script_engine) is SandboxedScriptEngine


def _stock_loads(dump: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    serializer = BpmnWorkflowSerializer(BpmnWorkflowSerializer.configure(SPIFF_CONFIG))
    state = json.loads(dump)["state"]
    yield "deserialize_json", lambda: serializer.deserialize_json(dump)
    yield "from_dict", lambda: serializer.from_dict(state)
    versioned = json.dumps({**state, "serializer_version": "1.5"})
    yield "deserialize_json with a version key", lambda: serializer.deserialize_json(versioned)


def test_the_stock_serializer_cannot_load_a_desk_instance(ticket: Ticket) -> None:
    for how, load in _stock_loads(ticket.stored):
        with pytest.raises((KeyError, TypeError, ValueError)):
            load()
            pytest.fail(f"the stock serializer loaded a desk instance through {how}")


def test_a_script_importing_os_is_refused_on_a_fresh_start() -> None:
    definition = _diagram("sandbox_escape")
    with pytest.raises(SandboxViolation) as refused:
        Instance.start(definition, data={"escape_at": "start"}, now=T0, functions={})
    assert refused.value.element_id == "escape_at_start"
    assert "__import__" in str(refused.value)


def test_a_script_importing_os_is_refused_after_a_load() -> None:
    definition = _diagram("sandbox_escape")
    ticket = Ticket(definition, data={"escape_at": "later"})
    assert ticket.ready() == ["review"]
    with pytest.raises(SandboxViolation) as refused:
        ticket.complete("review")
    assert refused.value.element_id == "escape_after_review"
    assert "__import__" in str(refused.value)


# --- script errors -----------------------------------------------------------------------------
def test_a_failing_desk_function_is_a_script_error_naming_the_element(ticket: Ticket) -> None:
    def unknown_priority(priority: str) -> None:
        raise ValueError(f"unknown priority {priority!r}")

    task_id = ticket.task("triage").task_id
    functions = {**ticket.desk.functions(), "set_priority": unknown_priority}
    with pytest.raises(ScriptError) as failed:
        ticket.instance.complete_task(task_id, TRIAGE, now=T0, functions=functions)
    assert type(failed.value) is ScriptError  # an error, not a sandbox refusal
    assert failed.value.element_id == "apply_triage"
    assert failed.value.line == 1
    assert "ValueError: unknown priority 'P2'" in str(failed.value)


def test_a_failed_step_leaves_the_stored_state_loadable_and_unchanged(ticket: Ticket) -> None:
    def unknown_priority(priority: str) -> None:
        raise ValueError(f"unknown priority {priority!r}")

    before = ticket.stored
    task_id = ticket.task("triage").task_id
    with pytest.raises(ScriptError):
        ticket.instance.complete_task(
            task_id, TRIAGE, now=T0, functions={**ticket.desk.functions(), "set_priority": unknown_priority}
        )
    ticket.desk.take()

    # The desk discards the failed object and retries from what it stored.
    retry = Instance.load(ticket.definition, before)
    assert retry.dump() == before
    assert [view.task_id for view in retry.user_tasks()] == [task_id]
    _, steps = retry.complete_task(task_id, TRIAGE, now=T0, functions=ticket.desk.functions())
    assert ids(steps)[:2] == ["triage", "apply_triage"]
    assert ticket.desk.take() == TRIAGED
    assert [view.element_id for view in retry.user_tasks()] == ["work_tier_1"]


# --- stored state ------------------------------------------------------------------------------
def _keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from _keys(item)


def test_stored_state_holds_no_process_definition(ticket: Ticket) -> None:
    envelope = json.loads(ticket.stored)
    assert set(envelope) == {"format", "spiff", "state"}
    keys = set(_keys(envelope["state"]))
    assert not keys & {"spec", "subprocess_specs", "task_specs"}
    assert "assign_group" not in ticket.stored  # no script text either
    assert len(ticket.stored.encode()) < 16 * 1024  # well under 64 KB


def test_stored_state_stays_bounded_over_300_wait_and_reply_rounds(ticket: Ticket) -> None:
    ticket.triage()
    sizes = {}
    for round_ in range(1, 301):
        ticket.later(minutes=5)
        ticket.complete("work_tier_1", outcome="wait_customer")
        ticket.later(minutes=5)
        delivered, _ = ticket.deliver()
        assert delivered, f"round {round_}: the reply was not taken"
        sizes[round_] = len(ticket.stored.encode())
    assert ticket.ready() == ["work_tier_1"]
    assert sizes[300] <= 1.2 * sizes[10], sizes
    assert max(sizes.values()) < 64 * 1024
    # Every round paused the resolution clock for 5 minutes; the first wake is the 75 % warning.
    assert ticket.instance.next_wake() == T0 + SLA_TARGETS["resolution"] * 0.75 + timedelta(minutes=5 * 300)


def _states(lifecycle: Definition) -> Iterator[tuple[str, Ticket]]:
    ticket = new_ticket(lifecycle)
    yield "triage", ticket
    ticket.fire(hours=8, minutes=1)
    assert ticket.desk.take() == [("notify", "tier-1", "first_response_due")]
    yield "triage, reminded", ticket
    ticket.triage()
    yield "tier 1 work", ticket
    ticket.complete("work_tier_1", outcome="wait_customer")
    yield "waiting on the customer", ticket
    ticket.fire(days=3, minutes=1)
    yield "customer reminded", ticket
    ticket.deliver()
    ticket.complete("work_tier_1", outcome="resolve")
    yield "resolved", ticket
    ticket.fire(days=7, minutes=1)
    yield "closed", ticket


def _view(instance: Instance) -> tuple[Any, ...]:
    return (
        instance.next_wake(),
        [(view.task_id, view.element_id, view.lane) for view in instance.user_tasks()],
        instance.waiting_messages(),
        instance.completed,
    )


def test_dump_and_load_preserve_what_the_desk_reads(lifecycle: Definition) -> None:
    seen = []
    for name, ticket in _states(lifecycle):
        loaded = Instance.load(lifecycle, ticket.stored)
        assert _view(loaded) == _view(ticket.instance), name
        assert loaded.dump() == ticket.stored, name
        seen.append((name, ticket.ready(), loaded.next_wake() is not None, sorted(loaded.waiting_messages())))
    assert seen == [
        ("triage", ["triage"], True, ["customer_replied"]),
        ("triage, reminded", ["triage"], False, ["customer_replied"]),
        ("tier 1 work", ["work_tier_1"], True, ["customer_replied"]),
        ("waiting on the customer", [], True, ["customer_replied"]),
        ("customer reminded", [], True, ["customer_replied"]),
        ("resolved", [], True, ["customer_replied"]),
        ("closed", [], False, []),
    ]


@pytest.mark.parametrize("text", ["not json", "{}", json.dumps({"format": "lanedesk-0", "state": {}})])
def test_loading_refuses_text_that_is_not_a_stored_instance(lifecycle: Definition, text: str) -> None:
    with pytest.raises(EngineError):
        Instance.load(lifecycle, text)


def test_a_definition_that_lacks_the_process_is_refused() -> None:
    xml = (REPO / "bpmn" / "ticket_lifecycle.bpmn").read_bytes()
    with pytest.raises(DefinitionError):
        Definition.parse(xml, "ticket_lifecycle.bpmn", "no_such_process")


# --- storage does not change behaviour ---------------------------------------------------------
def _a_whole_life(ticket: Ticket) -> list[tuple[Any, ...]]:
    """One ticket through timers, replies, escalation, reopening and closing; what the desk saw."""
    seen = []

    def note(steps: list[Step]) -> None:
        instance = ticket.instance
        seen.append(
            (
                ids(steps),
                ticket.desk.take(),
                ticket.ready(),
                instance.next_wake(),
                instance.waiting_messages(),
                instance.completed,
            )
        )

    note(ticket.fire(hours=8, minutes=1))  # first response missed: Tier 1 notified
    note(ticket.deliver()[1])  # a reply during triage
    ticket.later(hours=1)
    note(ticket.complete("triage", **TRIAGE))
    note(ticket.complete("work_tier_1", outcome="escalate"))
    note(ticket.complete("work_tier_2", outcome="wait_customer"))
    note(ticket.fire(days=3, minutes=1))  # reminder
    note(ticket.fire(hours=1))
    note(ticket.deliver()[1])  # answered after the reminder
    note(ticket.complete("work_tier_2", outcome="resolve"))
    note(ticket.fire(days=2))
    note(ticket.deliver()[1])  # reopened
    note(ticket.complete("work_tier_2", outcome="resolve"))
    note(ticket.fire(days=7, minutes=1))  # closed
    return seen


def test_a_stored_and_reloaded_instance_behaves_like_one_kept_in_memory(lifecycle: Definition) -> None:
    reloaded = _a_whole_life(new_ticket(lifecycle, RELOADED))
    assert [calls for _, calls, *_ in reloaded[-2:]] == [[*ANSWERED, *RESOLVED], [("close", "")]]
    assert reloaded[-1][-1] is True  # completed
    assert _a_whole_life(new_ticket(lifecycle, KEPT)) == reloaded
    assert _a_whole_life(new_ticket(lifecycle, DUMPED_AND_KEPT)) == reloaded
