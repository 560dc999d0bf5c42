"""the inbox picks its page from human_task alone: the SLA due time on the task, partial indexes

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OPEN = sa.text("state = 'open'")


def upgrade() -> None:
    with op.batch_alter_table("human_task", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sla_due_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE human_task SET sla_due_at = (SELECT ticket.sla_due_at FROM ticket "
        "WHERE ticket.id = human_task.ticket_id) WHERE state = 'open'"
    )
    op.create_index(
        "ix_human_task_open_due",
        "human_task",
        ["sla_due_at", "created_at"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
        postgresql_include=["group_id", "assignee_id"],
    )
    op.create_index(
        "ix_human_task_open_group",
        "human_task",
        ["group_id", "assignee_id"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
        postgresql_include=["sla_due_at", "created_at"],
    )
    op.create_index(
        "ix_human_task_open_assignee",
        "human_task",
        ["assignee_id", "sla_due_at", "created_at"],
        postgresql_where=OPEN,
        sqlite_where=OPEN,
    )


def downgrade() -> None:
    for name in ("ix_human_task_open_assignee", "ix_human_task_open_group", "ix_human_task_open_due"):
        op.drop_index(name, table_name="human_task")
    with op.batch_alter_table("human_task", schema=None) as batch_op:
        batch_op.drop_column("sla_due_at")
