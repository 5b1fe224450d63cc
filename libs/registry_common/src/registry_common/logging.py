"""Structured JSON logs with request and correlation ids, via structlog over the standard library."""

from __future__ import annotations

import logging
import sys

import structlog

from registry_common.context import correlation_id_var, request_id_var


def _add_ids(_logger: object, _name: str, event: dict) -> dict:
    if (request_id := request_id_var.get()) is not None:
        event.setdefault("request_id", request_id)
    if (correlation_id := correlation_id_var.get()) is not None:
        event.setdefault("correlation_id", correlation_id)
    return event


def configure_logging(*, service: str, process: str, level: str = "INFO", json: bool = True) -> None:
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_ids,
        lambda _l, _n, event: {**event, "service": service, "process": process},
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiormq", "aio_pika", "uvicorn.access", "alembic", "httpx", "httpcore"):  # no line per call
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
