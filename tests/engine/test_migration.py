"""engine.migration: moving running instances onto a new version of their diagram.

Variants of the bundled lifecycle and of a small diagram with a subprocess live in
tests/data/migration (each file says what it changes). Every migrated instance is dumped and
loaded again with the new definition alone, as the desk stores it, before it is checked.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from SpiffWorkflow.bpmn.util.diff import diff_workflow, migrate_workflow
from SpiffWorkflow.util.task import TaskState

from engine import state as state_store
from engine.clock import frozen_at
from engine.migration import MigrationRefused, migrate, needs_engine_run, plan_migration
from engine.runtime import Definition, Instance

from .fake_desk import FakeDesk

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "migration"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TRIAGE = {"category": "incident", "priority": "P2", "summary": "VPN drops every hour"}
V2 = "version 2"


@pytest.fixture(scope="module")
def lifecycle() -> Definition:
    return Definition.parse(
        (REPO / "bpmn" / "ticket_lifecycle.bpmn").read_bytes(), "v1.bpmn", "ticket_lifecycle"
    )


def variant(name: str, process_id: str = "ticket_lifecycle") -> Definition:
    return Definition.parse((DATA / f"{name}.bpmn").read_bytes(), f"{name}.bpmn", process_id)


class Ticket:
    """One instance on the fake desk, stored and reloaded after every call as the desk does."""

    def __init__(self, definition: Definition, data: dict[str, Any] | None = None) -> None:
        self.now = T0
        self.desk = FakeDesk(T0)
        instance, _ = Instance.start(definition, data=data or {}, now=T0, functions=self.desk.functions())
        self.instance = Instance.load(definition, instance.dump())

    def complete(self, element_id: str, **data: Any) -> None:
        self.desk.now = self.now
        [view] = [v for v in self.instance.user_tasks() if v.element_id == element_id]
        self.instance.complete_task(view.task_id, data, now=self.now, functions=self.desk.functions())
        self.instance = Instance.load(self.instance.definition, self.instance.dump())

    def migrate(self, new: Definition, **later: float) -> Instance:
        """Migrate at ``now + later`` and keep the result, reloaded from its dump with ``new``."""
        self.now += timedelta(**later)
        self.desk.now = self.now
        moved = migrate(self.instance, new, now=self.now, functions=self.desk.functions(), target=V2)
        self.instance = Instance.load(new, moved.dump())
        return self.instance

    def ready(self) -> list[str]:
        return [view.element_id for view in self.instance.user_tasks()]

    def wake(self) -> datetime | None:
        return self.instance.next_wake(self.now, functions=self.desk.functions())


def waiting_for_customer(lifecycle: Definition) -> Ticket:
    """A ticket whose agent asked the customer at 10:00: the event-based gateway waits 3 days."""
    ticket = Ticket(lifecycle)
    ticket.complete("triage", **TRIAGE)
    ticket.now += timedelta(hours=1)
    ticket.complete("work_tier_1", outcome="wait_customer")
    return ticket


# --- landing ---------------------------------------------------------------------------------------
def test_a_ticket_at_triage_moves_and_its_next_task_is_the_new_versions(lifecycle: Definition) -> None:
    ticket = Ticket(lifecycle, data={"ticket_number": 1042})
    [before] = ticket.instance.user_tasks()
    plan = plan_migration(ticket.instance, variant("call_customer"), target=V2)
    assert plan.can_migrate and plan.reason is None
    assert [(t.element_id, t.state, t.new_name) for t in plan.tasks] == [
        ("triage", "ready", "Triage"),
        ("triage_customer_replied", "waiting", "Customer replied"),
        ("triage_first_response_due", "waiting", "First response due"),
    ]
    assert plan.tasks[0].changes == ("then 'Call the customer' (call_customer)",)

    ticket.migrate(variant("call_customer"), hours=1)
    [after] = ticket.instance.user_tasks()
    assert (after.task_id, after.element_id, after.lane) == (before.task_id, "triage", "Tier 1")
    ticket.complete("triage", **TRIAGE)
    assert ticket.ready() == ["call_customer"]
    ticket.complete("call_customer", reached=True)
    assert ticket.ready() == ["work_tier_1"]
    [work] = ticket.instance.workflow.get_tasks(state=TaskState.READY, manual=True)
    assert work.data["ticket_number"] == 1042 and work.data["reached"] is True


def test_a_renamed_task_keeps_its_id_and_takes_the_new_name_and_form(lifecycle: Definition) -> None:
    ticket = Ticket(lifecycle)
    [landing, *_] = plan_migration(ticket.instance, variant("triage_renamed"), target=V2).tasks
    assert (landing.element_id, landing.name, landing.new_name) == ("triage", "Triage", "Qualify the request")
    assert landing.changes == ("renamed 'Triage' → 'Qualify the request'", "form changed")
    ticket.migrate(variant("triage_renamed"))
    [view] = ticket.instance.user_tasks()
    assert view.name == "Qualify the request"
    assert [f["id"] for f in view.form] == ["category", "priority", "product", "summary"]


def test_a_task_drawn_in_another_lane_lands_in_that_lane(lifecycle: Definition) -> None:
    ticket = Ticket(lifecycle)
    [landing, *_] = plan_migration(ticket.instance, variant("triage_in_tier_2"), target=V2).tasks
    assert (landing.lane, landing.new_lane, landing.changes) == (
        "Tier 1",
        "Tier 2",
        ("lane Tier 1 → Tier 2",),
    )
    ticket.migrate(variant("triage_in_tier_2"))
    assert [view.lane for view in ticket.instance.user_tasks()] == ["Tier 2"]


def test_task_data_survives_although_reset_branch_replaces_it_with_the_parents(lifecycle: Definition) -> None:
    ticket = Ticket(lifecycle)
    ticket.complete("triage", **TRIAGE)
    [work] = ticket.instance.workflow.get_tasks(state=TaskState.READY, manual=True)
    work.data["draft"] = "Dear Jana,"  # data the task holds beyond its parent's
    before = dict(work.data)

    stock = Instance.load(lifecycle, ticket.instance.dump())
    stock.workflow.get_task_from_id(work.id).data["draft"] = "Dear Jana,"
    _stock_migrate(stock, variant("call_customer"), ticket)
    assert "draft" not in stock.workflow.get_task_from_id(work.id).data  # the defect we repair

    moved = ticket.migrate(variant("call_customer"))
    assert moved.workflow.get_task_from_id(work.id).data == before


# --- timers ----------------------------------------------------------------------------------------
def test_waiting_timers_keep_their_due_times(lifecycle: Definition) -> None:
    ticket = waiting_for_customer(lifecycle)
    assert ticket.wake() == datetime(2026, 3, 5, 10, 0, tzinfo=UTC)  # 3 days after 10:00

    stock = Instance.load(lifecycle, ticket.instance.dump())
    _stock_migrate(stock, variant("call_customer"), ticket, hours=5)
    assert stock.next_wake(functions=ticket.desk.functions()) == datetime(2026, 3, 5, 15, 0, tzinfo=UTC)

    ticket.migrate(variant("call_customer"), hours=5)
    assert ticket.wake() == datetime(2026, 3, 5, 10, 0, tzinfo=UTC)
    assert not needs_engine_run(ticket.instance)


def test_a_shorter_duration_counts_from_when_its_timer_started_waiting(lifecycle: Definition) -> None:
    ticket = waiting_for_customer(lifecycle)
    [gateway] = plan_migration(ticket.instance, variant("timers_changed"), target=V2).tasks
    assert gateway.element_id == "waiting_gateway"
    assert gateway.due == datetime(2026, 3, 5, 10, 0, tzinfo=UTC)
    assert gateway.changes == ('timer "P3D" → "P2D" (counted from when it started waiting)',)
    ticket.migrate(variant("timers_changed"), hours=5)
    assert ticket.wake() == datetime(2026, 3, 4, 10, 0, tzinfo=UTC)  # 2 days after 10:00, not after 15:00


def test_a_changed_date_timer_is_evaluated_again_at_the_migration(lifecycle: Definition) -> None:
    ticket = Ticket(lifecycle)
    assert ticket.wake() == T0 + timedelta(hours=8)  # the fake desk's first-response target
    ticket.migrate(variant("timers_changed"), hours=1)
    assert ticket.wake() == T0 + timedelta(hours=4)  # sla_due("first_response", 50)


def test_a_timer_that_fell_due_before_the_migration_fires_on_the_next_run(lifecycle: Definition) -> None:
    ticket = Ticket(lifecycle)
    moved = ticket.migrate(variant("call_customer"), hours=9)  # due at 17:00, not woken yet
    assert needs_engine_run(moved)
    steps = moved.fire_due_timers(now=ticket.now, functions=ticket.desk.functions())
    assert "remind_tier_1" in [step.element_id for step in steps]


def test_a_changed_boundary_duration_in_a_small_diagram_counts_from_its_start() -> None:
    ticket = Ticket(variant("small", "small"))
    assert ticket.wake() == T0 + timedelta(hours=4)
    ticket.migrate(variant("small_reminder_2h", "small"), hours=1)
    assert ticket.wake() == T0 + timedelta(hours=2)


# --- refusals --------------------------------------------------------------------------------------
def test_a_removed_task_is_refused_and_the_instance_is_left_as_it_was(lifecycle: Definition) -> None:
    ticket = Ticket(lifecycle)
    stored = ticket.instance.dump()
    plan = plan_migration(ticket.instance, variant("triage_removed"), target="version 7")
    assert not plan.can_migrate
    assert plan.reason == "the user task 'Triage' (triage) is not in version 7: it was removed"
    assert [t.refusal is None for t in plan.tasks] == [False, False, False]
    with pytest.raises(MigrationRefused) as refused:
        migrate(ticket.instance, variant("triage_removed"), now=T0, functions=ticket.desk.functions())
    assert refused.value.plan.reason is not None and "it was removed" in str(refused.value)
    assert ticket.instance.dump() == stored


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            "triage_timer_added",
            "the user task 'Triage' (triage) cannot move to version 2: its boundary events changed "
            "(added 'Not triaged in a day' (triage_overdue)); "
            "a task that already waits keeps the ones it had",
        ),
    ],
)
def test_boundary_events_added_to_a_waiting_task_are_refused(
    lifecycle: Definition, name: str, reason: str
) -> None:
    assert plan_migration(Ticket(lifecycle).instance, variant(name), target=V2).reason == reason


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            "small_reminder_removed",
            "the user task 'Review' (review) cannot move to version 2: its boundary events changed "
            "(removed 'Review due' (review_due)); a task that already waits keeps the ones it had",
        ),
        (
            "small_review_manual",
            "the user task 'Review' (review) cannot move to version 2: "
            "it changed from a user task to a manual task",
        ),
        (
            "small_review_in_subprocess",
            "the user task 'Review' (review) cannot move to version 2: "
            "it moved into the subprocess 'Handle' (handle)",
        ),
        ("small_review_replaced", "the user task 'Review' (review) is not in version 2: it was removed"),
    ],
)
def test_a_task_at_review_is_refused_with_a_precise_reason(name: str, reason: str) -> None:
    ticket = Ticket(variant("small", "small"))
    assert plan_migration(ticket.instance, variant(name, "small"), target=V2).reason == reason


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        (
            "small_fix_out_of_subprocess",
            "the user task 'Fix' (fix) cannot move to version 2: "
            "it moved out of the subprocess 'Handle' (handle)",
        ),
        (
            "small_fix_replaced",
            "the user task 'Fix' (fix) is not in version 2: it was removed (version 2 has 'Repair' (repair) "
            "in its place; tickets only move onto the same element id)",
        ),
    ],
)
def test_a_task_inside_a_subprocess_is_refused_with_a_precise_reason(name: str, reason: str) -> None:
    ticket = at_fix()
    assert plan_migration(ticket.instance, variant(name, "small"), target=V2).reason == reason


def test_a_join_waiting_with_a_branch_that_was_removed_is_refused() -> None:
    ticket = Ticket(variant("small_parallel", "small_parallel"))
    ticket.complete("a")  # the join waits for b, holding a's branch
    plan = plan_migration(ticket.instance, variant("small_parallel_a_replaced", "small_parallel"), target=V2)
    assert [(t.element_id, t.lands) for t in plan.tasks] == [("b", True), ("join", False)]
    assert plan.reason == (
        "the parallel gateway 'Both checked' (join) cannot move to version 2: "
        "it waits with the finished 'Check A' (a), which was removed"
    )


def test_another_process_is_refused(lifecycle: Definition) -> None:
    plan = plan_migration(Ticket(lifecycle).instance, variant("small", "small"), target=V2)
    assert plan.reason == "version 2 is the process 'small', not 'ticket_lifecycle'"


# --- subprocesses and history ----------------------------------------------------------------------
def at_fix() -> Ticket:
    ticket = Ticket(variant("small", "small"))
    ticket.complete("review")
    assert ticket.ready() == ["fix"]
    return ticket


def test_a_task_inside_a_subprocess_moves_with_it_and_runs_the_new_subprocess() -> None:
    ticket = at_fix()
    plan = plan_migration(ticket.instance, variant("small_fix_renamed", "small"), target=V2)
    assert [(t.subprocess, t.element_id, t.kind, t.state, t.new_name) for t in plan.tasks] == [
        (None, "handle", "subprocess", "started", "Handle"),
        ("handle", "fix", "user task", "ready", "Repair"),
    ]
    ticket.migrate(variant("small_fix_renamed", "small"))
    assert [view.name for view in ticket.instance.user_tasks()] == ["Repair"]
    ticket.complete("fix")
    assert ticket.ready() == ["check"]  # added inside the subprocess by version 2
    ticket.complete("check")
    assert ticket.ready() == ["approve"]


def test_what_follows_a_running_subprocess_is_predicted_again() -> None:
    ticket = at_fix()
    ticket.migrate(variant("small_sign_off", "small"))  # approve gave way to sign_off
    ticket.complete("fix")
    assert ticket.ready() == ["sign_off"]


def test_finished_tasks_whose_element_was_removed_leave_the_state() -> None:
    ticket = at_fix()  # review is done; version 2 moved it into the subprocess
    assert plan_migration(ticket.instance, variant("small_review_in_subprocess", "small")).can_migrate
    moved = ticket.migrate(variant("small_review_in_subprocess", "small"))
    names = {t.task_spec.name for t in moved.workflow.get_tasks()}
    assert "review" not in names
    ticket.complete("fix")
    assert ticket.ready() == ["approve"]


def test_plans_are_json_ready(lifecycle: Definition) -> None:
    plan = plan_migration(waiting_for_customer(lifecycle).instance, variant("timers_changed"), target=V2)
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["can_migrate"] is True
    assert data["tasks"][0]["due"] == "2026-03-05T10:00:00+00:00"
    assert data["tasks"][0]["kind"] == "event based gateway"


def _stock_migrate(instance: Instance, new: Definition, ticket: Ticket, **later: float) -> None:
    """SpiffWorkflow's own diff_workflow + migrate_workflow, as its documentation shows them."""
    now = ticket.now + timedelta(**later)
    registry = state_store._serializer()[0].registry
    top, _ = diff_workflow(registry, instance.workflow, new.spec, new.subprocess_specs)
    with frozen_at(now), instance.workflow.script_engine.bound(ticket.desk.functions()):
        migrate_workflow(top, instance.workflow, new.spec)
