"""What the accounts service brings to the chassis: users and credentials (identity), and later account
holders, accounts and the unit ledger."""

from pathlib import Path

from accounts.api_accounts import accounts_router, holders_router
from accounts.api_identity import auth_router, users_router
from accounts.api_ledger import router as ledger_router
from accounts.commands import SUBSCRIPTIONS
from accounts.settings import AccountsSettings
from accounts.system_accounts import provision_accounts
from accounts.tables import metadata
from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="accounts",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[auth_router, users_router, ledger_router, accounts_router, holders_router],
    subscriptions=SUBSCRIPTIONS,
    settings_class=AccountsSettings,
    provision_hook=provision_accounts,
)
