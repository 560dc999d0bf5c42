"""The one beat schedule. Run exactly one `lanedesk beat` per desk (Celery's rule)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from workflows.settings import Settings

#: How often stored mail whose processing task was lost is queued again.
MAIL_SWEEP_EVERY = timedelta(seconds=30)
#: How often delivered messages are deleted from the embedded (SQLite) broker.
BROKER_PURGE_EVERY = timedelta(minutes=1)


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Periodic tasks: the timer scan every few seconds (and broker upkeep when embedded).

    Timers themselves are rows (``workflow_instance.next_wake_at``), never ETA tasks: a scan
    that is late or lost only delays them, and the next scan finds everything due.
    """
    every = float(settings.timer_scan_seconds)
    schedule: dict[str, dict[str, Any]] = {
        "scan-due-timers": {
            "task": "lanedesk.scan_due_timers",
            "schedule": every,
            # A scan not started before the next is due is dropped, not queued up behind it.
            "options": {"expires": every},
        },
    }
    schedule["sweep-outbox"] = {
        "task": "lanedesk.sweep_outbox",
        "schedule": every,
        "options": {"expires": every},
    }
    schedule["sweep-mail"] = {
        "task": "lanedesk.sweep_mail",
        "schedule": MAIL_SWEEP_EVERY.total_seconds(),
        "options": {"expires": MAIL_SWEEP_EVERY.total_seconds()},
    }
    if settings.embedded_broker:
        schedule["purge-broker"] = {
            "task": "lanedesk.purge_broker",
            "schedule": BROKER_PURGE_EVERY.total_seconds(),
            "options": {"expires": BROKER_PURGE_EVERY.total_seconds()},
        }
    return schedule
