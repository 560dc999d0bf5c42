"""Simulating a (draft) diagram: a scenario played on a virtual clock against a throwaway desk.

A process owner describes what happens to one ticket ("P2 arrives Friday 16:30, the customer
answers after 3 hours, nobody acts") and gets the timeline the desk would record: tasks, timers,
SLA clocks, escalations and the mail it would queue, on the desk's business calendars.

Nothing here imitates the desk. :func:`simulate` copies an empty SQLite database built by the
migrations into a temporary directory, deploys the draft there (validated as `lanedesk deploy`
would), and drives the real services (``open_ticket``, ``complete_task``,
``add_customer_reply``, ``reply_as_agent``, ``change_priority``, ``wake_due_instances``) with
explicit times, firing due timers in time order between the scenario's events. The throwaway
desk has no SMTP and nothing ever delivers its outbox; the live desk's database is not opened.
The SLA configuration is the live desk's (its file, or one rewritten so that every clock uses
the scenario's calendar). Scenario syntax: docs/process-owners.md, "Simulating a draft".
"""

from __future__ import annotations

import atexit
import copy
import dataclasses
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.errors import EngineError, FormInvalid

from . import migrate, outmail, sla, tickets, users, worklist
from .app import Desk, build_desk
from .db import make_engine
from .definitions import deploy_definition
from .errors import DeskError, InvalidInput
from .models import AuditEvent, Customer, Group, HumanTask, OutboxMessage, Ticket, User
from .settings import Settings
from .templates import TemplateProblem
from .wakeups import wake_due_instances

DEFAULT_HORIZON = timedelta(days=14)
DEFAULT_REQUESTER = "customer@example.com"
#: Timer wakes one simulation may take before it is called an endless loop.
MAX_WAKES = 10_000
#: SpiffWorkflow fires a timer once its due time has *passed*; the desk's scan comes a moment later.
TICK = timedelta(seconds=1)
ACTIONS = ("customer_replies", "agent_replies", "complete", "set_priority")
_MODIFIERS = {"as": ("agent_replies", "complete", "set_priority"), "data": ("complete",)}
_TOP_KEYS = ("arrival", "priority", "calendar", "requester", "mailbox", "subject", "body", "until", "events")


class ScenarioError(InvalidInput):
    """The scenario is wrong: ``FILE:LINE: KEY: message``, or an event that cannot happen."""


class SimulationError(DeskError):
    """The simulation could not run to its end (the diagram failed during an event, or looped)."""


# -- the scenario ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """Something that happens to the ticket ``after`` its arrival, or ``at`` a time."""

    index: int
    line: int
    action: str  # one of ACTIONS
    value: str  # the reply's text, the user task's element id, or the priority
    after: timedelta | None = None
    at: datetime | None = None  # naive: in the scenario's time zone
    actor: str | None = None  # `as:`; None: the simulated lead of the group concerned
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"events[{self.index}]"


@dataclass(frozen=True)
class Scenario:
    arrival: datetime  # naive: in the scenario's time zone (see _zone)
    priority: str = "P3"
    calendar: str | None = None
    requester: str = DEFAULT_REQUESTER
    mailbox: str | None = None
    subject: str = "Simulated ticket"
    body: str = "(the customer's first message)"
    until: timedelta | datetime = DEFAULT_HORIZON
    events: tuple[Event, ...] = ()
    filename: str = "scenario.yaml"
    lines: Mapping[str, int] = field(default_factory=dict, compare=False)  # top-level key -> line

    def error(self, key: str, message: str, line: int | None = None) -> ScenarioError:
        return ScenarioError(f"{self.filename}:{line or self.lines.get(key, 1)}: {key}: {message}")


class _Map(dict[str, Any]):
    """A YAML mapping that remembers where it and each of its keys are (1-based lines)."""

    line = 1
    key_lines: dict[str, int]


class _Loader(yaml.SafeLoader):
    """Safe YAML with positions; timestamps stay text (we read time zones ourselves)."""


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    result = _Map()
    result.line, result.key_lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = str(loader.construct_object(key_node, deep=True))
        line = key_node.start_mark.line + 1
        if key in result:
            raise ScenarioError(f"{loader.name}:{line}: {key}: the key appears twice")
        result[key], result.key_lines[key] = loader.construct_object(value_node, deep=True), line
    return result


def _construct_text(loader: _Loader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_text)

_ZONE_NAME = re.compile(r"[A-Za-z][\w+-]*(?:/[\w+-]+)*")
_TIME_OF_DAY = re.compile(r"\d[T ]\d\d?:\d\d")
_DURATION = re.compile(r"(?:(\d+)\s*w)?\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m(?:in)?)?", re.I)


def parse_duration(value: object) -> timedelta:
    """``"3h"``, ``"1d 4h"``, ``"90m"``, ``"2w"`` → timedelta (calendar time); ValueError otherwise."""
    match = _DURATION.fullmatch(str(value).strip()) if isinstance(value, str) else None
    if match is None or not any(match.groups()):
        raise ValueError(f"expected a duration such as 3h, 90m, 1d 4h or 2w, got {value!r}")
    weeks, days, hours, minutes = (int(g or 0) for g in match.groups())
    return timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes)


def parse_time(value: object) -> datetime:
    """``2026-03-06T16:30 Europe/Prague``, ISO with an offset (aware), or plain ISO (naive)."""
    text = value.strip() if isinstance(value, str) else ""
    stamp, zone_name = text, ""
    head, space, tail = text.rpartition(" ")
    if space and _ZONE_NAME.fullmatch(tail):
        stamp, zone_name = head.strip(), tail
    try:
        if not _TIME_OF_DAY.search(stamp):
            raise ValueError
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        raise ValueError(
            f"expected a time such as 2026-03-06T16:30 Europe/Prague or 2026-03-06T16:30+01:00, got {value!r}"
        ) from None
    if not zone_name:
        return moment
    if moment.tzinfo is not None:
        raise ValueError(f"{value!r} has both a UTC offset and a time zone; give one of them")
    try:
        return moment.replace(tzinfo=ZoneInfo(zone_name))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone_name!r} in {value!r}") from None


def parse_scenario(text: str, filename: str = "scenario.yaml") -> Scenario:
    """Read a scenario from YAML; every mistake raises :class:`ScenarioError` with its line."""
    loader = _Loader(text)
    loader.name = filename
    try:
        root = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise ScenarioError(f"{filename}:{line}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{filename}:1: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if root is None:
        raise ScenarioError(f"{filename}:1: the scenario is empty; it needs at least `arrival:`")
    if not isinstance(root, _Map):
        raise ScenarioError(
            f"{filename}:1: expected a mapping with {', '.join(_TOP_KEYS)}; got a {type(root).__name__}"
        )
    where = _Where(filename, root)
    where.check_keys("", _TOP_KEYS)
    if "arrival" not in root:
        raise ScenarioError(f"{filename}:1: arrival: missing; when does the ticket arrive?")
    priority = where.text("priority") or Scenario.priority
    if priority not in sla.PRIORITIES:
        raise where.error("priority", f"expected one of {', '.join(sla.PRIORITIES)}, got {priority!r}")
    raw_until = root.get("until")
    scenario = Scenario(
        arrival=where.convert("arrival", parse_time),
        priority=priority,
        calendar=where.text("calendar"),
        requester=where.email("requester") or DEFAULT_REQUESTER,
        mailbox=where.email("mailbox"),
        subject=where.text("subject") or Scenario.subject,
        body=where.text("body") or Scenario.body,
        until=DEFAULT_HORIZON if raw_until is None else where.convert("until", _parse_until),
        events=tuple(_events(filename, root)),
        filename=filename,
        lines=dict(root.key_lines),
    )
    if not " ".join(scenario.subject.split()):
        raise where.error("subject", "a ticket needs a subject")
    times = [scenario.arrival, *(e.at for e in scenario.events if e.at), scenario.until]
    if len({t.tzinfo is None for t in times if isinstance(t, datetime)}) == 1:
        _plan(scenario, scenario.arrival.tzinfo or UTC)  # what can be checked before the calendar is known
    return scenario


def _parse_until(value: object) -> timedelta | datetime:
    try:
        return parse_duration(value)
    except ValueError:
        try:
            return parse_time(value)
        except ValueError:
            raise ValueError(
                f"expected a duration after the arrival (10d) or a time (2026-03-20T17:00), got {value!r}"
            ) from None


@dataclass
class _Where:
    """Reads the values of one YAML mapping, raising ScenarioError that say where."""

    filename: str
    node: _Map
    prefix: str = ""

    def error(self, key: str, message: str) -> ScenarioError:
        line = self.node.key_lines.get(key, self.node.line)
        return ScenarioError(f"{self.filename}:{line}: {self.prefix}{key}: {message}")

    def check_keys(self, what: str, known: tuple[str, ...]) -> None:
        for key in self.node:
            if key not in known:
                raise self.error(key, f"unknown key{what} (expected one of {', '.join(known)})")

    def convert(self, key: str, parse: Callable[[object], Any]) -> Any:
        try:
            return parse(self.node[key])
        except ValueError as exc:
            raise self.error(key, str(exc)) from None

    def text(self, key: str) -> str | None:
        value = self.node.get(key)
        if value is not None and (not isinstance(value, str | int | float) or isinstance(value, bool)):
            raise self.error(key, f"expected text, got {type(value).__name__}")
        return None if value is None else str(value)

    def email(self, key: str) -> str | None:
        value = self.text(key)
        try:
            return None if value is None else tickets.normalise_email(value)
        except InvalidInput as exc:
            raise self.error(key, str(exc)) from None


def _events(filename: str, root: _Map) -> Iterator[Event]:
    raw = root.get("events") or []
    if not isinstance(raw, list):
        raise _Where(filename, root).error("events", "expected a list of events (- after: 3h ...)")
    for index, item in enumerate(raw):
        if not isinstance(item, _Map):
            line = root.key_lines["events"]
            raise ScenarioError(f"{filename}:{line}: events[{index}]: expected a mapping such as `after: 3h`")
        yield _event(_Where(filename, item, f"events[{index}]."), index)


def _event(where: _Where, index: int) -> Event:
    item, label = where.node, f"events[{index}]"
    where.check_keys(" for an event", ("after", "at", *ACTIONS, *_MODIFIERS))
    actions = [key for key in ACTIONS if key in item]
    if len(actions) != 1:
        found = f"got {', '.join(actions)}" if actions else "got none"
        raise ScenarioError(
            f"{where.filename}:{item.line}: {label}: expected exactly one of {', '.join(ACTIONS)}; {found}"
        )
    action = actions[0]
    if ("after" in item) == ("at" in item):
        raise ScenarioError(f"{where.filename}:{item.line}: {label}: give either `after:` or `at:`")
    for modifier, allowed in _MODIFIERS.items():
        if modifier in item and action not in allowed:
            raise where.error(modifier, f"does not apply to {action} (only to {', '.join(allowed)})")
    value = where.text(action)
    if value is None or not value.strip():
        raise where.error(action, "needs a value (the text, the task's element id, or the priority)")
    if action == "set_priority" and value not in sla.PRIORITIES:
        raise where.error(action, f"expected one of {', '.join(sla.PRIORITIES)}, got {value!r}")
    data = item.get("data", {})
    if not isinstance(data, dict):
        raise where.error("data", "expected a mapping of form fields (data: {category: incident})")
    return Event(
        index=index,
        line=item.line,
        action=action,
        value=value.strip(),
        after=where.convert("after", parse_duration) if "after" in item else None,
        at=where.convert("at", parse_time) if "at" in item else None,
        actor=where.email("as"),
        data={str(k): v for k, v in data.items()},
    )


# -- the timeline ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One thing the desk did or recorded, at ``at`` (UTC) and ``local`` (the calendar's zone)."""

    at: datetime
    local: datetime
    kind: str
    element_id: str | None
    text: str
    actor: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "local": self.local.isoformat(),
            "kind": self.kind,
            "element_id": self.element_id,
            "actor": self.actor,
            "text": self.text,
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class Timeline:
    """What the throwaway desk recorded for the simulated ticket, in order."""

    process_id: str
    scenario: str
    timezone: str
    calendar: str  # the description of the calendar the times are shown on
    arrival: datetime
    until: datetime
    outcome: str  # completed | running | failed (the process at the end)
    status: str  # the ticket's status at the end
    open_tasks: tuple[str, ...]
    next_timer: datetime | None
    entries: tuple[Entry, ...]
    path: tuple[tuple[datetime, str], ...]  # (time, element id) of every BPMN element passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the studio shows it; ``lanedesk simulate --json`` prints it)."""
        return {
            "process_id": self.process_id,
            "scenario": self.scenario,
            "timezone": self.timezone,
            "calendar": self.calendar,
            "arrival": self.arrival.isoformat(),
            "until": self.until.isoformat(),
            "outcome": self.outcome,
            "status": self.status,
            "open_tasks": list(self.open_tasks),
            "next_timer": self.next_timer.isoformat() if self.next_timer else None,
            "entries": [entry.to_dict() for entry in self.entries],
            "path": [{"at": at.isoformat(), "element_id": element} for at, element in self.path],
        }

    def render(self) -> str:
        """Plain text, one line per entry: ``Fri 06 Mar 16:30  task opened      triage ...``."""
        lines = [f"{self.process_id} · {self.scenario} · times in {self.calendar}"]
        lines += [f"{_local(e.local)}  {e.kind.replace('_', ' '):<17}{e.text}" for e in self.entries]
        return "\n".join(lines)

    def of_kind(self, *kinds: str) -> list[Entry]:
        return [entry for entry in self.entries if entry.kind in kinds]


def _local(moment: datetime) -> str:
    return moment.strftime("%a %d %b %H:%M")


# -- running it -----------------------------------------------------------------------------------
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
    arrival, until, plan = _plan(scenario, zone)
    with _throwaway_desk(settings, scenario) as desk:
        with desk.unit_of_work() as session:
            process_id = _prepare(session, desk.settings, xml, filename, groups or {}, arrival)
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
            return _timeline(session, run, process_id, calendar, (arrival, until), skipped)


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


def _aware(moment: datetime, zone: tzinfo) -> datetime:
    return (moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)).astimezone(UTC)


def _plan(scenario: Scenario, zone: tzinfo) -> tuple[datetime, datetime, list[tuple[datetime, Event]]]:
    """Arrival, end and the events in time order (ties in the order written), all checked."""
    arrival = _aware(scenario.arrival, zone)
    until = (
        arrival + scenario.until if isinstance(scenario.until, timedelta) else _aware(scenario.until, zone)
    )
    if until <= arrival:
        raise scenario.error("until", "is not after the arrival")
    plan = []
    for event in scenario.events:
        at = arrival + event.after if event.after is not None else _aware(event.at or arrival, zone)
        key = f"{event.label}.{'after' if event.after is not None else 'at'}"
        if at < arrival:
            raise scenario.error(key, "is before the ticket arrives", event.line)
        if at > until:
            raise scenario.error(
                key,
                f"is after the end of the simulation ({_local(until.astimezone(zone))}); set `until:` later",
                event.line,
            )
        plan.append((at, event))
    return arrival, until, sorted(plan, key=lambda pair: pair[0])


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
                agent = _agent(session, event.actor, ticket.group, at)
                tickets.reply_as_agent(
                    session,
                    settings,
                    ticket_ref=ticket.number,
                    agent_email=agent.email,
                    body=event.value,
                    now=at,
                )
            elif event.action == "set_priority":
                agent = _agent(session, event.actor, ticket.group, at)
                tickets.change_priority(session, settings, ticket, event.value, user=agent, now=at)
            else:
                task = self._open_task(session, event, at)
                agent = _agent(session, event.actor, task.group, at)
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
        return _local(moment.astimezone(self.zone))


def _constant(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def _agent(session: Session, email: str | None, group: Group | None, now: datetime) -> User:
    """The acting agent (created on first use), a member of ``group``; by default its lead."""
    if email is None:
        email = _lead_address(group.slug) if group is not None else "agent@simulation.invalid"
    user = session.scalar(select(User).where(User.email == email))
    if user is None:
        groups = [group.slug] if group is not None else []
        user = users.add_user(
            session, email=email, role="agent", groups=groups, name=f"{email} (simulated)", now=now
        )
    elif group is not None and group not in user.groups:
        user.groups.append(group)
    return user


def _lead_address(slug: str) -> str:
    return f"{slug}-lead@simulation.invalid"


def _prepare(
    session: Session, settings: Settings, xml: bytes, filename: str, groups: Mapping[str, str], now: datetime
) -> str:
    """Groups (each with a simulated lead, who gets what the group would) and the draft, deployed."""
    users.ensure_default_groups(session)
    wanted = {**groups, **{slug: slug for slug in settings.lane_groups.values() if slug not in groups}}
    existing = set(session.scalars(select(Group.slug)))
    session.add_all(Group(slug=slug, name=name) for slug, name in wanted.items() if slug not in existing)
    session.flush()
    for group in session.scalars(select(Group).order_by(Group.slug)).all():
        name = f"{group.name} lead (simulated)"
        lead = _lead_address(group.slug)
        users.add_user(session, email=lead, role="agent", groups=[], lead_of=[group.slug], name=name, now=now)
    version, _ = deploy_definition(session, settings, xml=xml, filename=filename, now=now, note="simulation")
    return version.process_id


# -- the throwaway desk ---------------------------------------------------------------------------
_template_lock = threading.Lock()
_template: Path | None = None


def _template_database() -> Path:
    """An empty desk database made by the migrations, once per process (0.4 s); runs copy it (1 ms)."""
    global _template
    with _template_lock:
        if _template is None or not _template.exists():
            directory = Path(tempfile.mkdtemp(prefix="lanedesk-sim-template-"))
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            path = directory / "template.db"
            engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
            try:
                migrate.upgrade(engine)
            finally:
                engine.dispose()  # the last connection closes: the WAL is checkpointed into the file
            _template = path
        return _template


@contextmanager
def _throwaway_desk(settings: Settings, scenario: Scenario) -> Iterator[Desk]:
    """A desk on a fresh copy of the empty database in a temporary directory, removed afterwards.

    No SMTP and a key of its own (signing nothing anyone sees); the live desk's SLA calendars,
    time zone, lane mapping, mail domain and addresses.
    """
    with tempfile.TemporaryDirectory(prefix="lanedesk-sim-") as tmp:
        directory = Path(tmp)
        database = directory / "desk.db"
        shutil.copyfile(_template_database(), database)
        desk = build_desk(
            dataclasses.replace(
                settings,
                data_dir=directory,
                database_url=f"sqlite:///{database}",
                sql_echo=False,
                smtp=None,
                secret_key=secrets.token_hex(32),
                broker_url=f"sqla+sqlite:///{directory / 'broker.db'}",
                sla_config=_sla_file(settings, scenario, directory),
            )
        )
        try:
            yield desk
        finally:
            desk.engine.dispose()


def _sla_file(settings: Settings, scenario: Scenario, directory: Path) -> Path | None:
    """The live SLA file; with a scenario ``calendar``, a copy in which every clock uses that one."""
    if scenario.calendar is None:
        return settings.sla_config
    source = settings.sla_config
    data: dict[str, Any] = (
        yaml.safe_load(source.read_text(encoding="utf-8")) if source else copy.deepcopy(sla.DEFAULT_CONFIG)
    )
    for policy in data["policies"]:
        policy["calendar"] = scenario.calendar
    data["group_calendars"] = {}
    for spec in (data.get("calendars") or {}).values():
        closures = spec.get("holidays") if isinstance(spec, dict) else None
        if source is not None and isinstance(closures, dict) and closures.get("ical"):
            closures["ical"] = str(source.parent / str(closures["ical"]))  # relative to the live file
    path = directory / "sla.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


# -- reading the throwaway desk back --------------------------------------------------------------
def _timeline(
    session: Session,
    run: _Run,
    process_id: str,
    calendar: str,
    span: tuple[datetime, datetime],
    skipped: list[tuple[datetime, Event, str]],
) -> Timeline:
    ticket_id, zone = run.ticket_id, run.zone
    ticket = session.get_one(Ticket, ticket_id)
    instance = tickets.instance_of(session, ticket)
    tasks = {t.id: t for t in session.scalars(select(HumanTask).where(HumanTask.ticket_id == ticket_id))}
    mail = list(session.scalars(select(OutboxMessage).where(OutboxMessage.ticket_id == ticket_id)))
    reader = _Reader(zone, tasks, sorted(mail, key=lambda row: row.id))
    rows = session.scalars(
        select(AuditEvent).where(AuditEvent.ticket_id == ticket_id).order_by(AuditEvent.id)
    )
    entries, path = [], []
    for row in rows:
        if row.action == "step":
            path.append((row.created_at, row.element_id or ""))
        else:
            entries.append(reader.entry(row))
    for at, event, reason in skipped:
        entries.append(
            reader.make(at, "event_skipped", None, f"{event.action} {event.value}: not played, {reason}")
        )
    open_tasks = tuple(
        t.element_id for t in sorted(tasks.values(), key=lambda t: t.created_at) if t.state == "open"
    )
    running = instance.status == "running"
    if instance.status == "completed":
        entries.append(reader.make(instance.updated_at, "process_completed", None, f"{process_id} completed"))
    elif running:
        waiting = ", ".join(open_tasks) or "no task"
        timer = f"; next timer {reader.when(instance.next_wake_at)}" if instance.next_wake_at else ""
        text = f"end of the simulation: ticket {ticket.status}, waiting on {waiting}{timer}"
        entries.append(reader.make(span[1], "end", None, text))
    return Timeline(
        process_id=process_id,
        scenario=run.scenario.filename,
        timezone=str(zone.key),
        calendar=calendar,
        arrival=span[0],
        until=span[1],
        outcome=instance.status,
        status=ticket.status,
        open_tasks=open_tasks,
        next_timer=instance.next_wake_at if running else None,
        entries=tuple(sorted(entries, key=lambda entry: entry.at)),  # stable: same-time rows keep their order
        path=tuple(path),
    )


_QUOTED = re.compile(r"“(.*?)”")


@dataclass
class _Reader:
    """Turns audit rows into timeline entries, with the task and outbox rows they refer to."""

    zone: ZoneInfo
    tasks: Mapping[str, HumanTask]
    mail: list[OutboxMessage]
    dues: dict[str, datetime] = field(default_factory=dict)  # running SLA clocks -> due time

    def when(self, moment: datetime | str | None) -> str:
        if isinstance(moment, str):
            moment = datetime.fromisoformat(moment)
        return _local(moment.astimezone(self.zone)) if moment is not None else "-"

    def make(self, at: datetime, kind: str, element_id: str | None, text: str, **data: Any) -> Entry:
        return Entry(at, at.astimezone(self.zone), kind, element_id, text, data=data)

    def entry(self, row: AuditEvent) -> Entry:
        kind, text = self.describe(row)
        entry = self.make(row.created_at, kind, row.element_id, text, **(row.data or {}))
        return dataclasses.replace(entry, actor=row.actor)

    def describe(self, row: AuditEvent) -> tuple[str, str]:
        action, data = row.action, row.data or {}
        if action == "task_created":
            return "task_opened", self._task_opened(row)
        if action == "task_completed":
            values = ", ".join(f"{k}={v}" for k, v in data.items())
            return "task_completed", f"{row.element_id} by {row.actor.removeprefix('user:')}" + (
                f": {values}" if values else ""
            )
        if action == "task_cancelled":
            return "task_withdrawn", f"{row.element_id} withdrawn by the process"
        if action == "timer_fired":
            return "timer_fired", self._timer(row)
        if action.startswith("sla_"):
            return "sla", self._clock(row)
        if action in ("mail_queued", "mail_suppressed"):
            return self._mail(row)
        if action == "ticket_opened":
            return "ticket_opened", f"“{row.detail}” from {row.actor.removeprefix('customer:')}"
        if action in ("customer_replied", "agent_replied"):
            return action, f"“{row.detail[:80]}”"
        renamed = {"status_changed": "status", "priority_changed": "priority", "category_changed": "category"}
        renamed["instance_failed"] = "process_failed"
        if action.startswith("notification_"):
            return "notification", row.detail
        if action == "group_assigned":
            return "group", f"owned by {row.detail}"
        return renamed.get(action, action), row.detail

    def _task_opened(self, row: AuditEvent) -> str:
        task = self.tasks.get(row.task_id or "")
        if task is None:
            return row.detail
        text = f"{row.element_id} “{task.name}” for {task.group.slug if task.group else 'nobody'}"
        if self.dues:  # the most urgent running clock then (the task row has today's due time)
            clock, due = min(self.dues.items(), key=lambda item: item[1])
            late = " (overdue)" if due <= row.created_at else ""
            text += f" · SLA {clock.replace('_', ' ')} due {self.when(due)}{late}"
        return text

    def _timer(self, row: AuditEvent) -> str:
        data = row.data or {}
        found = _QUOTED.search(row.detail)
        name = found.group(1) if found else row.element_id or "timer"
        if data.get("clock") and data.get("percent") is not None:
            share = f"{float(data['percent']):g}% of the {data['clock']} target"
            return f"“{name}”: {share}, due {self.when(data.get('due'))}"
        return f"“{name}”, due {self.when(data.get('due'))}"

    def _clock(self, row: AuditEvent) -> str:
        data = row.data or {}
        clock = str(data.get("clock") or row.detail)
        due = data.get("due")
        if row.action in ("sla_started", "sla_resumed", "sla_retargeted") and isinstance(due, str):
            self.dues[clock] = datetime.fromisoformat(due)
            what = row.detail.partition(": due ")[0]
            return (
                f"{what}, due {self.when(due)} (policy {data.get('policy')}, calendar {data.get('calendar')})"
            )
        if row.action == "sla_target_missed":
            return f"{clock} target missed (due {self.when(self.dues.get(clock))})"
        self.dues.pop(clock, None)
        if row.action in ("sla_met", "sla_breached"):
            return f"{clock} {row.action.removeprefix('sla_')} (due {self.when(due)})"
        if row.action == "sla_stopped":
            return f"{clock} stopped"
        return row.detail

    def _mail(self, row: AuditEvent) -> tuple[str, str]:
        data = row.data or {}
        template, recipient = data.get("template"), data.get("recipient")
        match = next(
            (
                m
                for m in self.mail
                if (m.template, m.recipient, m.created_at) == (template, recipient, row.created_at)
            ),
            None,
        )
        if match is not None:
            self.mail.remove(match)
        subject = f": {match.subject}" if match is not None and match.subject else ""
        if row.action == "mail_suppressed":
            return "mail_held_back", f"{template} → {recipient}{subject} (held back: {data.get('reason')})"
        return "mail_queued", f"{template} → {recipient}{subject} (queued, not sent)"
