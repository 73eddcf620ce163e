"""Logging setup: text (default) or one JSON object per line (IOU_LOG_FORMAT=json).

Each line about a request names it: the request id and the agent live in context variables
(set by gateway.api.request_id for the task that serves the request), and a filter copies
them onto every record, so any logger called while serving the request carries them.
"""

from __future__ import annotations

import datetime
import logging
import logging.config
import traceback
from contextvars import ContextVar
from typing import Any

import orjson

LOG_FORMATS = ("text", "json")
REQUEST_ID: ContextVar[str | None] = ContextVar("iou_request_id", default=None)
AGENT: ContextVar[str | None] = ContextVar("iou_agent", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s%(context)s"


class ContextFilter(logging.Filter):
    """Adds ``request_id`` and ``agent`` (from the context, unless the call passed them) and
    ``context`` (the two as ``key=value`` text for the text format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        if getattr(record, "agent", None) is None:
            record.agent = AGENT.get()
        parts = [f"{name}={value}" for name in ("request_id", "agent", "error")
                 if (value := getattr(record, name, None)) is not None]
        record.context = (" " + " ".join(parts)) if parts else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, and request_id, agent, error
    when they apply (error: the contract's code of a refusal, or the exception's text)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _iso(record.created), "level": record.levelname, "logger": record.name,
            "message": record.getMessage()}
        for name in ("request_id", "agent", "error"):
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line.setdefault("error", _exception_name(record.exc_info))
            line["traceback"] = "".join(traceback.format_exception(*record.exc_info))
        return orjson.dumps(line, default=str).decode()


def _iso(created_s: float) -> str:
    moment = datetime.datetime.fromtimestamp(created_s, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _exception_name(exc_info: Any) -> str:
    exc = exc_info[1]
    return f"{type(exc).__name__}: {exc}" if exc is not None else "exception"


def logging_config(log_format: str = "text", level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dict: one stderr handler of the format on the root
    logger, uvicorn's loggers propagating to it. uvicorn applies it in every worker process
    it spawns (``uvicorn.run(log_config=...)``), so all workers log the same way."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    formatter: dict[str, Any] = ({"()": JsonFormatter} if log_format == "json"
                                 else {"format": TEXT_FORMAT})
    uvicorn_loggers = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"iou": formatter},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr",
                                "formatter": "iou", "filters": ["context"]}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {name: {"handlers": [], "propagate": True} for name in uvicorn_loggers},
    }


def setup_logging(log_format: str = "text", level: str = "INFO") -> None:
    """Configure this process's logging (replaces what was configured before)."""
    logging.config.dictConfig(logging_config(log_format, level))
