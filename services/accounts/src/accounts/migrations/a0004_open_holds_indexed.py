"""Open holds indexed by sender and receiver (holdings read them on every pre-check).

Revision ID: a0004
Revises: a0003
Create Date: 2026-11-23 18:11:00.765771
"""

import sqlalchemy as sa
from alembic import op

revision = "a0004"
down_revision = "a0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_holds_open_sender", "holds", ["sender_account_id"], postgresql_where=sa.text("state = 'held'"))
    op.create_index("ix_holds_open_receiver", "holds", ["receiver_account_id"],
                    postgresql_where=sa.text("state = 'held'"))


def downgrade() -> None:
    op.drop_index("ix_holds_open_receiver", table_name="holds")
    op.drop_index("ix_holds_open_sender", table_name="holds")
