"""SLA clocks in business time, wake leases, group leads, ticket mailbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("sla_clock", schema=None) as batch_op:
        batch_op.add_column(sa.Column("policy", sa.String(length=64), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("calendar", sa.String(length=64), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("elapsed_seconds", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("running_since", _TS, nullable=True))
        batch_op.add_column(sa.Column("breached_at", _TS, nullable=True))
        batch_op.create_index("ix_sla_clock_report", ["state", "due_at"], unique=False)
    # Clocks written by 0001 ran on wall-clock time from started_at plus paused time.
    op.execute("UPDATE sla_clock SET running_since = started_at WHERE state = 'running'")

    with op.batch_alter_table("workflow_instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("wake_claimed_until", _TS, nullable=True))
        batch_op.add_column(sa.Column("wake_failures", sa.Integer(), nullable=False, server_default="0"))

    with op.batch_alter_table("agent_group", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lead_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_agent_group_lead_id_user_account"), "user_account", ["lead_id"], ["id"]
        )

    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mailbox", sa.String(length=320), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ticket", schema=None) as batch_op:
        batch_op.drop_column("mailbox")
    with op.batch_alter_table("agent_group", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_agent_group_lead_id_user_account"), type_="foreignkey")
        batch_op.drop_column("lead_id")
    with op.batch_alter_table("workflow_instance", schema=None) as batch_op:
        batch_op.drop_column("wake_failures")
        batch_op.drop_column("wake_claimed_until")
    with op.batch_alter_table("sla_clock", schema=None) as batch_op:
        batch_op.drop_index("ix_sla_clock_report")
        for column in ("breached_at", "running_since", "elapsed_seconds", "calendar", "policy"):
            batch_op.drop_column(column)
