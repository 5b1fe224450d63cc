"""What the accounts service brings to the chassis: users and credentials (identity), account holders,
accounts and representatives, and the unit ledger with its sealed journal."""

from pathlib import Path

from accounts.api_accounts import accounts_router, holders_router
from accounts.api_identity import auth_router, users_router
from accounts.api_ledger import router as ledger_router
from accounts.commands import SUBSCRIPTIONS
from accounts.journal_seal import checkpoint_journal, journal_router, seal_journal
from accounts.settings import AccountsSettings
from accounts.system_accounts import provision_accounts
from accounts.tables import metadata
from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="accounts",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[auth_router, users_router, ledger_router, journal_router, accounts_router, holders_router],
    periodic_tasks=[("journal-sealer", 1.0, seal_journal), ("journal-checkpoint", 5.0, checkpoint_journal)],
    subscriptions=SUBSCRIPTIONS,
    settings_class=AccountsSettings,
    provision_hook=provision_accounts,
)
