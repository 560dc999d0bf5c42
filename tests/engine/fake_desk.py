"""A recording fake of the desk operations, shared by the engine tests that walk the bundled lifecycle.

Its contract is tested once, in tests/engine/test_runtime.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .lifecycle_facts import DESK_OPERATIONS

# The desk's vocabulary, as the diagram contract states it.
STATUSES = {"new", "open", "waiting_on_customer", "escalated", "resolved", "closed"}
PRIORITIES = {"P1", "P2", "P3", "P4"}
GROUPS = {"tier-1", "tier-2", "tier-3", "engineering"}
TEMPLATES = {"acknowledgement", "reminder", "auto_closed", "resolved"}
AGENT_TEMPLATES = {"first_response_due", "sla_warning", "escalated", "assigned"}
PAUSE_STATUSES = {"waiting_on_customer"}  # the default policy's pause statuses
NEVER = datetime(9999, 1, 1, tzinfo=UTC)  # when a paused or stopped clock is due
SLA_TARGETS = {
    "first_response": timedelta(hours=8),
    "next_response": timedelta(hours=24),
    "resolution": timedelta(hours=72),
}


@dataclass
class _Clock:
    started: datetime
    paused: timedelta = timedelta(0)
    paused_at: datetime | None = None
    stopped: bool = False

    @property
    def state(self) -> str:
        return "stopped" if self.stopped else "paused" if self.paused_at is not None else "running"


class FakeDesk:
    """Stands in for the desk operations: records every call as made (in ``calls``, and also in
    ``journal`` when one is given), keeps the status and the SLA clocks, and refuses a status,
    priority, group, template or clock outside the desk's vocabulary.

    It keeps the desk's contract, in wall-clock time instead of business time:

    * ``sla_due(clock, percent)`` answers, as the real desk does, with an aware datetime: when
      ``percent`` % of the clock's target is used, plus the time the clock was paused; a paused or
      stopped clock is never due (year 9999); a clock never started is refused.
    * Clocks pause by themselves when the status becomes a pause status and resume when it
      leaves; ``start_sla`` under a pause status starts the clock paused.
    * ``stop_sla`` of a clock that is not running (or was never started) does nothing.

    Unlike the desk, it does not re-time armed ``sla_due`` timers when a clock pauses or resumes:
    a timer armed before a pause keeps the due time it was armed with.
    """

    def __init__(self, now: datetime, journal: list[Any] | None = None) -> None:
        self.now = now
        self.calls: list[tuple[Any, ...]] = []
        self.journal = journal
        self.statuses: list[str] = []
        self.clocks: dict[str, _Clock] = {}

    def functions(self) -> dict[str, Callable[..., Any]]:
        return {name: getattr(self, name) for name in DESK_OPERATIONS}

    def take(self) -> list[tuple[Any, ...]]:
        """The calls made since the last take."""
        calls, self.calls = self.calls, []
        return calls

    @property
    def status(self) -> str | None:
        return self.statuses[-1] if self.statuses else None

    def clock(self, name: str) -> str | None:
        """``running``, ``paused`` or ``stopped``; None for a clock never started."""
        found = self.clocks.get(name)
        return found.state if found else None

    def _record(self, *call: Any) -> None:
        self.calls.append(call)
        if self.journal is not None:
            self.journal.append(call)

    def _become(self, status: str) -> None:
        old = self.status
        if status == old:
            return
        self.statuses.append(status)
        if status in PAUSE_STATUSES and old not in PAUSE_STATUSES:
            for found in self.clocks.values():
                self._pause(found)
        elif old in PAUSE_STATUSES and status not in PAUSE_STATUSES:
            for found in self.clocks.values():
                self._resume(found)

    def _pause(self, found: _Clock) -> None:
        if found.state == "running":
            found.paused_at = self.now

    def _resume(self, found: _Clock) -> None:
        if found.state == "paused" and found.paused_at is not None:
            found.paused += self.now - found.paused_at
            found.paused_at = None

    def set_status(self, status: str) -> None:
        self._record("set_status", _check("status", status, STATUSES))
        self._become(status)

    def set_priority(self, priority: str) -> None:
        self._record("set_priority", _check("priority", priority, PRIORITIES))

    def set_category(self, category: str) -> None:
        self._record("set_category", category)

    def assign_group(self, group: str) -> None:
        self._record("assign_group", _check("group", group, GROUPS))

    def escalate(self, group: str, reason: str = "") -> None:
        self._record("escalate", _check("group", group, GROUPS), reason)
        self._become("escalated")

    def notify(self, group: str, template: str) -> None:
        self._record("notify", _check("group", group, GROUPS), _check("template", template, AGENT_TEMPLATES))

    def notify_lead(self, group: str, template: str) -> None:
        group, template = _check("group", group, GROUPS), _check("template", template, AGENT_TEMPLATES)
        self._record("notify_lead", group, template)

    def notify_assignee(self, template: str) -> None:
        self._record("notify_assignee", _check("template", template, AGENT_TEMPLATES))

    def send_template(self, template: str) -> None:
        self._record("send_template", _check("template", template, TEMPLATES))

    def close(self, reason: str = "") -> None:
        self._record("close", reason)
        for found in self.clocks.values():
            found.stopped, found.paused_at = True, None
        self._become("closed")

    def start_sla(self, clock: str) -> None:
        self._record("start_sla", _check("clock", clock, SLA_TARGETS))
        self.clocks[clock] = _Clock(
            started=self.now, paused_at=self.now if self.status in PAUSE_STATUSES else None
        )

    def pause_sla(self, clock: str) -> None:  # no longer called by the lifecycle; kept as the desk has it
        self._record("pause_sla", clock)
        self._pause(self._started(clock))

    def resume_sla(self, clock: str) -> None:
        self._record("resume_sla", clock)
        self._resume(self._started(clock))

    def stop_sla(self, clock: str) -> None:
        self._record("stop_sla", _check("clock", clock, SLA_TARGETS))
        found = self.clocks.get(clock)
        if found is not None:
            found.stopped, found.paused_at = True, None

    def sla_due(self, clock: str, percent: float = 100) -> datetime:
        found = self._started(clock)
        if found.state != "running":
            return NEVER
        return found.started + SLA_TARGETS[clock] * percent / 100 + found.paused

    def _started(self, clock: str) -> _Clock:
        found = self.clocks.get(_check("clock", clock, SLA_TARGETS))
        if found is None:
            raise ValueError(f"SLA clock {clock} was never started on this ticket")
        return found


def _check(kind: str, value: str, allowed: Any) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}")
    return value
