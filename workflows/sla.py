"""SLA policies and clocks: which targets and which business calendar apply to a ticket.

Operators describe calendars and policies in one YAML file (``LANEDESK_SLA_CONFIG``, see
docs/operators.md and docs/sla.example.yaml). Without one the desk uses :data:`DEFAULT_CONFIG`:
round-the-clock targets, as Zendesk does until business hours are set up.

A clock is a row (:class:`~workflows.models.SlaClock`). Its due time is computed on its
calendar from the business time still left, so pausing gives the paused time back and a new
target (a priority change) applies to what is left. Timers in a diagram read due times through
the desk function ``sla_due(clock, percent=100)``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from .calendars import ALWAYS_OPEN, BusinessCalendar, calendar_from_spec
from .models import SlaClock, Ticket
from .settings import Settings

CLOCKS = ("first_response", "next_response", "resolution")
PRIORITIES = ("P1", "P2", "P3", "P4")
#: The due time of a timer whose clock is paused or stopped: it waits until the clock runs again.
NEVER = datetime(9999, 1, 1, tzinfo=UTC)

DEFAULT_CONFIG: dict[str, Any] = {
    "policies": [
        {
            "name": "standard",
            "calendar": "24x7",
            "pause_on": ["waiting_on_customer"],
            "targets": {
                "first_response": {"P1": "1h", "P2": "4h", "P3": "8h", "P4": "24h"},
                "next_response": {"P1": "2h", "P2": "8h", "P3": "24h", "P4": "48h"},
                "resolution": {"P1": "8h", "P2": "24h", "P3": "72h", "P4": "120h"},
            },
        }
    ],
}

_DURATION = re.compile(r"(?:(\d+)h)?\s*(?:(\d+)m)?", re.IGNORECASE)
_ISO_DURATION = re.compile(r"PT(?:(\d+)H)?(?:(\d+)M)?", re.IGNORECASE)


class SlaConfigError(ValueError):
    """The SLA configuration cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Policy:
    name: str
    calendar: str
    targets: Mapping[str, Mapping[str, int]]  # clock -> priority -> business seconds
    pause_on: frozenset[str]
    organisations: frozenset[str]  # requester e-mail domains; empty: any
    mailboxes: frozenset[str]  # addresses the ticket came in through; empty: any

    def matches(self, ticket: Ticket) -> bool:
        domain = ticket.requester.email.rpartition("@")[2].lower()
        if self.organisations and domain not in self.organisations:
            return False
        return not self.mailboxes or (ticket.mailbox or "").lower() in self.mailboxes

    def target(self, clock: str, priority: str) -> int:
        return self.targets[clock][priority]


@dataclass(frozen=True)
class SlaConfig:
    source: str
    calendars: Mapping[str, BusinessCalendar]
    policies: tuple[Policy, ...]
    group_calendars: Mapping[str, str]

    def policy_for(self, ticket: Ticket) -> Policy:
        """The first policy whose match fits the ticket (the last one matches everything)."""
        return next((p for p in self.policies if p.matches(ticket)), self.policies[-1])

    def calendar_for(self, ticket: Ticket, policy: Policy) -> BusinessCalendar:
        """The owning group's calendar where one is set, else the policy's."""
        group = ticket.group.slug if ticket.group is not None else None
        name = self.group_calendars.get(group or "", policy.calendar)
        return self.calendars[name]

    def calendar(self, name: str, fallback: str) -> BusinessCalendar:
        """Calendar ``name`` of a stored clock; ``fallback`` if it was removed from the file."""
        return self.calendars.get(name) or self.calendars[fallback]


def load_sla_config(settings: Settings) -> SlaConfig:
    """The configuration ``settings`` point at (re-read when the file changes)."""
    path = settings.sla_config
    if path is None:
        return _cached(None, 0.0, settings.timezone)
    try:
        stamp = path.stat().st_mtime
    except OSError as exc:
        raise SlaConfigError(f"LANEDESK_SLA_CONFIG: cannot read {str(path)!r}: {exc.strerror}") from None
    return _cached(path, stamp, settings.timezone)


@lru_cache(maxsize=8)
def _cached(path: Path | None, stamp: float, timezone: str) -> SlaConfig:
    if path is None:
        return parse_sla_config(DEFAULT_CONFIG, source="built-in defaults", desk_timezone=timezone)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SlaConfigError(f"{path}: not a readable YAML file: {exc}") from None
    return parse_sla_config(data, source=str(path), desk_timezone=timezone, base_dir=path.parent)


def parse_sla_config(
    data: object, *, source: str, desk_timezone: str, base_dir: Path | None = None
) -> SlaConfig:
    """Check and build a configuration; every problem raises :class:`SlaConfigError`."""
    root = _mapping(source, "the file", data, {"calendars", "policies", "group_calendars"})
    calendars: dict[str, BusinessCalendar] = {ALWAYS_OPEN.name: ALWAYS_OPEN}
    for name, spec in _mapping(source, "calendars", root.get("calendars") or {}).items():
        spec = {"timezone": desk_timezone, **_mapping(source, f"calendars.{name}", spec)}
        try:
            calendars[str(name)] = calendar_from_spec(str(name), spec, base_dir=base_dir)
        except ValueError as exc:
            raise SlaConfigError(f"{source}: calendars.{name}: {exc}") from None
    raw_policies = root.get("policies")
    if not isinstance(raw_policies, list) or not raw_policies:
        raise SlaConfigError(f"{source}: policies: expected a non-empty list of policies")
    policies = tuple(_policy(source, i, raw, calendars) for i, raw in enumerate(raw_policies))
    if policies[-1].organisations or policies[-1].mailboxes:
        raise SlaConfigError(f"{source}: the last policy ({policies[-1].name}) must match every ticket")
    groups = {
        str(k): str(v)
        for k, v in _mapping(source, "group_calendars", root.get("group_calendars") or {}).items()
    }
    for group, name in groups.items():
        if name not in calendars:
            raise SlaConfigError(f"{source}: group_calendars.{group}: no calendar {name!r}")
    return SlaConfig(source, calendars, policies, groups)


def _policy(source: str, index: int, raw: object, calendars: Mapping[str, BusinessCalendar]) -> Policy:
    keys = {"name", "calendar", "targets", "pause_on", "match"}
    spec = _mapping(source, f"policies[{index}]", raw, keys)
    name = str(spec.get("name") or f"policy {index + 1}")
    where = f"policies.{name}"
    calendar = str(spec.get("calendar") or ALWAYS_OPEN.name)
    if calendar not in calendars:
        raise SlaConfigError(f"{source}: {where}.calendar: no calendar {calendar!r}")
    targets: dict[str, dict[str, int]] = {}
    raw_targets = _mapping(source, f"{where}.targets", spec.get("targets"), set(CLOCKS))
    for clock in CLOCKS:
        per_priority = _mapping(source, f"{where}.targets.{clock}", raw_targets.get(clock), set(PRIORITIES))
        missing = [p for p in PRIORITIES if p not in per_priority]
        if missing:
            raise SlaConfigError(f"{source}: {where}.targets.{clock}: no target for {', '.join(missing)}")
        targets[clock] = {
            p: _seconds(source, f"{where}.targets.{clock}.{p}", per_priority[p]) for p in PRIORITIES
        }
    match = _mapping(source, f"{where}.match", spec.get("match") or {}, {"organisation", "mailbox"})
    pause_on = spec.get("pause_on", ["waiting_on_customer"])
    if not isinstance(pause_on, list) or not all(isinstance(s, str) for s in pause_on):
        raise SlaConfigError(f"{source}: {where}.pause_on: expected a list of statuses")
    return Policy(
        name=name,
        calendar=calendar,
        targets=targets,
        pause_on=frozenset(pause_on),
        organisations=_names(match.get("organisation")),
        mailboxes=_names(match.get("mailbox")),
    )


def _mapping(source: str, where: str, value: object, keys: set[str] | None = None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SlaConfigError(f"{source}: {where}: expected a mapping, got {type(value).__name__}")
    unknown = sorted(str(k) for k in value if keys is not None and k not in keys)
    if unknown:
        raise SlaConfigError(
            f"{source}: {where}: unknown key {unknown[0]!r} (expected {', '.join(sorted(keys or ()))})"
        )
    return value


def _names(value: object) -> frozenset[str]:
    items: list[object] = (
        [value] if isinstance(value, str) else list(value) if isinstance(value, list) else []
    )
    return frozenset(str(v).lower() for v in items)


def _seconds(source: str, where: str, value: object) -> int:
    """ "4h", "90m", "1h30m" or ISO "PT4H" → seconds of business time (days are ambiguous)."""
    text = str(value).strip()
    match = _DURATION.fullmatch(text) or _ISO_DURATION.fullmatch(text)
    if not text or match is None or not any(match.groups()):
        raise SlaConfigError(
            f"{source}: {where}: expected a duration such as 4h, 90m or 1h30m, got {value!r} "
            "(days are not accepted: write 8h for one business day of eight hours)"
        )
    hours, minutes = (int(g or 0) for g in match.groups())
    if hours * 60 + minutes == 0:
        raise SlaConfigError(f"{source}: {where}: a target must be longer than zero")
    return (hours * 60 + minutes) * 60


# -- clock arithmetic -------------------------------------------------------------------
def start(row: SlaClock, *, policy: Policy, calendar: BusinessCalendar, target: int, now: datetime) -> None:
    row.state, row.policy, row.calendar = "running", policy.name, calendar.name
    row.target_seconds, row.elapsed_seconds, row.running_since = target, 0, now
    row.started_at, row.paused_at, row.paused_seconds = now, None, 0
    row.stopped_at, row.breached_at = None, None
    row.due_at = due(row, calendar)


def pause(row: SlaClock, calendar: BusinessCalendar, now: datetime) -> bool:
    if row.state != "running" or row.running_since is None:
        return False
    row.elapsed_seconds += calendar.seconds_between(row.running_since, now)
    row.state, row.paused_at, row.running_since, row.due_at = "paused", now, None, None
    return True


def resume(row: SlaClock, calendar: BusinessCalendar, now: datetime) -> bool:
    if row.state != "paused":
        return False
    if row.paused_at is not None:
        row.paused_seconds += int((now - row.paused_at).total_seconds())
    row.state, row.paused_at, row.running_since = "running", None, now
    row.due_at = due(row, calendar)
    return True


def retarget(row: SlaClock, calendar: BusinessCalendar, target: int) -> None:
    """A new target (the priority changed): elapsed business time is kept, paused time too."""
    row.target_seconds = target
    if row.state == "running":
        row.due_at = due(row, calendar)


def stop(row: SlaClock, now: datetime) -> str:
    """Stop a running or paused clock: *met* if stopped in time, else *breached*."""
    late = row.breached_at is not None or (row.due_at is not None and now > row.due_at)
    row.state, row.stopped_at = ("breached" if late else "met"), now
    if late and row.breached_at is None:
        row.breached_at = row.due_at
    row.due_at = None
    return row.state


def elapsed(row: SlaClock, calendar: BusinessCalendar, now: datetime) -> int:
    """Business seconds the clock has used up to ``now``."""
    if row.state == "running" and row.running_since is not None:
        return row.elapsed_seconds + calendar.seconds_between(row.running_since, now)
    return row.elapsed_seconds


def due(row: SlaClock, calendar: BusinessCalendar, percent: float = 100) -> datetime:
    """When ``percent`` of the clock's target is used up; :data:`NEVER` unless it runs."""
    if row.state != "running" or row.running_since is None:
        return NEVER
    left = row.target_seconds * percent / 100 - row.elapsed_seconds
    return calendar.add(row.running_since, max(left, 0.0))
