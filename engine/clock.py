"""One injectable clock for the desk and for SpiffWorkflow's timers.

SpiffWorkflow 3.2.0 has no clock API: its timer module calls ``datetime.now(timezone.utc)``
directly. We replace that module's ``datetime`` name with a subclass whose ``now()`` reads the
clock bound for the current engine call (a context variable), falling back to the real time.
Every engine operation takes ``now`` and runs under :func:`frozen_at`, so a step is
deterministic and tests or simulations can drive timers without sleeping.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, tzinfo
from typing import Any

import SpiffWorkflow.bpmn.specs.event_definitions.timer as _spiff_timer

_current: contextvars.ContextVar[datetime | None] = contextvars.ContextVar("lanedesk_now", default=None)

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The real time, aware, in UTC."""
    return datetime.now(UTC)


def ensure_aware(moment: datetime) -> datetime:
    """Refuse naive datetimes: a naive time is read in the server's zone by SpiffWorkflow (§3)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()} given where an aware one is required")
    return moment


class ClockDatetime(datetime):
    """``datetime`` whose ``now()``, ``today()`` and ``utcnow()`` honour the engine call's bound time.

    Every value it makes is a plain ``datetime`` (``__new__`` returns one), so nothing of this
    class ever reaches task data or the serializer, which maps exact classes.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> datetime:  # type: ignore[misc]
        return datetime(*args, **kwargs)

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
        bound = _current.get()
        if bound is None:
            return datetime.now(tz)
        return bound.astimezone(tz) if tz is not None else bound.astimezone().replace(tzinfo=None)

    @classmethod
    def today(cls) -> datetime:  # type: ignore[override]
        """As ``datetime.today()``: the same as ``now()``, naive, in the server's zone."""
        return cls.now()

    @classmethod
    def utcnow(cls) -> datetime:  # type: ignore[override]
        """As ``datetime.utcnow()``: the bound time in UTC, naive. Prefer ``now(timezone.utc)``."""
        return cls.now(UTC).replace(tzinfo=None)


@contextmanager
def frozen_at(moment: datetime) -> Iterator[datetime]:
    """Make ``moment`` the engine's "now" (for SpiffWorkflow's timers too) inside the block."""
    token = _current.set(ensure_aware(moment))
    try:
        yield moment
    finally:
        _current.reset(token)


def engine_now() -> datetime:
    """The bound time of the current engine call, or the real time outside one."""
    return _current.get() or system_clock()


def _install() -> None:
    _spiff_timer.datetime = ClockDatetime


_install()
