"""What the compliance service brings to the chassis: verified emissions, surrender, evaluation, banking.
Its business logic arrives with its issue; today it runs on the chassis alone."""

from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(name="compliance")
