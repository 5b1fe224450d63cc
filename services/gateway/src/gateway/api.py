"""`python -m gateway.api`: the gateway process."""

import uvicorn

from gateway.app import create_app
from registry_common.logging import configure_logging
from registry_common.settings import load_settings


def main() -> None:
    settings = load_settings("gateway")
    configure_logging(service="gateway", process="api", level=settings.log_level, json=settings.log_json)
    uvicorn.run(create_app(settings), host=settings.http_host, port=settings.http_port, loop="uvloop",
                log_config=None, access_log=False)


if __name__ == "__main__":
    main()
