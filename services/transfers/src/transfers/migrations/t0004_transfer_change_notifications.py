"""Every committed change of a transfer is told on the ``transfer_changed`` channel (its id and version), so a
``GET /api/v1/transfers/{id}`` with ``Prefer: wait`` answers as soon as the transfer changes.

Revision ID: t0004
Revises: t0003
Create Date: 2026-12-07 15:20:00.000000
"""

from alembic import op

from registry_common.migrations.helpers import notify_on_update

revision = "t0004"
down_revision = "t0003"
branch_labels = None
depends_on = None

CHANNEL = "transfer_changed"


def upgrade() -> None:
    notify_on_update("transfers", CHANNEL)


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS notify_transfers_changed ON transfers")
    op.execute("DROP FUNCTION IF EXISTS notify_transfers_changed()")
