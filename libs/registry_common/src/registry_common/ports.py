"""Where each process listens by default on one machine (``make up``); tests use ephemeral ports."""

from registry_common.settings import SERVICES

GATEWAY_PORT = 8000
API_PORTS: dict[str, int] = {service: 8001 + i for i, service in enumerate(SERVICES)}
WORKER_PORTS: dict[str, int] = {service: 8101 + i for i, service in enumerate(SERVICES)}
