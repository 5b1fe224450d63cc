"""Where the gateway finds each service's API and worker: ``REGISTRY_GATEWAY_UPSTREAM_<SERVICE>`` and
``REGISTRY_GATEWAY_WORKER_<SERVICE>``, defaulting to the ports of ``make up`` on 127.0.0.1."""

from __future__ import annotations

import os
from dataclasses import dataclass

from registry_common.ports import API_PORTS, WORKER_PORTS
from registry_common.settings import SERVICES


@dataclass(frozen=True)
class Upstream:
    service: str
    api_url: str
    worker_url: str


def upstreams_from_environment(environ: dict[str, str] | None = None) -> list[Upstream]:
    env = dict(os.environ if environ is None else environ)
    return [
        Upstream(
            service=s,
            api_url=env.get(f"REGISTRY_GATEWAY_UPSTREAM_{s.upper()}", f"http://127.0.0.1:{API_PORTS[s]}"),
            worker_url=env.get(f"REGISTRY_GATEWAY_WORKER_{s.upper()}", f"http://127.0.0.1:{WORKER_PORTS[s]}"),
        )
        for s in SERVICES
    ]
