"""Chassis tables: outbox, inbox, retries, dead letters, audit log, approvals, idempotency keys, clock.

Revision ID: c0001
Revises:
Create Date: 2026-11-23

This revision creates the chassis tables as declared in ``registry_common.tables`` at this revision;
any later change to that module comes with a new revision of the ``chassis`` branch.
"""

from alembic import op

from registry_common.migrations.helpers import make_append_only, notify_on_insert
from registry_common.tables import APPEND_ONLY_TABLES, chassis_metadata

revision = "c0001"
down_revision = None
branch_labels = ("chassis",)
depends_on = None


def upgrade() -> None:
    chassis_metadata.create_all(op.get_bind())
    for table in APPEND_ONLY_TABLES:
        make_append_only(table)
    notify_on_insert("outbox", "registry_outbox")
    notify_on_insert("consumer_retries", "registry_retries")


def downgrade() -> None:
    chassis_metadata.drop_all(op.get_bind())
