"""Compliance's tables: emission reports (every version kept), surrenders, what each delivery account
holds (a read model from the ledger's events), evaluations with a result row per installation, the
ledger batches an evaluation sent, adjustments after corrections, obligations carried to the next
period; and the account directory and programme calendar read models."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

from registry_common.read_models import AccountDirectory, ProgrammeCalendar

metadata = MetaData()
directory = AccountDirectory(metadata)
calendar = ProgrammeCalendar(metadata)

emission_reports = Table(
    "emission_reports",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("installation_account_id", String(40), nullable=False),  # the installation's central account
    Column("period", String(20), nullable=False),
    Column("year", Integer, nullable=False),  # the calendar year reported (an annual period's only year)
    Column("version", Integer, nullable=False),  # per installation, period and year
    Column("emissions", BigInteger, nullable=False),  # whole tCO2e
    Column("rene_reference", String(120), nullable=False),  # its report in the national register (RENE)
    Column("verifier_account_id", String(40)),  # the accredited verification body named
    Column("state", String(20), nullable=False),  # submitted | attested | returned
    Column("submitted_by", String(120), nullable=False),
    Column("submitted_at", DateTime(timezone=True), nullable=False),  # programme time
    Column("decided_by", String(120)),
    Column("decided_at", DateTime(timezone=True)),
    Column("comments", Text),
    Column("correction_reason", Text),  # an authority's correction after the window
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("emissions >= 0", name="emission_reports_emissions_not_negative"),
    CheckConstraint("state IN ('submitted', 'attested', 'returned')", name="emission_reports_state"),
    UniqueConstraint("installation_account_id", "period", "year", "version", name="uq_emission_reports_version"),
    Index("ix_emission_reports_verifier", "verifier_account_id", "state"),
)

surrenders = Table(
    "surrenders",
    metadata,
    Column("id", Uuid, primary_key=True),  # also the ledger movement id
    Column("period", String(20), nullable=False),
    Column("central_account_id", String(40), nullable=False),
    Column("delivery_account_id", String(40), nullable=False),
    Column("unit_type", String(20), nullable=False),
    Column("vintage", Integer),
    Column("quantity", BigInteger, nullable=False),
    Column("state", String(20), nullable=False),  # requested | completed | refused
    Column("code", String(80)),
    Column("blocks", JSONB),
    Column("requested_by", String(120), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),  # programme time
    Column("decided_at", DateTime(timezone=True)),
    CheckConstraint("quantity > 0", name="surrenders_quantity_positive"),
    CheckConstraint("state IN ('requested', 'completed', 'refused')", name="surrenders_state"),
    Index("ix_surrenders_account", "central_account_id", "requested_at"),
    Index("ix_surrenders_pending", "state", postgresql_where=text("state = 'requested'")),
)

delivery_holdings = Table(
    "delivery_holdings",
    metadata,
    Column("account_id", String(40), primary_key=True),
    Column("unit_type", String(20), primary_key=True),
    Column("vintage", Integer, primary_key=True),
    Column("quantity", BigInteger, nullable=False),
)

evaluations = Table(
    "evaluations",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("period", String(20), nullable=False),
    # None: the period's (final) evaluation; a year: that intermediate year's. One each: re-runs answer it.
    Column("intermediate_year", Integer),
    Column("deadline_at", DateTime(timezone=True)),  # the surrender deadline evaluated (evaluations run in order)
    Column("state", String(20), nullable=False),  # pending | cancelling | completed
    Column("trigger", String(20), nullable=False),  # deadline | command
    Column("requested_by", String(120), nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),  # programme time
    Column("evaluated_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    Column("announced_at", DateTime(timezone=True)),  # results and cancellations told (events written)
    Column("installations", Integer, nullable=False, server_default="0"),
    Column("compliant", Integer, nullable=False, server_default="0"),
    Column("non_compliant", Integer, nullable=False, server_default="0"),
    Column("cancelled_units", BigInteger, nullable=False, server_default="0"),
    Column("returned_units", BigInteger, nullable=False, server_default="0"),
    Column("rules", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    CheckConstraint("state IN ('pending', 'cancelling', 'completed')", name="evaluations_state"),
    Index("uq_evaluations_period_year", "period", text("coalesce(intermediate_year, 0)"), unique=True),
)

installation_results = Table(
    "installation_results",
    metadata,
    Column("evaluation_id", Uuid, ForeignKey("evaluations.id"), primary_key=True),
    Column("installation_account_id", String(40), primary_key=True),
    Column("period", String(20), nullable=False),
    Column("name", String(300), nullable=False, server_default=""),
    Column("delivery_account_id", String(40)),
    Column("report_id", Uuid),  # the attested version counted
    Column("emissions", BigInteger),
    Column("carried_in", BigInteger, nullable=False),
    Column("credited", BigInteger, nullable=False, server_default="0"),  # counted at intermediate evaluations
    Column("obligation", BigInteger, nullable=False),
    Column("counted_allowances", BigInteger, nullable=False),
    Column("counted_offsets", BigInteger, nullable=False),
    Column("shortfall", BigInteger, nullable=False),
    Column("status", String(20), nullable=False),
    Column("reason", String(40)),
    Column("carried_out", BigInteger, nullable=False),
    Column("delivered", BigInteger, nullable=False),
    Column("offsets_over_limit", BigInteger, nullable=False),
    Column("future_vintage", BigInteger, nullable=False),
    Column("over_delivered", BigInteger, nullable=False),
    Column("counted", JSONB, nullable=False),  # [{unit_type, vintage, quantity}] cancelled
    Column("returned", JSONB, nullable=False),  # [{unit_type, vintage, quantity}] back to central
    Column("cancelled_blocks", JSONB, nullable=False, server_default=text("'[]'::jsonb")),  # serials, from the ledger
    Column("returned_blocks", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("refusals", JSONB, nullable=False, server_default=text("'[]'::jsonb")),  # ledger refusals, if any
    Column("lines_pending", Integer, nullable=False),
    CheckConstraint("shortfall >= 0 AND obligation >= 0", name="installation_results_not_negative"),
    Index("ix_installation_results_period", "period", "installation_account_id"),
)

evaluation_batches = Table(
    "evaluation_batches",
    metadata,
    Column("batch_id", Uuid, primary_key=True),
    Column("evaluation_id", Uuid, ForeignKey("evaluations.id"), nullable=False),
    Column("lines", Integer, nullable=False),
    Column("state", String(20), nullable=False),  # sent | answered
    Index("ix_evaluation_batches_evaluation", "evaluation_id", "state"),
)

adjustments = Table(
    "adjustments",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("evaluation_id", Uuid, ForeignKey("evaluations.id"), nullable=False),
    Column("installation_account_id", String(40), nullable=False),
    Column("report_id", Uuid, nullable=False),
    Column("previous", JSONB, nullable=False),  # {emissions, obligation, status, shortfall, carried_out}
    Column("current", JSONB, nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(120), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_adjustments_installation", "installation_account_id", "evaluation_id"),
)

carried_obligations = Table(
    "carried_obligations",
    metadata,
    Column("installation_account_id", String(40), primary_key=True),
    Column("to_period", String(20), primary_key=True),
    Column("from_period", String(20), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("superseded", Boolean, nullable=False, server_default="false"),
    CheckConstraint("quantity >= 0", name="carried_obligations_not_negative"),
)

# Banking and the end of the programme: a published preview, then (after the notice, four eyes) the
# cancellation of exactly its blocks, through move_units_batch.
cancellation_previews = Table(
    "cancellation_previews",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("kind", String(20), nullable=False),  # banking_excess | programme_end
    Column("period", String(20), nullable=False),
    Column("state", String(20), nullable=False),  # published | approval_requested | executing | completed
    Column("share", String(20)),  # the banking share applied (banking_excess)
    Column("blocks", JSONB, nullable=False),  # [{account_id, unit_type, vintage, start, end}]
    Column("total", BigInteger, nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=False),  # programme time
    Column("executable_from", DateTime(timezone=True), nullable=False),  # programme time: the notice ends
    Column("created_by", String(120), nullable=False),
    Column("approval_id", Uuid),
    Column("approved_by", String(120)),
    Column("cancelled", BigInteger, nullable=False, server_default="0"),
    Column("refusals", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("completed_at", DateTime(timezone=True)),
    CheckConstraint("kind IN ('banking_excess', 'programme_end')", name="cancellation_previews_kind"),
    CheckConstraint("state IN ('published', 'approval_requested', 'executing', 'completed')",
                    name="cancellation_previews_state"),
    Index("ix_cancellation_previews_period", "period", "kind"),
)

cancellation_batches = Table(
    "cancellation_batches",
    metadata,
    Column("batch_id", Uuid, primary_key=True),
    Column("preview_id", Uuid, ForeignKey("cancellation_previews.id"), nullable=False),
    Column("lines", Integer, nullable=False),
    Column("state", String(20), nullable=False),  # sent | answered
    Index("ix_cancellation_batches_preview", "preview_id", "state"),
)

# Live status of each installation for the open period, kept current as events arrive.
installation_status = Table(
    "installation_status",
    metadata,
    Column("installation_account_id", String(40), primary_key=True),
    Column("period", String(20), nullable=False),
    Column("status", String(30), nullable=False),  # no_verified_emissions | must_surrender | covered
    Column("to_surrender", BigInteger, nullable=False),
    Column("emissions", BigInteger),
    Column("delivered_eligible", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# What was allocated to each installation per vintage (the ledger's allocation movements, seen in the
# units_moved and units_moved_batch answers compliance reads anyway), for the public summary.
allocations = Table(
    "allocations",
    metadata,
    Column("movement_id", Uuid, primary_key=True),
    Column("installation_account_id", String(40), nullable=False),
    Column("vintage", Integer, primary_key=True),
    Column("quantity", BigInteger, nullable=False),
    Index("ix_allocations_installation", "installation_account_id", "vintage"),
)

publications = Table(
    "publications",
    metadata,
    Column("period", String(20), primary_key=True),
    Column("published_by", String(120), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
