"""Transfers' account read model takes the shared AccountDirectory's shape (name, holder; the installation
index), and ``sender_approval_required`` moves to transfers' own ``account_transfer_settings`` (one row per
account that had it set; no row = false). Existing rows are kept: columns are added, data is copied.

Revision ID: t0003
Revises: t0002
Create Date: 2026-11-23 19:02:46.999363
"""

import sqlalchemy as sa
from alembic import op

revision = "t0003"
down_revision = "t0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_transfer_settings",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("sender_approval_required", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )
    op.execute(
        "INSERT INTO account_transfer_settings (account_id, sender_approval_required) "
        "SELECT account_id, true FROM known_accounts WHERE sender_approval_required"
    )
    op.drop_column("known_accounts", "sender_approval_required")
    op.add_column("known_accounts", sa.Column("name", sa.String(length=300), server_default="", nullable=False))
    op.add_column("known_accounts", sa.Column("holder_id", sa.Uuid(), nullable=True))
    op.add_column("known_accounts", sa.Column("holder_name", sa.String(length=300), nullable=True))
    op.create_index("ix_known_accounts_installation", "known_accounts", ["installation_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_known_accounts_installation", table_name="known_accounts")
    op.drop_column("known_accounts", "holder_name")
    op.drop_column("known_accounts", "holder_id")
    op.drop_column("known_accounts", "name")
    op.add_column(
        "known_accounts",
        sa.Column("sender_approval_required", sa.Boolean(), server_default="false", nullable=False),
    )
    op.execute(
        "UPDATE known_accounts k SET sender_approval_required = s.sender_approval_required "
        "FROM account_transfer_settings s WHERE s.account_id = k.account_id"
    )
    op.drop_table("account_transfer_settings")
