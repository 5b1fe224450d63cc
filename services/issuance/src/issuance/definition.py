"""What the issuance service brings to the chassis: compliance periods, cap and reserves, allocation,
offsets, and the programme clock it owns."""

from issuance.clock_routes import router as clock_router
from registry_common.service import ServiceDefinition

DEFINITION = ServiceDefinition(name="issuance", routers=[clock_router])
