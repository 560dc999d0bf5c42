"""What the bundled lifecycle's scripts call, shared by the engine tests that walk it."""

from __future__ import annotations

DESK_OPERATIONS = (
    *("set_status", "set_priority", "set_category", "assign_group", "escalate", "notify", "send_template"),
    *("start_sla", "pause_sla", "resume_sla", "stop_sla", "close", "sla_due"),
)
ACKNOWLEDGED = [
    ("set_status", "new"),
    ("assign_group", "tier-1"),
    ("send_template", "acknowledgement"),
    ("start_sla", "first_response"),
    ("start_sla", "resolution"),
]
RESOLVED = [("set_status", "resolved"), ("stop_sla", "resolution"), ("send_template", "resolved")]
