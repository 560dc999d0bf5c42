"""A clock that moves one step per call, so timers never fall due in the middle of a benchmark."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class StepClock:
    def __init__(self, start: datetime | None = None, step: timedelta = timedelta(seconds=1)):
        self.now = start or datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
        self.step = step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now
