"""What the notifications service brings to the chassis: e-mail, signed webhooks and the in-app inbox.
Its business logic arrives with its issue; today it runs on the chassis alone."""

from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(name="notifications")
