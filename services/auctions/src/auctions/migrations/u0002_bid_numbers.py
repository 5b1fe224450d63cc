"""bids numbered for the clearing; per-bid results keyed by that number

Revision ID: u0002
Revises: u0001
Create Date: 2026-11-23 15:19:12.379878
"""

import sqlalchemy as sa
from alembic import op

revision = "u0002"
down_revision = "u0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the clearing reads and writes 100,000 bids at once: a bigint per bid instead of (uuid, uuid)
    op.drop_table("auction_bid_results")
    op.create_table(
        "auction_bid_results",
        sa.Column("bid_seq", sa.BigInteger(), nullable=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bid_seq"),
    )
    op.add_column("auction_bids", sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False))
    op.create_unique_constraint("auction_bids_seq_key", "auction_bids", ["seq"])


def downgrade() -> None:
    op.drop_constraint("auction_bids_seq_key", "auction_bids", type_="unique")
    op.drop_column("auction_bids", "seq")
    op.drop_table("auction_bid_results")
    op.create_table(
        "auction_bid_results",
        sa.Column("auction_id", sa.UUID(), nullable=False),
        sa.Column("bid_id", sa.UUID(), nullable=False),
        sa.Column("accepted", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("auction_id", "bid_id"),
    )
