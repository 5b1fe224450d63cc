"""What the accounts service brings to the chassis: users and credentials, account holders, accounts and the unit ledger.
Its business logic arrives with its issue; today it runs on the chassis alone."""

from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(name="accounts")
