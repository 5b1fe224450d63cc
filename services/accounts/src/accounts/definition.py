"""What the accounts service brings to the chassis: users and credentials (identity), and later account
holders, accounts and the unit ledger."""

from pathlib import Path

from accounts.api_identity import auth_router, users_router
from accounts.identity import bootstrap_administrator
from accounts.settings import AccountsSettings
from accounts.tables import metadata
from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(
    name="accounts",
    metadata=metadata,
    migrations_dir=Path(__file__).parent / "migrations",
    routers=[auth_router, users_router],
    settings_class=AccountsSettings,
    provision_hook=bootstrap_administrator,
)
