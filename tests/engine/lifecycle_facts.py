"""What the bundled lifecycle's scripts call, shared by the engine tests that walk it."""

from __future__ import annotations

# The desk operations by their real names, in the order workflows.operations.DeskOperations.NAMES
# lists them.
DESK_OPERATIONS = (
    *("set_status", "set_priority", "set_category", "assign_group", "escalate", "notify", "send_template"),
    *(
        "start_sla",
        "pause_sla",
        "resume_sla",
        "stop_sla",
        "close",
        "sla_due",
        "notify_lead",
        "notify_assignee",
    ),
)
ACKNOWLEDGED = [
    ("set_status", "new"),
    ("assign_group", "tier-1"),
    ("send_template", "acknowledgement"),
    ("start_sla", "first_response"),
    ("start_sla", "resolution"),
]
# Completing a work task is the agent's answer: the next-response clock stops (if it runs at all).
ANSWERED = [("stop_sla", "next_response")]
RESOLVED = [("set_status", "resolved"), ("stop_sla", "resolution"), ("send_template", "resolved")]
