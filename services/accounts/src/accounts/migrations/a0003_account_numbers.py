"""Readable account numbers: one sequence per kind of request (an installation's central and delivery
accounts share one number: CEN-000001 and ENT-000001).

Revision ID: a0003
Revises: a0002
Create Date: 2026-11-23
"""

from alembic import op

revision = "a0003"
down_revision = "a0002"
branch_labels = None
depends_on = None

SEQUENCES = ("account_number_installation", "account_number_trading", "account_number_verifier")


def upgrade() -> None:
    for name in SEQUENCES:
        op.execute(f"CREATE SEQUENCE IF NOT EXISTS {name} AS bigint START WITH 1 MINVALUE 1 NO CYCLE")


def downgrade() -> None:
    for name in SEQUENCES:
        op.execute(f"DROP SEQUENCE IF EXISTS {name}")
