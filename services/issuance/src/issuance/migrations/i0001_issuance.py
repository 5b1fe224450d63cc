"""Issuance: periods, cap generations, issuance requests, allocation tables and lines, offset projects and
credit issuances, and the read models of accounts and system holdings.

Revision ID: i0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "i0001"
down_revision = None
branch_labels = ("issuance",)
depends_on = "c0001"

TABLES = (
    "system_holdings",
    "known_accounts",
    "offset_issuances",
    "offset_projects",
    "allocation_lines",
    "allocation_tables",
    "issuance_requests",
    "cap_generations",
    "periods",
)


def upgrade() -> None:
    op.create_table(
        "issuance_requests",
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=False),
        sa.Column("to_account_id", sa.String(length=40), nullable=False),
        sa.Column("unit_type", sa.String(length=20), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("serial_start", sa.BigInteger(), nullable=True),
        sa.Column("serial_end", sa.BigInteger(), nullable=True),
        sa.Column("code", sa.String(length=80), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index("ix_issuance_requests_parent", "issuance_requests", ["parent_id"], unique=False)
    op.create_table(
        "known_accounts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.Column("installation_id", sa.String(length=40), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "offset_projects",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=False),
        sa.Column("protocol", sa.String(length=200), nullable=False),
        sa.Column("place", sa.String(length=300), nullable=False),
        sa.Column("developer_account_id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=20), server_default="registered", nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "periods",
        sa.Column("code", sa.String(length=20), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("allocation_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reporting_opens_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reporting_closes_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("surrender_deadline_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("final", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("local_dates", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_by", sa.String(length=120), nullable=False),
        sa.Column("created_programme_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("code"),
        sa.UniqueConstraint("vintage"),
    )
    op.create_table(
        "system_holdings",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("unit_type", sa.String(length=20), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_system_holdings_account", "system_holdings", ["account_id", "unit_type", "vintage"], unique=False
    )
    op.create_table(
        "allocation_tables",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("method", sa.String(length=20), nullable=False),
        sa.Column("period_code", sa.String(length=20), nullable=True),
        sa.Column("filename", sa.String(length=255), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=30), nullable=False),
        sa.Column(
            "report", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False
        ),
        sa.Column("line_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("total", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("budget", sa.BigInteger(), nullable=True),
        sa.Column("national_hundredths", sa.BigInteger(), nullable=True),
        sa.Column("eligible_hundredths", sa.BigInteger(), nullable=True),
        sa.Column("remainder", sa.BigInteger(), nullable=True),
        sa.Column("source_account_id", sa.String(length=40), nullable=False),
        sa.Column("approval_id", sa.Uuid(), nullable=True),
        sa.Column("uploaded_by", sa.String(length=120), nullable=False),
        sa.Column("uploaded_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("approved_by", sa.String(length=120), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_trigger", sa.String(length=160), nullable=True),
        sa.Column("run_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["period_code"],
            ["periods.code"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_allocation_tables_state", "allocation_tables", ["state"], unique=False)
    op.create_table(
        "cap_generations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("period_code", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("cap", sa.BigInteger(), nullable=False),
        sa.Column("reserves", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("approval_id", sa.Uuid(), nullable=True),
        sa.Column("requested_by", sa.String(length=120), nullable=False),
        sa.Column("approved_by", sa.String(length=120), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["period_code"],
            ["periods.code"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "uq_cap_generation_initial",
        "cap_generations",
        ["period_code"],
        unique=True,
        postgresql_where=sa.text("kind = 'initial' AND state IN ('issuing', 'generated')"),
    )
    op.create_table(
        "offset_issuances",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("project_id", sa.String(length=40), nullable=False),
        sa.Column("vintage", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("verification_reference", sa.String(length=200), nullable=False),
        sa.Column("to_account_id", sa.String(length=40), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("approval_id", sa.Uuid(), nullable=True),
        sa.Column("request_id", sa.Uuid(), nullable=False),
        sa.Column("requested_by", sa.String(length=120), nullable=False),
        sa.Column("approved_by", sa.String(length=120), nullable=True),
        sa.Column("serial_start", sa.BigInteger(), nullable=True),
        sa.Column("serial_end", sa.BigInteger(), nullable=True),
        sa.Column("code", sa.String(length=80), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["offset_projects.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id"),
    )
    op.create_table(
        "allocation_lines",
        sa.Column("table_id", sa.Uuid(), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("sheet", sa.String(length=100), nullable=False),
        sa.Column("row_number", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.BigInteger(), nullable=False),
        sa.Column("consumption_hundredths", sa.BigInteger(), nullable=True),
        sa.Column("eligible", sa.Boolean(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("movement_id", sa.Uuid(), nullable=False),
        sa.Column("batch_id", sa.Uuid(), nullable=True),
        sa.Column("code", sa.String(length=80), nullable=True),
        sa.Column("withheld_by", sa.String(length=120), nullable=True),
        sa.Column("withheld_reason", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["table_id"],
            ["allocation_tables.id"],
        ),
        sa.PrimaryKeyConstraint("table_id", "account_id"),
        sa.UniqueConstraint("movement_id"),
    )
    op.create_index("ix_allocation_lines_state", "allocation_lines", ["table_id", "state"], unique=False)


def downgrade() -> None:
    for table in TABLES:
        op.drop_table(table)
