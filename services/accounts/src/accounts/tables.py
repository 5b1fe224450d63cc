"""Accounts' own tables (the chassis adds outbox, inbox, audit log and the rest)."""

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
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, INT8MULTIRANGE, JSONB

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("email", String(254), nullable=False),
    Column("language", String(2), nullable=False, server_default="es"),
    Column("roles", ARRAY(String(40)), nullable=False),
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("password_hash", String(200), nullable=False),
    Column("failed_sign_ins", Integer, nullable=False, server_default="0"),
    Column("locked_until", DateTime(timezone=True)),
    Column("last_sign_in_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("version", Integer, nullable=False, server_default="1"),
    CheckConstraint("language IN ('es', 'en')", name="users_language"),
    CheckConstraint("cardinality(roles) > 0", name="users_have_a_role"),
    CheckConstraint("failed_sign_ins >= 0", name="users_failed_sign_ins"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("issued_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    Index("ix_refresh_tokens_user", "user_id"),
)


# Account holders and accounts ------------------------------------------------------------------------
account_holders = Table(
    "account_holders",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("name", String(300), nullable=False),
    Column("tax_id", String(20), nullable=False, unique=True),  # RFC
    Column("address", String(500), nullable=False),
    Column("contacts", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),  # readable: CEN-000001, ENT-000001, TRD-000001, SYS-CAP ...
    Column("holder_id", Uuid, ForeignKey("account_holders.id")),  # NULL for system accounts
    Column("kind", String(30), nullable=False),
    Column("name", String(300), nullable=False),
    Column("installation_id", String(40)),  # the central account that pairs a delivery account
    Column("state", String(20), nullable=False),
    Column("state_reason", Text),
    Column("requested_by", String(120)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("version", Integer, nullable=False, server_default="1"),
    CheckConstraint(
        "kind IN ('central', 'delivery', 'trading', 'verifier', 'cap', 'reserve', 'allocation', 'auction', "
        "'cancellation')", name="accounts_kind"),
    CheckConstraint("state IN ('requested', 'active', 'suspended', 'closed', 'rejected')", name="accounts_state"),
    Index("ix_accounts_holder", "holder_id"),
)

representatives = Table(
    "representatives",
    metadata,
    Column("account_id", String(40), ForeignKey("accounts.id"), primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id"), primary_key=True),
    Column("rights", ARRAY(String(20)), nullable=False),
    Column("linked_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("rights <@ ARRAY['initiate', 'approve', 'view']::varchar[] AND cardinality(rights) > 0",
                    name="representatives_rights"),
    Index("ix_representatives_user", "user_id"),
)

# The unit ledger --------------------------------------------------------------------------------------
# A block is a run of consecutive serial numbers of one unit type, vintage and origin, held either by
# an account or by a hold (escrow), never both. Serials are global: no two blocks may overlap.
unit_blocks = Table(
    "unit_blocks",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("account_id", String(40), ForeignKey("accounts.id")),
    Column("hold_id", Uuid, ForeignKey("holds.id")),
    Column("unit_type", String(20), nullable=False),
    Column("vintage", Integer, nullable=False),
    Column("origin", String(80), nullable=False, server_default=""),
    Column("serial_start", BigInteger, nullable=False),
    Column("serial_end", BigInteger, nullable=False),
    CheckConstraint("serial_start >= 1 AND serial_end >= serial_start", name="unit_blocks_not_empty"),
    CheckConstraint("(account_id IS NULL) <> (hold_id IS NULL)", name="unit_blocks_in_one_place"),
    CheckConstraint("unit_type IN ('allowance', 'offset')", name="unit_blocks_unit_type"),
    Index("ix_unit_blocks_account", "account_id", "unit_type", "vintage", "serial_start",
          postgresql_where=text("account_id IS NOT NULL")),
    Index("ix_unit_blocks_hold", "hold_id", postgresql_where=text("hold_id IS NOT NULL")),
)

holds = Table(
    "holds",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("transfer_id", Uuid, nullable=False, unique=True),
    Column("sender_account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("receiver_account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("unit_type", String(20), nullable=False),
    Column("vintage", Integer),
    Column("quantity", BigInteger, nullable=False),
    Column("state", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("closed_at", DateTime(timezone=True)),
    CheckConstraint("quantity > 0", name="holds_quantity_positive"),
    CheckConstraint("state IN ('held', 'settled', 'released')", name="holds_state"),
    # An account's open holds, either side (holdings, closing checks): the table keeps every closed hold.
    Index("ix_holds_open_sender", "sender_account_id", postgresql_where=text("state = 'held'")),
    Index("ix_holds_open_receiver", "receiver_account_id", postgresql_where=text("state = 'held'")),
)

# Every movement, append-only. ``serials`` is the set of serial numbers moved (a range index serves the
# history of one unit). ``at`` is programme time; ``recorded_at`` real time.
journal = Table(
    "journal",
    metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("movement_id", Uuid, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("from_account_id", String(40)),
    Column("to_account_id", String(40)),
    Column("hold_id", Uuid),
    Column("unit_type", String(20), nullable=False),
    Column("vintage", Integer, nullable=False),
    Column("origin", String(80), nullable=False, server_default=""),
    Column("serials", INT8MULTIRANGE, nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("actor", String(120), nullable=False),
    Column("reason", Text),
    Column("correlation_id", String(80)),
    Column("causation_id", String(80)),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("quantity > 0", name="journal_quantity_positive"),
    Index("ix_journal_from", "from_account_id", "id"),
    Index("ix_journal_to", "to_account_id", "id"),
    Index("ix_journal_movement", "movement_id"),
    Index("ix_journal_serials", "serials", postgresql_using="gist"),
)

# Tamper evidence, sealed in commit order off the hot path: seal n = sha256(seal n-1 || journal row n).
journal_seals = Table(
    "journal_seals",
    metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("journal_id", BigInteger, nullable=False, unique=True),
    Column("row_hash", String(64), nullable=False),
    Column("chain_hash", String(64), nullable=False),
    Column("sealed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

ledger_settings = Table(
    "ledger_settings",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("frozen", Boolean, nullable=False, server_default="false"),
    Column("frozen_reason", Text),
    Column("changed_by", String(120)),
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("next_serial", BigInteger, nullable=False, server_default="1"),
    CheckConstraint("id = 1", name="ledger_settings_one_row"),
)
