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

The package: :mod:`.scenario` reads scenarios (:mod:`.times` their times), :mod:`.desk` makes
the throwaway desk, :mod:`.run` plays a scenario on it, :mod:`.timeline` reads back what it recorded.
"""

from .run import MAX_WAKES, TICK, SimulationError, simulate
from .scenario import (
    ACTIONS,
    DEFAULT_HORIZON,
    DEFAULT_REQUESTER,
    Event,
    Scenario,
    ScenarioError,
    parse_scenario,
)
from .timeline import Entry, Timeline
from .times import parse_duration, parse_time

__all__ = [
    "ACTIONS",
    "DEFAULT_HORIZON",
    "DEFAULT_REQUESTER",
    "MAX_WAKES",
    "TICK",
    "Entry",
    "Event",
    "Scenario",
    "ScenarioError",
    "SimulationError",
    "Timeline",
    "parse_duration",
    "parse_scenario",
    "parse_time",
    "simulate",
]
