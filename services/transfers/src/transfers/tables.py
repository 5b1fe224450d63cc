"""Transfers' tables: the saga rows and their history, each account's transfer settings, and the account
directory and programme calendar read models kept from events (no service reads another's tables)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY

from registry_common.read_models import AccountDirectory, ProgrammeCalendar

metadata = MetaData()

transfers = Table(
    "transfers",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("sender_account_id", String(40), nullable=False),
    Column("receiver_account_id", String(40), nullable=False),
    Column("unit_type", String(20), nullable=False),
    Column("vintage", Integer),
    Column("quantity", BigInteger, nullable=False),
    Column("state", String(30), nullable=False),
    Column("reason", String(40)),
    Column("failure_code", String(80)),
    Column("requested_by", String(120), nullable=False),
    Column("acceptance_deadline", DateTime(timezone=True)),
    Column("reminders_sent", ARRAY(Integer), nullable=False, server_default=text("'{}'::int[]")),
    Column("requested_at", DateTime(timezone=True), nullable=False),  # programme time
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("version", Integer, nullable=False, server_default="1"),
    CheckConstraint("quantity > 0", name="transfers_quantity_positive"),
    CheckConstraint("sender_account_id <> receiver_account_id", name="transfers_two_accounts"),
    Index("ix_transfers_due", "acceptance_deadline", postgresql_where=text("state = 'awaiting_acceptance'")),
    Index("ix_transfers_sender", "sender_account_id", "created_at"),
    Index("ix_transfers_receiver", "receiver_account_id", "created_at"),
    Index("ix_transfers_open", "state", postgresql_where=text(
        "state NOT IN ('completed', 'reversed', 'failed')")),
)

transfer_history = Table(
    "transfer_history",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("transfer_id", Uuid, nullable=False),
    Column("from_state", String(30)),
    Column("to_state", String(30), nullable=False),
    Column("event", String(60), nullable=False),
    Column("actor", String(120), nullable=False),
    Column("detail", Text),
    Column("at", DateTime(timezone=True), nullable=False),  # programme time
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_transfer_history_transfer", "transfer_id", "id"),
)

directory = AccountDirectory(metadata)  # known_accounts, known_representatives: from accounts' events

# Transfers' own per-account settings (not a read model: no event rebuilds them); no row = the defaults.
account_transfer_settings = Table(
    "account_transfer_settings",
    metadata,
    Column("account_id", String(40), primary_key=True),
    Column("sender_approval_required", Boolean, nullable=False, server_default="false"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

calendar = ProgrammeCalendar(metadata)  # the programme's periods: after the final deadline nothing transfers
