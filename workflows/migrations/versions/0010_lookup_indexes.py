"""Indexes that serve the per-ticket lookups whatever the planner's statistics say

A ticket's newest instance (``WHERE ticket_id = ? ORDER BY id DESC LIMIT 1``) and an instance's
open tasks (``WHERE instance_id = ? AND state = 'open'``) ran on single-column indexes. Without
fresh statistics (a new desk filling up, a large import before ANALYZE, autovacuum off)
PostgreSQL read the newest instance by walking the primary key backwards past every other
ticket's rows, and the open tasks by intersecting with the index of *all* open tasks: both grew
with the tables (0.6 -> 1.9 ms and 0.5 -> 1.7 ms per follow-up over 10,000 mails). With both
columns in one index each is a single index probe; the new indexes also serve every query the
old ones did.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_workflow_instance_ticket_newest", "workflow_instance", ["ticket_id", "id"])
    op.drop_index("ix_workflow_instance_ticket_id", table_name="workflow_instance")
    op.create_index("ix_human_task_instance_state", "human_task", ["instance_id", "state"])
    op.drop_index("ix_human_task_instance_id", table_name="human_task")


def downgrade() -> None:
    op.create_index("ix_human_task_instance_id", "human_task", ["instance_id"])
    op.drop_index("ix_human_task_instance_state", table_name="human_task")
    op.create_index("ix_workflow_instance_ticket_id", "workflow_instance", ["ticket_id"])
    op.drop_index("ix_workflow_instance_ticket_newest", table_name="workflow_instance")
