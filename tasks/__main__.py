"""`python -m tasks ...` is `lanedesk ...` (how `lanedesk run` starts its worker and beat)."""

from tasks.cli import main

main()
