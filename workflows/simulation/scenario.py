"""The scenario: what happens to one simulated ticket, read from YAML with line numbers.

Syntax: docs/process-owners.md, "Simulating a draft". Every mistake is a :class:`ScenarioError`
that names the file, the line and the key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import yaml

from .. import sla, tickets
from ..errors import InvalidInput
from .times import aware, parse_duration, parse_time, short

DEFAULT_HORIZON = timedelta(days=14)
DEFAULT_REQUESTER = "customer@example.com"
ACTIONS = ("customer_replies", "agent_replies", "complete", "set_priority")
_MODIFIERS = {"as": ("agent_replies", "complete", "set_priority"), "data": ("complete",)}
_TOP_KEYS = ("arrival", "priority", "calendar", "requester", "mailbox", "subject", "body", "until", "events")


class ScenarioError(InvalidInput):
    """The scenario is wrong: ``FILE:LINE: KEY: message``, or an event that cannot happen."""


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
    arrival: datetime  # naive: in the scenario's time zone (see run._zone)
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
        schedule(scenario, scenario.arrival.tzinfo or UTC)  # what can be checked before the calendar is known
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


def schedule(scenario: Scenario, zone: tzinfo) -> tuple[datetime, datetime, list[tuple[datetime, Event]]]:
    """Arrival, end and the events in time order (ties in the order written), all checked."""
    arrival = aware(scenario.arrival, zone)
    until = arrival + scenario.until if isinstance(scenario.until, timedelta) else aware(scenario.until, zone)
    if until <= arrival:
        raise scenario.error("until", "is not after the arrival")
    plan = []
    for event in scenario.events:
        at = arrival + event.after if event.after is not None else aware(event.at or arrival, zone)
        key = f"{event.label}.{'after' if event.after is not None else 'at'}"
        if at < arrival:
            raise scenario.error(key, "is before the ticket arrives", event.line)
        if at > until:
            raise scenario.error(
                key,
                f"is after the end of the simulation ({short(until, zone)}); set `until:` later",
                event.line,
            )
        plan.append((at, event))
    return arrival, until, sorted(plan, key=lambda pair: pair[0])
