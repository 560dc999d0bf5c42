"""mail out: outbox delivery state, rendered messages, editable templates, languages

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auto_submitted", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("language", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("subject", sa.String(length=998), nullable=True))
        batch_op.add_column(sa.Column("sender", sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column("raw", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("server_reply", sa.Text(), nullable=True))
        batch_op.create_index("ix_outbox_message_due", ["state", "next_attempt_at"], unique=False)
        batch_op.create_index("ix_outbox_message_recipient", ["recipient", "created_at"], unique=False)
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.alter_column("attempts", server_default=None)
    # Rows queued before delivery existed are due now; those from automatic steps were automatic.
    op.execute(
        "UPDATE outbox_message SET next_attempt_at = created_at, "
        "auto_submitted = 'auto-generated' WHERE state = 'queued'"
    )

    op.create_table(
        "mail_template",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=998), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["updated_by_id"], ["user_account.id"], name=op.f("fk_mail_template_updated_by_id_user_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_template")),
        sa.UniqueConstraint("name", "language", name=op.f("uq_mail_template_name")),
    )
    for table in ("customer", "ticket"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("language", sa.String(length=16), nullable=True))
    with op.batch_alter_table("mail_message", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sender", sa.String(length=320), nullable=True))
        batch_op.create_index("ix_mail_message_sender", ["sender", "id"], unique=False)
    # Addresses are compared in lower case from now on (mail always did; the command line kept
    # the local part's case). An address whose lower-case form already exists is left as it is.
    for table in ("customer", "user_account"):
        op.execute(
            f"UPDATE {table} SET email = lower(email) WHERE email <> lower(email) "
            f"AND NOT EXISTS (SELECT 1 FROM {table} other WHERE other.email = lower({table}.email))"
        )


def downgrade() -> None:
    with op.batch_alter_table("mail_message", schema=None) as batch_op:
        batch_op.drop_index("ix_mail_message_sender")
        batch_op.drop_column("sender")
    for table in ("ticket", "customer"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("language")
    op.drop_table("mail_template")
    with op.batch_alter_table("outbox_message", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_message_recipient")
        batch_op.drop_index("ix_outbox_message_due")
        for column in (
            "server_reply",
            "last_error",
            "lease_until",
            "next_attempt_at",
            "attempts",
            "raw",
            "sender",
            "subject",
            "language",
            "auto_submitted",
        ):
            batch_op.drop_column(column)
