"""intermediate years: a report's calendar year, intermediate-year evaluations (California's rule)

Existing reports are for their period's last (an annual period's only) year, in the programme's time zone;
existing evaluations are final ones, due at their period's surrender deadline.

Revision ID: k0004
Revises: k0003
Create Date: 2026-11-23 18:02:25.658121
"""

import sqlalchemy as sa
from alembic import op

revision = "k0004"
down_revision = "k0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("emission_reports", sa.Column("year", sa.Integer(), nullable=True))
    op.execute(
        "UPDATE emission_reports r SET year = extract(year FROM p.ends_at AT TIME ZONE p.timezone)::int "
        "FROM known_periods p WHERE p.period = r.period"
    )
    op.alter_column("emission_reports", "year", nullable=False)
    op.drop_constraint(op.f("uq_emission_reports_version"), "emission_reports", type_="unique")
    op.create_unique_constraint(
        "uq_emission_reports_version", "emission_reports", ["installation_account_id", "period", "year", "version"]
    )
    op.add_column("evaluations", sa.Column("intermediate_year", sa.Integer(), nullable=True))
    op.add_column("evaluations", sa.Column("deadline_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE evaluations e SET deadline_at = p.surrender_deadline_at FROM known_periods p WHERE p.period = e.period"
    )
    op.drop_constraint(op.f("evaluations_period_key"), "evaluations", type_="unique")
    op.create_index(
        "uq_evaluations_period_year",
        "evaluations",
        ["period", sa.literal_column("coalesce(intermediate_year, 0)")],
        unique=True,
    )
    op.add_column("installation_results", sa.Column("credited", sa.BigInteger(), server_default="0", nullable=False))


def downgrade() -> None:
    op.drop_column("installation_results", "credited")
    op.drop_index("uq_evaluations_period_year", table_name="evaluations")
    op.create_unique_constraint(
        op.f("evaluations_period_key"), "evaluations", ["period"], postgresql_nulls_not_distinct=False
    )
    op.drop_column("evaluations", "deadline_at")
    op.drop_column("evaluations", "intermediate_year")
    op.drop_constraint("uq_emission_reports_version", "emission_reports", type_="unique")
    op.create_unique_constraint(
        op.f("uq_emission_reports_version"),
        "emission_reports",
        ["installation_account_id", "period", "version"],
        postgresql_nulls_not_distinct=False,
    )
    op.drop_column("emission_reports", "year")
