"""Structured logging (structlog) for every process, human or JSON output."""

from __future__ import annotations

import logging
import os
import sys

import structlog

_LEVELS = {"crit": "CRITICAL", "warn": "WARNING"}


def configure_logging(level: str = "info", json: bool = False) -> None:
    """Route stdlib and structlog records through one structured renderer on stderr."""
    name = _LEVELS.get(level.lower(), level.upper())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(name)
    # Diagnosis of a running stack without raising every library to debug.
    for logger_name in filter(None, os.environ.get("OMS_DEBUG_LOGGERS", "").split(",")):
        logging.getLogger(logger_name.strip()).setLevel(logging.DEBUG)
