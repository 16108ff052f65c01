"""Logging for `switch serve`: a level, and text for a terminal or JSON lines for a collector.

    configure(level="info", log_format="json")

A JSON line holds `ts` (RFC 3339 UTC with microseconds), `level`, `logger`,
`message`, any structured fields a caller passed with `extra={"fields": {...}}`,
and `exception` (the formatted traceback) when there is one.  One line per
record, so a log shipper never has to reassemble a traceback.
"""
from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        timestamp = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        line = {
            "ts": timestamp.isoformat(timespec="microseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            # Structured fields never overwrite the four fixed keys a collector indexes on.
            line.update({key: value for key, value in fields.items() if key not in line})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        # default=str: a field that is not JSON (bytes, an enum) is logged as text, never lost.
        return json.dumps(line, default=str, ensure_ascii=False)


def configure(level: str = "info", log_format: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Replace the root logger's handlers with one that writes `log_format` at `level`."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {LEVELS}, not {level!r}")
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {log_format!r}")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
