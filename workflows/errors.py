"""Domain errors. They carry no HTTP codes; web/ and the CLI map them to answers."""

from __future__ import annotations


class DeskError(Exception):
    """Base of the errors services raise on purpose, with a message fit for the user."""


class NotFound(DeskError):
    """The ticket, task, user or process named does not exist."""


class Conflict(DeskError):
    """Someone else changed the thing first (a task completed twice, a stale version)."""


class PermissionDenied(DeskError):
    """The acting user may not do this."""


class InvalidInput(DeskError):
    """The request itself is wrong (unknown role, bad JSON, ...)."""
