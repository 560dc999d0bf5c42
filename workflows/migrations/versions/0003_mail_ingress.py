"""mail ingress: raw messages, attachments, ticket participants, bounces

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mail_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=True),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("mailbox", sa.String(length=320), nullable=True),
        sa.Column("envelope_from", sa.String(length=998), nullable=True),
        sa.Column("envelope_to", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("decision", sa.Text(), nullable=True),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"], name=op.f("fk_mail_message_ticket_id_ticket")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mail_message")),
        sa.UniqueConstraint("content_hash", name=op.f("uq_mail_message_content_hash")),
    )
    with op.batch_alter_table("mail_message", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_mail_message_message_id"), ["message_id"], unique=False)
        batch_op.create_index("ix_mail_message_state", ["state", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_mail_message_ticket_id"), ["ticket_id"], unique=False)

    op.create_table(
        "ticket_participant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["ticket_id"], ["ticket.id"], name=op.f("fk_ticket_participant_ticket_id_ticket")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ticket_participant")),
        sa.UniqueConstraint("ticket_id", "email", name=op.f("uq_ticket_participant_ticket_id")),
    )
    with op.batch_alter_table("ticket_participant", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ticket_participant_ticket_id"), ["ticket_id"], unique=False)

    op.create_table(
        "attachment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mail_id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["mail_id"], ["mail_message.id"], name=op.f("fk_attachment_mail_id_mail_message")
        ),
        sa.ForeignKeyConstraint(["ticket_id"], ["ticket.id"], name=op.f("fk_attachment_ticket_id_ticket")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachment")),
    )
    with op.batch_alter_table("attachment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_attachment_mail_id"), ["mail_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_attachment_ticket_id"), ["ticket_id"], unique=False)

    with op.batch_alter_table("conversation_entry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mail_id", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_conversation_entry_mail_id"), ["mail_id"], unique=False)
        batch_op.create_foreign_key(
            batch_op.f("fk_conversation_entry_mail_id_mail_message"), "mail_message", ["mail_id"], ["id"]
        )

    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bounced_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("bounce_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("customer", schema=None) as batch_op:
        batch_op.drop_column("bounce_reason")
        batch_op.drop_column("bounced_at")

    with op.batch_alter_table("conversation_entry", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_conversation_entry_mail_id_mail_message"), type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_conversation_entry_mail_id"))
        batch_op.drop_column("mail_id")

    with op.batch_alter_table("attachment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_attachment_ticket_id"))
        batch_op.drop_index(batch_op.f("ix_attachment_mail_id"))

    op.drop_table("attachment")
    with op.batch_alter_table("ticket_participant", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ticket_participant_ticket_id"))

    op.drop_table("ticket_participant")
    with op.batch_alter_table("mail_message", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_mail_message_ticket_id"))
        batch_op.drop_index("ix_mail_message_state")
        batch_op.drop_index(batch_op.f("ix_mail_message_message_id"))

    op.drop_table("mail_message")
