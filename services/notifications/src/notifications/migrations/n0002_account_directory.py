"""Notifications' account read model takes the shared AccountDirectory's shape: the holder's id and name
(nullable, filled by the next AccountOpened) and the installation index. Existing rows are kept.

Revision ID: n0002
Revises: n0001
Create Date: 2026-11-23 19:07:15.250993
"""

import sqlalchemy as sa
from alembic import op

revision = "n0002"
down_revision = "n0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("known_accounts", sa.Column("holder_id", sa.Uuid(), nullable=True))
    op.add_column("known_accounts", sa.Column("holder_name", sa.String(length=300), nullable=True))
    op.create_index("ix_known_accounts_installation", "known_accounts", ["installation_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_known_accounts_installation", table_name="known_accounts")
    op.drop_column("known_accounts", "holder_name")
    op.drop_column("known_accounts", "holder_id")
