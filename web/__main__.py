"""`python -m web ...` is `lanedesk ...` (how `lanedesk run` starts its processes)."""

from web.cli import main

main()
