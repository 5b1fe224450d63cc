"""Issuance's tables: periods, cap generations, issuance requests sent to the ledger, allocation tables
and their lines, offset projects and credit issuances, and read models learnt from accounts' events."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()


def _ts(name: str, nullable: bool = True, **kw: object) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable, **kw)


periods = Table(
    "periods", metadata,
    Column("code", String(20), primary_key=True),
    Column("vintage", Integer, nullable=False, unique=True),
    _ts("starts_at", False), _ts("ends_at", False), _ts("allocation_at", False),
    _ts("reporting_opens_at", False), _ts("reporting_closes_at", False), _ts("surrender_deadline_at", False),
    Column("final", Boolean, nullable=False, server_default="false"),
    Column("timezone", String(64), nullable=False),
    Column("local_dates", JSONB, nullable=False),
    Column("created_by", String(120), nullable=False),
    _ts("created_programme_at", False),
    _ts("created_at", False, server_default=func.now()),
)

cap_generations = Table(
    "cap_generations", metadata,
    Column("id", Uuid, primary_key=True),
    Column("period_code", String(20), ForeignKey("periods.code"), nullable=False),
    Column("kind", String(20), nullable=False),  # initial | adjustment
    Column("cap", BigInteger, nullable=False),
    Column("reserves", JSONB, nullable=False),  # {name: quantity}
    Column("reason", Text),
    Column("state", String(20), nullable=False),  # awaiting_approval | issuing | generated | failed
    Column("approval_id", Uuid),
    Column("requested_by", String(120), nullable=False),
    Column("approved_by", String(120)),
    _ts("created_at", False, server_default=func.now()),
    _ts("completed_at"),
    Index("uq_cap_generation_initial", "period_code", unique=True,
          postgresql_where=text("kind = 'initial' AND state IN ('issuing', 'generated')")),
)

issuance_requests = Table(
    "issuance_requests", metadata,
    Column("request_id", Uuid, primary_key=True),  # the ledger's request id: never issues twice
    Column("purpose", String(20), nullable=False),  # cap | offset
    Column("parent_id", Uuid, nullable=False),  # cap_generations.id or offset_issuances.id
    Column("to_account_id", String(40), nullable=False),
    Column("unit_type", String(20), nullable=False),
    Column("vintage", Integer, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("state", String(20), nullable=False),  # sent | issued | refused
    Column("serial_start", BigInteger), Column("serial_end", BigInteger),
    Column("code", String(80)),
    _ts("updated_at", False, server_default=func.now()),
    Index("ix_issuance_requests_parent", "parent_id"),
)

allocation_tables = Table(
    "allocation_tables", metadata,
    Column("id", Uuid, primary_key=True),
    Column("method", String(20), nullable=False),  # table | proportional
    Column("period_code", String(20), ForeignKey("periods.code")),
    Column("filename", String(255)),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    # invalid | validated | awaiting_approval | approved | running | completed | completed_with_refusals
    Column("state", String(30), nullable=False),
    Column("report", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("line_count", Integer, nullable=False, server_default="0"),
    Column("total", BigInteger, nullable=False, server_default="0"),
    Column("budget", BigInteger), Column("national_hundredths", BigInteger),
    Column("eligible_hundredths", BigInteger), Column("remainder", BigInteger),
    Column("source_account_id", String(40), nullable=False),
    Column("approval_id", Uuid),
    Column("uploaded_by", String(120), nullable=False),
    _ts("uploaded_at", False, server_default=func.now()),
    Column("approved_by", String(120)), _ts("approved_at"),
    Column("run_trigger", String(160)), _ts("run_started_at"), _ts("completed_at"),
    Index("ix_allocation_tables_state", "state"),
)

allocation_lines = Table(
    "allocation_lines", metadata,
    Column("table_id", Uuid, ForeignKey("allocation_tables.id"), nullable=False),
    Column("account_id", String(40), nullable=False),
    Column("sheet", String(100), nullable=False),
    Column("row_number", Integer, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("consumption_hundredths", BigInteger),
    Column("eligible", Boolean),
    Column("reason", Text),
    Column("state", String(20), nullable=False),  # planned | withheld | nothing_due | sent | delivered | refused
    Column("movement_id", Uuid, nullable=False, unique=True),
    Column("batch_id", Uuid),
    Column("code", String(80)),
    Column("withheld_by", String(120)), Column("withheld_reason", Text),
    _ts("delivered_at"),
    PrimaryKeyConstraint("table_id", "account_id"),
    Index("ix_allocation_lines_state", "table_id", "state"),
)

offset_projects = Table(
    "offset_projects", metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(300), nullable=False),
    Column("protocol", String(200), nullable=False),
    Column("place", String(300), nullable=False),
    Column("developer_account_id", String(40), nullable=False),
    Column("state", String(20), nullable=False, server_default="registered"),
    Column("created_by", String(120), nullable=False),
    _ts("created_at", False, server_default=func.now()),
)

offset_issuances = Table(
    "offset_issuances", metadata,
    Column("id", Uuid, primary_key=True),
    Column("project_id", String(40), ForeignKey("offset_projects.id"), nullable=False),
    Column("vintage", Integer, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("verification_reference", String(200), nullable=False),
    Column("to_account_id", String(40), nullable=False),
    Column("state", String(20), nullable=False),  # awaiting_approval | issuing | issued | refused
    Column("approval_id", Uuid),
    Column("request_id", Uuid, nullable=False, unique=True),
    Column("requested_by", String(120), nullable=False),
    Column("approved_by", String(120)),
    Column("serial_start", BigInteger), Column("serial_end", BigInteger), Column("code", String(80)),
    _ts("created_at", False, server_default=func.now()),
)

known_accounts = Table(
    "known_accounts", metadata,  # read model from accounts.account_* events
    Column("id", String(40), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("state", String(20), nullable=False),
    Column("name", String(300)),
    Column("installation_id", String(40)),
    _ts("updated_at", False, server_default=func.now()),
)

system_holdings = Table(
    # read model: units into (+) and out of (-) system accounts (SYS-*) by vintage, from the ledger's events;
    # one row per change, never updated, so concurrent events never wait on one hot row
    "system_holdings", metadata,
    Column("id", BigInteger, Identity(always=False), primary_key=True),
    Column("account_id", String(40), nullable=False),
    Column("unit_type", String(20), nullable=False),
    Column("vintage", Integer, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Index("ix_system_holdings_account", "account_id", "unit_type", "vintage"),
)
