"""What the transfers service brings to the chassis: the two-sided transfer saga.
Its business logic arrives with its issue; today it runs on the chassis alone."""

from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(name="transfers")
