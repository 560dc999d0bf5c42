"""`lanedesk process ...`: deployed versions of a process and what runs on them."""

from __future__ import annotations

from .cli import main


@main.group("process")
def process() -> None:
    """Deployed process versions: list, show, compare, roll back, migrate running tickets."""
