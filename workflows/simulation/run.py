"""Running a scenario: events played and due timers fired in time order on the throwaway desk."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import EngineError, FormInvalid

from .. import outmail, sla, tickets, worklist
from ..app import Desk
from ..errors import DeskError
from ..models import Customer, HumanTask, OutboxMessage, Ticket
from ..settings import Settings
from ..templates import TemplateProblem
from ..wakeups import wake_due_instances
from .desk import acting_agent, prepare, throwaway_desk
from .scenario import Event, Scenario, ScenarioError, schedule
from .timeline import Timeline, read_timeline
from .times import short

#: Timer wakes one simulation may take before it is called an endless loop.
MAX_WAKES = 10_000
#: SpiffWorkflow fires a timer once its due time has *passed*; the desk's scan comes a moment later.
TICK = timedelta(seconds=1)


class SimulationError(DeskError):
    """The simulation could not run to its end (the diagram failed during an event, or looped)."""


def simulate(
    settings: Settings,
    xml: bytes,
    filename: str,
    scenario: Scenario,
    *,
    groups: Mapping[str, str] | None = None,
) -> Timeline:
    """Play ``scenario`` on draft ``xml`` in a throwaway desk and return what it recorded.

    ``settings`` are the live desk's: its SLA configuration, time zone, lane mapping and mail
    domain are used; its database is never opened. ``groups`` (slug → name) are the agent
    groups to create besides the default ones (the CLI passes the live desk's). Raises
    :class:`~engine.errors.DefinitionError` listing a broken draft's problems,
    :class:`ScenarioError` for a scenario that does not fit the desk or the diagram, and
    :class:`SimulationError` when the diagram fails during an event or loops on timers.
    """
    config = sla.load_sla_config(settings)
    zone, calendar = _zone(scenario, config)
    arrival, until, plan = schedule(scenario, zone)
    with throwaway_desk(settings, scenario.calendar) as desk:
        with desk.unit_of_work() as session:
            process_id = prepare(session, desk.settings, xml, filename, groups or {}, arrival)
        with desk.unit_of_work() as session:
            ticket = tickets.open_ticket(
                session,
                desk.settings,
                requester=scenario.requester,
                subject=scenario.subject,
                body=scenario.body,
                now=arrival,
                process_id=process_id,
                priority=scenario.priority,
                mailbox=scenario.mailbox,
            )
        run = _Run(desk, scenario, zone, ticket.id)
        skipped = run.play(plan, until)
        with desk.unit_of_work(readonly=True) as session:
            return read_timeline(
                session,
                ticket_id=run.ticket_id,
                zone=run.zone,
                scenario=scenario.filename,
                process_id=process_id,
                calendar=calendar,
                span=(arrival, until),
                skipped=skipped,
            )


def _zone(scenario: Scenario, config: sla.SlaConfig) -> tuple[ZoneInfo, str]:
    """The zone naive scenario times are in and the timeline is shown in: the scenario's calendar,
    else the calendar of the policy that the requester (and mailbox) select."""
    if scenario.calendar is not None:
        if scenario.calendar not in config.calendars:
            known = ", ".join(sorted(config.calendars))
            raise scenario.error(
                "calendar", f"no calendar {scenario.calendar!r} in {config.source} ({known})"
            )
        found = config.calendars[scenario.calendar]
    else:
        probe = Ticket(requester=Customer(email=scenario.requester), mailbox=scenario.mailbox)
        found = config.calendars[config.policy_for(probe).calendar]
    return found.timezone, found.describe()


@dataclass
class _Run:
    """One scenario being played on a throwaway desk (times are explicit; no clock is patched)."""

    desk: Desk
    scenario: Scenario
    zone: ZoneInfo
    ticket_id: int = 0
    wakes: int = 0

    def play(self, plan: list[tuple[datetime, Event]], until: datetime) -> list[tuple[datetime, Event, str]]:
        """Fire timers and apply events in time order; the events left when the process ended."""
        self.compose_mail()
        for index, (at, event) in enumerate(plan):
            ended = self.fire_timers(at)
            if ended is not None:
                return [(when, left, ended) for when, left in plan[index:]]
            with self.desk.unit_of_work() as session:
                self.apply(session, event, at)
            self.compose_mail()
        self.fire_timers(until)
        return []

    def fire_timers(self, limit: datetime) -> str | None:
        """Wake the instance just after each due time up to ``limit``; why it ended, or None."""
        previous: datetime | None = None
        while True:
            status, due, error = self._instance_state()
            if status != "running":
                return (
                    "the process had completed" if status == "completed" else f"the process failed: {error}"
                )
            if due is None:
                return None
            at = due + TICK if previous is None or due + TICK > previous else previous + TICK
            if at > limit:
                return None
            self.wakes += 1
            if self.wakes > MAX_WAKES:
                raise SimulationError(
                    f"the process was woken {MAX_WAKES:,} times by {self.local(at)} and still has timers "
                    "falling due: a timer cycle without end, or a timer that fires without moving on"
                )
            report = wake_due_instances(self.desk.sessions, self.desk.settings, now=_constant(at))
            if report.failed and self._instance_state()[0] == "running":
                # Not the diagram (that marks the instance failed): the desk itself could not wake it.
                raise SimulationError(f"waking the process at {self.local(at)} failed: {report.failed}")
            self.compose_mail()
            previous = at

    def compose_mail(self) -> None:
        """Render the mail the last step queued, as delivery would right after its commit (the
        subject shows the ticket as it was then); nothing sends it."""
        with self.desk.unit_of_work() as session:
            query = select(OutboxMessage).where(
                OutboxMessage.ticket_id == self.ticket_id, OutboxMessage.raw.is_(None)
            )
            for row in session.scalars(query.order_by(OutboxMessage.id)).all():
                try:
                    outmail.compose(session, self.desk.settings, row, row.created_at)
                except TemplateProblem:
                    row.subject = None  # the timeline names the template instead

    def _instance_state(self) -> tuple[str, datetime | None, str | None]:
        with self.desk.unit_of_work(readonly=True) as session:
            row = tickets.instance_of(session, session.get_one(Ticket, self.ticket_id))
            return row.status, row.next_wake_at, row.error

    def apply(self, session: Session, event: Event, at: datetime) -> None:
        """Do what ``event`` says, through the service an agent's or customer's action would use."""
        settings, ticket = self.desk.settings, session.get_one(Ticket, self.ticket_id)
        try:
            if event.action == "customer_replies":
                sender = ticket.requester.email
                tickets.add_customer_reply(
                    session, settings, ticket_ref=ticket.number, sender=sender, body=event.value, now=at
                )
            elif event.action == "agent_replies":
                agent = acting_agent(session, event.actor, ticket.group, at)
                tickets.reply_as_agent(
                    session,
                    settings,
                    ticket_ref=ticket.number,
                    agent_email=agent.email,
                    body=event.value,
                    now=at,
                )
            elif event.action == "set_priority":
                agent = acting_agent(session, event.actor, ticket.group, at)
                tickets.change_priority(session, settings, ticket, event.value, user=agent, now=at)
            else:
                task = self._open_task(session, event, at)
                agent = acting_agent(session, event.actor, task.group, at)
                data = dict(event.data)
                worklist.complete_task(session, settings, task_id=task.id, user=agent, data=data, now=at)
        except FormInvalid as exc:
            fields = "; ".join(f"{name}: {message}" for name, message in exc.errors.items())
            raise self.event_error(
                ScenarioError, event, at, f"the form refuses the data ({fields})"
            ) from None
        except ScenarioError:
            raise
        except DeskError as exc:
            raise self.event_error(ScenarioError, event, at, str(exc)) from None
        except EngineError as exc:
            raise self.event_error(SimulationError, event, at, f"the diagram failed: {exc}") from None

    def _open_task(self, session: Session, event: Event, at: datetime) -> HumanTask:
        open_tasks = worklist.list_tasks(session, ticket_id=self.ticket_id)
        for task in open_tasks:
            if task.element_id == event.value:
                return task
        waiting = ", ".join(task.element_id for task in open_tasks) or "none"
        raise self.event_error(ScenarioError, event, at, f"no open task {event.value!r} (open: {waiting})")

    def event_error(self, kind: type[DeskError], event: Event, at: datetime, message: str) -> DeskError:
        where = f"{self.scenario.filename}:{event.line}: {event.label}"
        return kind(f"{where} ({self.local(at)}, {event.action} {event.value}): {message}")

    def local(self, moment: datetime) -> str:
        return short(moment, self.zone)


def _constant(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment
